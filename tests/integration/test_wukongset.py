"""WukongSet against the real API server and the simulator: scale-out, a scale-in that
waits for live migrations, `kubectl scale`, deletion, and what admission refuses."""

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import RecordingObserver
from tests.integration.test_wukong_rbac_rules import _granted, _used
from tests.integration.wukong_harness import WATCH_EVENT, StartWukong, condition, started_by
from tests.polling import eventually
from wukong.devcluster import ControlPlane
from wukong.devcluster.simulator import SimulationConfig
from wukong.operator.api import WUKONGS
from wukong.operator.rbac import WUKONGSET_RULES
from wukong.operator.wukongset import add_wukongset_controller
from wukong.operator.wukongset_api import SET_FINALIZER, WUKONGSET_LABEL, WUKONGSETS
from wukong.operator.wukongset_rollout import TEMPLATE_HASH_LABEL
from wukong.runtime import Client, Invalid, Manager, ManagerOptions, NotFound, Object
from wukong.runtime.apis import VIRTUAL_MACHINE_INSTANCE_MIGRATIONS
from wukong.runtime.observe import RuntimeObserver
from wukong.runtime.resources import EVENTS

LABELS = {"app": "web"}


def set_manager(
    client: Client, namespace: str, observer: RuntimeObserver, **controller: Any
) -> Manager:
    """The WukongSet controller in a manager of its own (the harness runs the Wukong one)."""
    manager = Manager(
        client=client,
        observers=[observer],
        options=ManagerOptions(namespace=namespace, shutdown_grace=5.0),
    )
    add_wukongset_controller(manager, **controller)
    return manager


@pytest.fixture
async def set_operator(client: Client, namespace: str) -> AsyncIterator[RecordingObserver]:
    """The WukongSet controller running, what it does recorded."""
    recorder = RecordingObserver()
    manager = set_manager(client, namespace, recorder)
    task = asyncio.create_task(manager.run())
    yield recorder
    manager.stop()
    await asyncio.wait_for(task, timeout=30)


def _set(namespace: str, name: str, replicas: int, **spec: Any) -> Object:
    return {
        "apiVersion": WUKONGSETS.api_version,
        "kind": WUKONGSETS.kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": LABELS},
            "template": {
                "metadata": {"labels": {**LABELS, "tier": "front"}},
                "spec": {"disks": [{"name": "root", "size": "1Gi"}]},
            },
            **spec,
        },
    }


async def _members(client: Client, namespace: str, name: str) -> dict[str, Object]:
    listed = await client.list(
        WUKONGS, namespace=namespace, label_selector=f"{WUKONGSET_LABEL}={name}"
    )
    return {w["metadata"]["name"]: w for w in listed["items"]}


async def _live_members(client: Client, namespace: str, name: str) -> set[str]:
    members = await _members(client, namespace, name)
    return {n for n, w in members.items() if not w["metadata"].get("deletionTimestamp")}


async def _wait_set(
    client: Client,
    namespace: str,
    name: str,
    check: Callable[[Object], bool],
    *,
    what: str,
    timeout: float = 60.0,
) -> Object:
    latest: dict[str, Object] = {}

    async def done() -> bool:
        latest["set"] = await client.get(WUKONGSETS, name, namespace=namespace)
        return check(latest["set"])

    try:
        await eventually(done, timeout=timeout, interval=0.1, what=what)
    except AssertionError as error:
        raise AssertionError(
            f"{error}; last status: {latest.get('set', {}).get('status')}"
        ) from None
    return latest["set"]


def _status(obj: Object, field: str) -> Any:
    return (obj.get("status") or {}).get(field)


async def _events(client: Client, namespace: str, name: str) -> list[Object]:
    listed = await client.list(
        EVENTS, namespace=namespace, field_selector=f"involvedObject.name={name}"
    )
    return list(listed["items"])


async def _migrate(client: Client, namespace: str, member: str) -> None:
    await client.create(
        VIRTUAL_MACHINE_INSTANCE_MIGRATIONS,
        {
            "apiVersion": VIRTUAL_MACHINE_INSTANCE_MIGRATIONS.api_version,
            "kind": VIRTUAL_MACHINE_INSTANCE_MIGRATIONS.kind,
            "metadata": {"name": f"{member}-migration", "namespace": namespace},
            "spec": {"vmiName": member},
        },
    )


def _phase(obj: Object) -> str | None:
    return _status(obj, "phase")


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60.0) -> None:
    await eventually(check, timeout=timeout, interval=0.1, what=what)


