"""Simulated infrastructure for the dev cluster: KubeVirt, CDI, Multus and storage.

The Wukong operator drives other systems' APIs (KubeVirt VirtualMachines, CDI
DataVolumes, Multus NetworkAttachmentDefinitions, PersistentVolumeClaims). The
dev cluster has none of them, so this package installs their CRDs and two
StorageClasses (`crds`) and runs small controllers that play their parts
(`storage`, `cdi`, `kubevirt`, `migration`) with configurable delays and failures
(`timing`). They are test doubles for *other* systems, written on Wukong's own
runtime; the API server they talk to is the real one.

    await install_infrastructure(client)
    manager = simulator_manager(client=client, config=SimulationConfig(...))
    await manager.run()   # until manager.stop()
"""

from collections.abc import Callable
from pathlib import Path

from wukong.devcluster.simulator.cdi import DataVolumeImporter
from wukong.devcluster.simulator.crds import (
    IMMEDIATE_CLASS,
    WAIT_FOR_FIRST_CONSUMER_CLASS,
    install_infrastructure,
)
from wukong.devcluster.simulator.kubevirt import VirtualMachineController
from wukong.devcluster.simulator.migration import MigrationController
from wukong.devcluster.simulator.storage import VolumeBinder, claim_names, claims_of_vmi
from wukong.devcluster.simulator.timing import SimulationConfig
from wukong.runtime import (
    Client,
    Controller,
    ControllerOptions,
    Informer,
    Manager,
    ManagerOptions,
    Object,
    Request,
    Watch,
)
from wukong.runtime.apis import (
    DATA_VOLUMES,
    VIRTUAL_MACHINE_INSTANCE_MIGRATIONS,
    VIRTUAL_MACHINE_INSTANCES,
    VIRTUAL_MACHINES,
)
from wukong.runtime.resources import NODES, PERSISTENT_VOLUME_CLAIMS, STORAGE_CLASSES

__all__ = [
    "IMMEDIATE_CLASS",
    "WAIT_FOR_FIRST_CONSUMER_CLASS",
    "SimulationConfig",
    "install_infrastructure",
    "run_simulator",
    "simulator_manager",
]

_OPTIONS = ControllerOptions(max_concurrent_reconciles=4, reconcile_timeout=10.0)


def simulator_manager(*, client: Client, config: SimulationConfig) -> Manager:
    """A manager running the simulated binder, CDI and KubeVirt in every namespace."""
    manager = Manager(client=client, options=ManagerOptions(block_warning_seconds=None))
    claims = manager.informer(PERSISTENT_VOLUME_CLAIMS)
    classes = manager.informer(STORAGE_CLASSES)
    vmis = manager.informer(VIRTUAL_MACHINE_INSTANCES)
    data_volumes = manager.informer(DATA_VOLUMES)
    vms = manager.informer(VIRTUAL_MACHINES)
    nodes = manager.informer(NODES)
    manager.add(
        Controller(
            name="sim-volume-binder",
            reconciler=VolumeBinder(
                config=config, claims=claims, storage_classes=classes, vmis=vmis
            ),
            primary=PERSISTENT_VOLUME_CLAIMS,
            watches=[Watch(VIRTUAL_MACHINE_INSTANCES, claims_of_vmi)],
            options=_OPTIONS,
        )
    )
    manager.add(
        Controller(
            name="sim-cdi",
            reconciler=DataVolumeImporter(
                config=config,
                data_volumes=data_volumes,
                claims=claims,
                storage_classes=classes,
                vmis=vmis,
            ),
            primary=DATA_VOLUMES,
            owns=[PERSISTENT_VOLUME_CLAIMS],
            # A launcher pod (the VMI scheduling) is the consumer that starts an import.
            watches=[Watch(VIRTUAL_MACHINE_INSTANCES, claims_of_vmi)],
            options=_OPTIONS,
        )
    )
    manager.add(
        Controller(
            name="sim-kubevirt",
            reconciler=VirtualMachineController(
                config=config,
                vms=vms,
                vmis=vmis,
                claims=claims,
                data_volumes=data_volumes,
                nodes=nodes,
            ),
            primary=VIRTUAL_MACHINES,
            owns=[VIRTUAL_MACHINE_INSTANCES],
            # A claim bound or an import finished can let a waiting VM or VMI go on;
            # a node going unreachable (or coming back) changes its VMIs' phase.
            watches=[
                Watch(PERSISTENT_VOLUME_CLAIMS, _vms_using(vms)),
                Watch(DATA_VOLUMES, _vms_using(vms)),
                Watch(NODES, _vms_on_node(vmis)),
            ],
            options=_OPTIONS,
        )
    )
    manager.add(
        Controller(
            name="sim-migration",
            reconciler=MigrationController(
                config=config,
                migrations=manager.informer(VIRTUAL_MACHINE_INSTANCE_MIGRATIONS),
                vmis=vmis,
            ),
            primary=VIRTUAL_MACHINE_INSTANCE_MIGRATIONS,
            options=_OPTIONS,
        )
    )
    return manager


async def run_simulator(kubeconfig: Path, config: SimulationConfig) -> None:
    """Run the simulated systems until SIGINT/SIGTERM."""
    async with await Client.from_kubeconfig(kubeconfig) as client:
        manager = simulator_manager(client=client, config=config)
        manager.handle_signals()
        await manager.run()


def _vms_using(vms: Informer) -> Callable[[Object], list[Request]]:
    def requests(volume: Object) -> list[Request]:
        namespace, name = volume["metadata"]["namespace"], volume["metadata"]["name"]
        return [
            Request(namespace, vm["metadata"]["name"])
            for vm in vms.store.list_objects(namespace=namespace)
            if name in claim_names((vm.get("spec") or {}).get("template") or {})
        ]

    return requests


def _vms_on_node(vmis: Informer) -> Callable[[Object], list[Request]]:
    def requests(node: Object) -> list[Request]:
        return [
            Request(vmi["metadata"]["namespace"], vmi["metadata"]["name"])
            for vmi in vmis.store.list_objects()
            if (vmi.get("status") or {}).get("nodeName") == node["metadata"]["name"]
        ]

    return requests
