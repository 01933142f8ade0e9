"""The other systems' resources: KubeVirt, CDI and Multus.

Declared once, here, because two parts of Wukong address them: the operator,
which drives these APIs, and the dev simulator, which plays the systems that
serve them. Nothing here depends on those projects' Python clients; a
resource is its group, version and plural, like any other.
"""

from wukong.runtime.resources import Resource

NETWORK_ATTACHMENT_DEFINITIONS = Resource(
    group="k8s.cni.cncf.io",
    version="v1",
    plural="network-attachment-definitions",
    kind="NetworkAttachmentDefinition",
)
DATA_VOLUMES = Resource(
    group="cdi.kubevirt.io", version="v1beta1", plural="datavolumes", kind="DataVolume"
)
VIRTUAL_MACHINES = Resource(
    group="kubevirt.io", version="v1", plural="virtualmachines", kind="VirtualMachine"
)
VIRTUAL_MACHINE_INSTANCES = Resource(
    group="kubevirt.io",
    version="v1",
    plural="virtualmachineinstances",
    kind="VirtualMachineInstance",
)
VIRTUAL_MACHINE_INSTANCE_MIGRATIONS = Resource(
    group="kubevirt.io",
    version="v1",
    plural="virtualmachineinstancemigrations",
    kind="VirtualMachineInstanceMigration",
)
