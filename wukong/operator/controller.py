"""Wiring the Wukong reconciler into a manager: what it watches and owns.

Owned kinds (NetworkAttachmentDefinitions, claims, DataVolumes,
VirtualMachines) carry the Wukong as controller owner, so any change to them
requeues their Wukong. VirtualMachineInstances are owned by their VM, not by
the Wukong, so they are mapped back through the label the VM template puts on
them. StorageClasses are only read.
"""

from wukong.operator.api import WUKONG_LABEL, WUKONGS
from wukong.operator.reconciler import Caches, WukongReconciler
from wukong.runtime.apis import (
    DATA_VOLUMES,
    NETWORK_ATTACHMENT_DEFINITIONS,
    VIRTUAL_MACHINE_INSTANCES,
    VIRTUAL_MACHINES,
)
from wukong.runtime.client import Object
from wukong.runtime.context import Request
from wukong.runtime.controller import Controller, ControllerOptions, Watch
from wukong.runtime.events import EventRecorder
from wukong.runtime.manager import Manager
from wukong.runtime.resources import PERSISTENT_VOLUME_CLAIMS, STORAGE_CLASSES

CONTROLLER_NAME = "wukong"
EVENT_COMPONENT = "wukong-operator"


def _wukong_of_instance(vmi: Object) -> list[Request]:
    name = (vmi["metadata"].get("labels") or {}).get(WUKONG_LABEL)
    return [Request(vmi["metadata"]["namespace"], name)] if name else []


def add_wukong_controller(
    manager: Manager, *, max_concurrent_reconciles: int = 4, reconcile_timeout: float | None = None
) -> Controller:
    """Register the Wukong controller with `manager` (before `manager.run()`)."""
    caches = Caches(
        wukongs=manager.informer(WUKONGS).store,
        network_attachment_definitions=manager.informer(NETWORK_ATTACHMENT_DEFINITIONS).store,
        claims=manager.informer(PERSISTENT_VOLUME_CLAIMS).store,
        data_volumes=manager.informer(DATA_VOLUMES).store,
        storage_classes=manager.informer(STORAGE_CLASSES).store,
        virtual_machines=manager.informer(VIRTUAL_MACHINES).store,
        virtual_machine_instances=manager.informer(VIRTUAL_MACHINE_INSTANCES).store,
    )
    controller = Controller(
        name=CONTROLLER_NAME,
        reconciler=WukongReconciler(
            caches=caches, recorder=EventRecorder(component=EVENT_COMPONENT)
        ),
        primary=WUKONGS,
        owns=[
            NETWORK_ATTACHMENT_DEFINITIONS,
            PERSISTENT_VOLUME_CLAIMS,
            DATA_VOLUMES,
            VIRTUAL_MACHINES,
        ],
        watches=[Watch(VIRTUAL_MACHINE_INSTANCES, _wukong_of_instance)],
        options=ControllerOptions(
            max_concurrent_reconciles=max_concurrent_reconciles,
            reconcile_timeout=reconcile_timeout,
        ),
    )
    manager.add(controller)
    return controller
