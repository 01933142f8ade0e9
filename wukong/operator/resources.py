"""The other systems' resources the Wukong controller reads and writes.

KubeVirt, CDI and Multus are addressed by group/version/plural like any other
resource; nothing here depends on their Python clients.
"""

from wukong.runtime.resources import Resource

PERSISTENT_VOLUME_CLAIMS = Resource(
    group="", version="v1", plural="persistentvolumeclaims", kind="PersistentVolumeClaim"
)
STORAGE_CLASSES = Resource(
    group="storage.k8s.io",
    version="v1",
    plural="storageclasses",
    kind="StorageClass",
    namespaced=False,
)
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
