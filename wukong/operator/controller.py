"""Wiring the Wukong reconciler into a manager: what it watches, and how back to a Wukong.

Every watched kind maps back to its Wukongs through an owner reference or a
field index on the Wukong cache, never through labels alone (a watch gap: an
event on an object whose label is missing or was edited reaches no Wukong):

| kind                              | mapped back through                           |
| --------------------------------- | --------------------------------------------- |
| NetworkAttachmentDefinition       | controller owner; `spec.networks[].nadName`   |
| PersistentVolumeClaim, DataVolume | controller owner                              |
| VirtualMachine                    | controller owner                              |
| VirtualMachineInstance            | its VirtualMachine (controller owner, same name) |
| VirtualMachineInstanceMigration   | `spec.vmiName` (the VMI, named as the Wukong) |
| StorageClass                      | `spec.disks[].storageClassName` ("" = default) |

So deleting a NetworkAttachmentDefinition a Wukong only references, or a
StorageClass starting to allow expansion, reconciles exactly the Wukongs that
use it.

Every kind but StorageClass is namespaced, so with `--namespace` the informers
list and watch that namespace only; StorageClasses are the one cluster-wide
read (read-only, see `rbac.CLUSTER_READ_RULES`), next to the manager's watch
of the Namespace itself by name.
"""

from wukong.operator.api import WUKONGS
from wukong.operator.finalizer import OWNED_BY, owner_uid_key
from wukong.operator.reconciler import (
    MIGRATIONS_BY_VMI,
    Caches,
    WukongReconciler,
    migration_vmi_key,
)
from wukong.operator.storage import is_default_class, storage_class_key
from wukong.operator.views import parse_wukong
from wukong.runtime import (
    Controller,
    ControllerOptions,
    EventRecorder,
    Manager,
    MapFunc,
    Object,
    Request,
    Store,
    Watch,
)
from wukong.runtime.apis import (
    DATA_VOLUMES,
    NETWORK_ATTACHMENT_DEFINITIONS,
    VIRTUAL_MACHINE_INSTANCE_MIGRATIONS,
    VIRTUAL_MACHINE_INSTANCES,
    VIRTUAL_MACHINES,
)
from wukong.runtime.resources import PERSISTENT_VOLUME_CLAIMS, STORAGE_CLASSES

CONTROLLER_NAME = "wukong"
EVENT_COMPONENT = "wukong-operator"

# Field indexes on the Wukong cache.
BY_NAD_NAME = "spec.networks.nadName"  # "namespace/nadName"
BY_STORAGE_CLASS = "spec.disks.storageClassName"  # class name, "" for the default


def _referenced_nads(wukong: Object) -> list[str]:
    view = parse_wukong(wukong)
    return [f"{view.namespace}/{n.nad_name}" for n in view.spec.networks if n.nad_name]


def _storage_classes(wukong: Object) -> list[str]:
    disks = parse_wukong(wukong).spec.disks
    return sorted({storage_class_key(d.storage_class_name) for d in disks})


def _requests(wukongs: list[Object]) -> list[Request]:
    return [Request(w["metadata"]["namespace"], w["metadata"]["name"]) for w in wukongs]


def _wukongs_referencing_nad(wukongs: Store) -> MapFunc:
    def requests(nad: Object) -> list[Request]:
        key = f"{nad['metadata']['namespace']}/{nad['metadata']['name']}"
        return _requests(wukongs.by_index(BY_NAD_NAME, key))

    return requests


def _wukongs_using_class(wukongs: Store) -> MapFunc:
    def requests(storage_class: Object) -> list[Request]:
        found = wukongs.by_index(BY_STORAGE_CLASS, storage_class["metadata"]["name"])
        if is_default_class(storage_class):
            found += wukongs.by_index(BY_STORAGE_CLASS, storage_class_key(None))
        return _requests(found)

    return requests


def _wukong_of_instance(vmi: Object) -> list[Request]:
    # The VMI's controller is the VirtualMachine, which has the Wukong's name.
    return [
        Request(vmi["metadata"]["namespace"], ref["name"])
        for ref in vmi["metadata"].get("ownerReferences") or []
        if ref.get("controller") and ref.get("kind") == VIRTUAL_MACHINES.kind
    ]


def _wukong_of_migration(migration: Object) -> list[Request]:
    name = (migration.get("spec") or {}).get("vmiName")
    return [Request(migration["metadata"]["namespace"], name)] if name else []


DEFAULT_OPTIONS = ControllerOptions(max_concurrent_reconciles=4)


def add_wukong_controller(
    manager: Manager, *, options: ControllerOptions = DEFAULT_OPTIONS
) -> Controller:
    """Register the Wukong controller with `manager` (`wukong run`'s flags set `options`)."""
    wukongs = manager.informer(WUKONGS).store
    wukongs.add_index(BY_NAD_NAME, _referenced_nads)
    wukongs.add_index(BY_STORAGE_CLASS, _storage_classes)
    migrations = manager.informer(VIRTUAL_MACHINE_INSTANCE_MIGRATIONS).store
    migrations.add_index(MIGRATIONS_BY_VMI, migration_vmi_key)
    found_by_owner = [
        manager.informer(resource).store
        for resource in (NETWORK_ATTACHMENT_DEFINITIONS, PERSISTENT_VOLUME_CLAIMS, DATA_VOLUMES)
    ]
    for store in found_by_owner:
        store.add_index(OWNED_BY, owner_uid_key)
    nads, claims, data_volumes = found_by_owner
    caches = Caches(
        wukongs=wukongs,
        network_attachment_definitions=nads,
        claims=claims,
        data_volumes=data_volumes,
        storage_classes=manager.informer(STORAGE_CLASSES).store,
        virtual_machines=manager.informer(VIRTUAL_MACHINES).store,
        virtual_machine_instances=manager.informer(VIRTUAL_MACHINE_INSTANCES).store,
        virtual_machine_instance_migrations=migrations,
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
        watches=[
            Watch(NETWORK_ATTACHMENT_DEFINITIONS, _wukongs_referencing_nad(wukongs)),
            Watch(STORAGE_CLASSES, _wukongs_using_class(wukongs)),
            Watch(VIRTUAL_MACHINE_INSTANCES, _wukong_of_instance),
            Watch(VIRTUAL_MACHINE_INSTANCE_MIGRATIONS, _wukong_of_migration),
        ],
        options=options,
    )
    manager.add(controller)
    return controller
