"""How events on a member or its migration find their WukongSet (no periodic requeue)."""

from wukong.operator.wukongset import MEMBERS_BY_SET, set_of_migration, set_uid_key
from wukong.runtime import Object, Request, Store


def _wukong(name: str, *, owner: dict[str, object] | None = None) -> Object:
    metadata: dict[str, object] = {"name": name, "namespace": "shop", "uid": f"uid-{name}"}
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    return {"apiVersion": "vm.novasphere.dev/v1alpha1", "kind": "Wukong", "metadata": metadata}


def _set_owner(name: str, *, controller: bool = True, kind: str = "WukongSet") -> dict[str, object]:
    return {
        "apiVersion": "vm.novasphere.dev/v1alpha1",
        "kind": kind,
        "name": name,
        "uid": f"set-{name}",
        "controller": controller,
    }


def _migration(vmi: str) -> Object:
    return {"metadata": {"name": f"{vmi}-mig", "namespace": "shop"}, "spec": {"vmiName": vmi}}


def _store(*objects: Object) -> Store:
    store = Store()
    store.add_index(MEMBERS_BY_SET, set_uid_key)
    for obj in objects:
        store.upsert(obj)
    return store


def test_members_are_indexed_by_the_set_that_controls_them() -> None:
    store = _store(
        _wukong("web-0", owner=_set_owner("web")),
        _wukong("web-1", owner=_set_owner("web")),
        _wukong("loose"),
        _wukong("borrowed", owner=_set_owner("web", controller=False)),
        _wukong("other-kind", owner=_set_owner("web", kind="ReplicaSet")),
    )
    members = store.by_index(MEMBERS_BY_SET, "set-web")
    assert [m["metadata"]["name"] for m in members] == ["web-0", "web-1"]


def test_a_migration_maps_to_the_set_of_the_member_it_moves() -> None:
    requests = set_of_migration(_store(_wukong("web-3", owner=_set_owner("web")), _wukong("solo")))
    assert requests(_migration("web-3")) == [Request("shop", "web")]
    assert requests(_migration("solo")) == []  # a Wukong of no set
    assert requests(_migration("gone")) == []  # no such Wukong (any more)
    assert requests({"metadata": {"name": "m", "namespace": "shop"}, "spec": {}}) == []