async def test_scale_in_never_removes_a_migrating_member_and_finishes_when_migrations_end(
    client: Client,
    namespace: str,
    start_wukong: StartWukong,
    set_operator: RecordingObserver,
) -> None:
    run = await start_wukong(simulation=SimulationConfig(migration_delay=10.0))
    await client.create(WUKONGSETS, _set(namespace, "web", 5))
    ready = await _wait_set(
        client, namespace, "web", lambda s: _status(s, "readyReplicas") == 5, what="5 ready"
    )
    assert condition(ready, "Ready")["status"] == "True"
    members = await _members(client, namespace, "web")
    assert sorted(members) == [f"web-{i}" for i in range(5)]
    for member in members.values():
        assert member["metadata"]["labels"] == {
            **LABELS,
            "tier": "front",
            WUKONGSET_LABEL: "web",
            TEMPLATE_HASH_LABEL: _status(ready, "templateHash"),
        }
        (owner,) = member["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["controller"]) == ("WukongSet", "web", True)

    # The two newest, which newest-first would otherwise remove, start migrating.
    for member in ("web-3", "web-4"):
        await _migrate(client, namespace, member)
    for member in ("web-3", "web-4"):
        await run.wait_for(member, lambda o: _phase(o) == "Migrating", what=f"{member} Migrating")

    # 5 -> 2: the three others go, both migrating members stay.
    await client.patch(WUKONGSETS, "web", {"spec": {"replicas": 2}}, namespace=namespace)
    scaled = await _wait_set(
        client, namespace, "web", lambda s: _status(s, "replicas") == 2, what="2 members"
    )
    assert await _live_members(client, namespace, "web") == {"web-3", "web-4"}
    assert condition(scaled, "ScalingBlocked")["status"] == "False"
    assert _status(scaled, "migratingReplicas") == 2
    scaled_in = [e for e in await _events(client, namespace, "web") if e["reason"] == "ScaledIn"]
    assert len(scaled_in) == 1, scaled_in
    message = scaled_in[0]["message"]
    assert "removing web-2" in message and "web-1" in message and "web-0" in message
    assert "skipped, migrating: web-3" in message and "web-4" in message

    # 2 -> 1 while both still migrate: nothing can go, and the set says who blocks it.
    await client.patch(WUKONGSETS, "web", {"spec": {"replicas": 1}}, namespace=namespace)
    blocked = await _wait_set(
        client,
        namespace,
        "web",
        lambda s: condition(s, "ScalingBlocked").get("status") == "True",
        what="ScalingBlocked",
        timeout=10,
    )
    blocking = condition(blocked, "ScalingBlocked")
    assert blocking["reason"] == "MembersMigrating"
    assert "web-3" in blocking["message"] and "web-4" in blocking["message"]
    assert _status(blocked, "replicas") == 2
    assert await _live_members(client, namespace, "web") == {"web-3", "web-4"}
    for member in ("web-3", "web-4"):
        assert _phase(await run.get(member)) == "Migrating", "the migration ended too early"
    warnings = [e for e in await _events(client, namespace, "web") if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == ["ScalingBlocked"]
    assert "web-3" in warnings[0]["message"] and "web-4" in warnings[0]["message"]

    # The migrations end: the first member free to go goes, and the set is done.
    done = await _wait_set(
        client,
        namespace,
        "web",
        lambda s: (
            _status(s, "replicas") == 1
            and _status(s, "migratingReplicas") == 0
            and condition(s, "ScalingBlocked").get("status") == "False"
        ),
        what="1 member, no migration, not blocked",
    )
    # The first member whose migration ends is the first that may go.
    (left,) = await _live_members(client, namespace, "web")
    (gone,) = {"web-3", "web-4"} - {left}
    assert condition(done, "Ready")["status"] == "True"
    removal = next(
        c
        for c in set_operator.calls
        if c.verb == "delete" and c.resource == "wukongs" and c.path.endswith(f"/{gone}")
    )
    # Woken by the end of a migration (a watch event), not by a periodic requeue.
    assert started_by(removal) == WATCH_EVENT


def _kubectl(control_plane: ControlPlane, kubectl: Path, namespace: str, *args: str) -> str:
    command = [str(kubectl), f"--kubeconfig={control_plane.kubeconfig}", "-n", namespace, *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


async def test_kubectl_scale_changes_replicas_and_the_set_follows(
    control_plane: ControlPlane,
    kubectl: Path,
    client: Client,
    namespace: str,
    start_wukong: StartWukong,
    set_operator: RecordingObserver,
) -> None:
    await start_wukong()
    await client.create(WUKONGSETS, _set(namespace, "web", 1))
    await _wait_set(client, namespace, "web", lambda s: _status(s, "readyReplicas") == 1, what="1")

    await asyncio.to_thread(
        _kubectl, control_plane, kubectl, namespace, "scale", "wukongset/web", "--replicas=3"
    )
    grown = await _wait_set(
        client, namespace, "web", lambda s: _status(s, "readyReplicas") == 3, what="3 ready"
    )
    assert grown["spec"]["replicas"] == 3
    assert _status(grown, "selector") == "app=web"
    assert await _live_members(client, namespace, "web") == {"web-0", "web-1", "web-2"}
    scale = json.loads(
        await asyncio.to_thread(
            _kubectl,
            control_plane,
            kubectl,
            namespace,
            "get",
            "wukongset",
            "web",
            "--subresource=scale",
            "-o",
            "json",
        )
    )
    assert scale["spec"]["replicas"] == 3
    assert scale["status"] == {"replicas": 3, "selector": "app=web"}
    table = (
        await asyncio.to_thread(_kubectl, control_plane, kubectl, namespace, "get", "wks")
    ).split()
    assert table[:5] == ["NAME", "DESIRED", "READY", "MIGRATING", "AGE"]
    assert table[5:9] == ["web", "3", "3", "0"]

    await asyncio.to_thread(
        _kubectl, control_plane, kubectl, namespace, "scale", "wukongset/web", "--replicas=1"
    )
    await _wait_set(client, namespace, "web", lambda s: _status(s, "replicas") == 1, what="1")
    assert await _live_members(client, namespace, "web") == {"web-0"}


async def test_deleting_the_set_deletes_every_member_then_itself(
    client: Client, namespace: str, start_wukong: StartWukong, set_operator: RecordingObserver
) -> None:
    run = await start_wukong()
    await client.create(WUKONGSETS, _set(namespace, "web", 3))
    created = await _wait_set(
        client, namespace, "web", lambda s: _status(s, "readyReplicas") == 3, what="3 ready"
    )
    assert SET_FINALIZER in created["metadata"]["finalizers"]
    # One member is already on its way out when the set goes: that never holds it.
    await client.delete(WUKONGS, "web-1", namespace=namespace)
    await client.delete(WUKONGSETS, "web", namespace=namespace)

    async def set_gone() -> bool:
        try:
            await client.get(WUKONGSETS, "web", namespace=namespace)
        except NotFound:
            return True
        return False

    await _until(set_gone, "the WukongSet to be deleted")
    assert await _members(client, namespace, "web") == {}
    for member in ("web-0", "web-1", "web-2"):
        await run.wait_gone(member)

    # Everything the set controller did is granted, and its own rules are all used
    # (but `update` of finalizers, for OwnerReferencesPermissionEnforcement, `get`, and
    # `patch` of members, which a rollout uses: test_wukongset_rollout checks it).
    used = _used(set_operator.calls)
    assert used <= _granted(), f"used but not granted: {sorted(used - _granted())}"
    unused = _granted(WUKONGSET_RULES) - used
    assert unused <= {
        ("wukongsets/finalizers", "update"),
        ("wukongsets", "get"),
        ("wukongsets", "list"),
        ("wukongs", "patch"),
    }, unused


@pytest.mark.parametrize(
    ("name", "change", "field"),
    [
        ("web", {"selector": {"matchLabels": {"app": "db"}}}, "selector.matchLabels must match"),
        ("a" * 62, {}, "members are named <set>-<ordinal>"),
        (
            "a" * 55,
            {
                "template": {
                    "metadata": {"labels": LABELS},
                    "spec": {"disks": [{"name": "rootdisk", "size": "1Gi"}]},
                }
            },
            "<set>-<ordinal>-<disk>",
        ),
    ],
)
async def test_admission_refuses_what_cannot_work(
    client: Client, namespace: str, start_wukong: StartWukong, name: str, change: Object, field: str
) -> None:
    with pytest.raises(Invalid) as refused:
        await client.create(WUKONGSETS, _set(namespace, name, 3, **change))
    assert field in refused.value.message


async def test_the_selector_is_immutable(
    client: Client, namespace: str, start_wukong: StartWukong
) -> None:
    await client.create(WUKONGSETS, _set(namespace, "web", 0))
    change = {
        "spec": {
            "selector": {"matchLabels": {"tier": "front"}},
        }
    }
    with pytest.raises(Invalid) as refused:
        await client.patch(WUKONGSETS, "web", change, namespace=namespace)
    assert "selector is immutable" in refused.value.message
