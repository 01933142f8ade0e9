"""Everything `wukong dev up` installs: the Wukong CRD and the simulated systems' APIs.

It lives beside, not inside, the simulator: the simulator plays KubeVirt, CDI
and storage and knows nothing of the operator; this is where the two meet.
"""

from wukong.devcluster.crds import install_crds
from wukong.devcluster.simulator import install_infrastructure
from wukong.operator.crd import wukong_crd
from wukong.runtime import Client


async def install_dev_apis(client: Client) -> None:
    """The Wukong CRD plus the simulated systems' CRDs and StorageClasses."""
    await install_crds(client, [wukong_crd()])
    await install_infrastructure(client)
