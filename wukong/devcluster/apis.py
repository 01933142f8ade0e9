"""Everything `wukong dev up` installs: the operator's CRDs and the simulated systems' APIs.

It lives beside, not inside, the simulator: the simulator plays KubeVirt, CDI
and storage and knows nothing of the operator; this is where the two meet.
"""

from wukong.devcluster.crds import install_crds
from wukong.devcluster.simulator import install_infrastructure
from wukong.operator.crd import operator_crds
from wukong.runtime import Client


async def install_dev_apis(client: Client) -> None:
    """The operator's CRDs plus the simulated systems' CRDs and StorageClasses."""
    await install_crds(client, operator_crds())
    await install_infrastructure(client)
