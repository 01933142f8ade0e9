"""WukongSet members follow the template: a template change rolled out in place with at
most maxUnavailable members unavailable at once, a member edited by hand brought back."""

from typing import Any

import pytest

from tests.integration.helpers import RecordingObserver
from tests.integration.test_wukong_rbac_rules import _granted, _used
from tests.integration.test_wukongset import (
    _events,
    _members,
    _set,
    _status,
    _wait_set,
    set_operator,  # noqa: F401 (a fixture)
)
from tests.integration.wukong_harness import StartWukong, WatchRecorder, condition
from wukong.devcluster.simulator import SimulationConfig
from wukong.operator.api import WUKONGS
from wukong.operator.rbac import WUKONGSET_RULES
from wukong.operator.wukongset_api import WUKONGSETS
from wukong.operator.wukongset_rollout import TEMPLATE_HASH_LABEL
from wukong.runtime import Client, Object

DISKS = [{"name": "root", "size": "1Gi"}]
TWO_DISKS = [*DISKS, {"name": "data", "size": "1Gi"}]


def _available(wukong: Object) -> bool:
    """As the rollout counts it: Ready, every condition True, the spec observed."""
    status = wukong.get("status") or {}
    conditions = status.get("conditions") or []
    return (
        any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        and all(c["status"] == "True" for c in conditions)
        and (status.get("observedGeneration") or 0) >= wukong["metadata"]["generation"]
    )


def _most_unavailable_at_once(events: list[tuple[str, Object]], names: set[str]) -> int:
    """The most members unavailable at the same time, replaying the watch in order."""
    latest: dict[str, Object] = {}
    most = 0
    for kind, obj in events:
        name = obj["metadata"]["name"]
        if name not in names:
            continue
        if kind == "DELETED":
            latest.pop(name, None)
        else:
            latest[name] = obj
        most = max(most, sum(1 for w in latest.values() if not _available(w)))
    return most


def _settled(wukong_set: Object, replicas: int) -> bool:
    return (
        _status(wukong_set, "updatedReplicas") == replicas
        and _status(wukong_set, "readyReplicas") == replicas
        and _status(wukong_set, "availableReplicas") == replicas
        and condition(wukong_set, "RollingUpdate").get("status") == "False"
        and _status(wukong_set, "observedGeneration") == wukong_set["metadata"]["generation"]
    )


async def _all_available(client: Client, namespace: str, replicas: int) -> dict[str, Object]:
    members = await _members(client, namespace, "web")
    assert len(members) == replicas and all(_available(w) for w in members.values()), {
        n: (w.get("status") or {}).get("conditions") for n, w in members.items()
    }
    return members


@pytest.mark.parametrize("max_unavailable", [1, 2])
async def test_a_template_change_rolls_out_with_at_most_max_unavailable_at_once(
    client: Client,
    namespace: str,
    start_wukong: StartWukong,
    set_operator: RecordingObserver,  # noqa: F811
    max_unavailable: int,
) -> None:
    # A new disk takes a second to bind: its member is unavailable meanwhile.
    await start_wukong(simulation=SimulationConfig(bind_delay=1.0))
    replicas = 4
    await client.create(
        WUKONGSETS, _set(namespace, "web", replicas, maxUnavailable=max_unavailable)
    )
    before = await _wait_set(
        client, namespace, "web", lambda s: _settled(s, replicas), what="4 ready, up to date"
    )
    old_hash = _status(before, "templateHash")
    await _all_available(client, namespace, replicas)
    names = {f"web-{i}" for i in range(replicas)}

    async with WatchRecorder(client, WUKONGS, namespace) as watch:
        change: dict[str, Any] = {"spec": {"template": {"spec": {"disks": TWO_DISKS}}}}
        await client.patch(WUKONGSETS, "web", change, namespace=namespace)
        after = await _wait_set(
            client,
            namespace,
            "web",
            lambda s: _status(s, "templateHash") != old_hash and _settled(s, replicas),
            what="the new template rolled out",
        )
        members = await _all_available(client, namespace, replicas)
        seen = list(watch.events)

    new_hash = _status(after, "templateHash")
    for member in members.values():
        assert [d["name"] for d in member["spec"]["disks"]] == ["root", "data"]
        assert member["metadata"]["labels"][TEMPLATE_HASH_LABEL] == new_hash
    # The same members, updated in place (never deleted and made again).
    assert not [obj for kind, obj in seen if kind == "DELETED"]
    most = _most_unavailable_at_once(seen, names)
    # The bound held, and was used: members were really unavailable during the rollout.
    assert most == max_unavailable, most
    updating = [
        e for e in await _events(client, namespace, "web") if e["reason"] == "UpdatingMembers"
    ]
    updated = [
        name for e in updating for name in names if f"{name} (template changed)" in e["message"]
    ]
    assert sorted(updated) == sorted(names), [e["message"] for e in updating]
    assert all(new_hash in e["message"] for e in updating)


async def test_a_member_edited_by_hand_is_brought_back_to_the_template(
    client: Client,
    namespace: str,
    start_wukong: StartWukong,
    set_operator: RecordingObserver,  # noqa: F811
) -> None:
    run = await start_wukong()
    await client.create(WUKONGSETS, _set(namespace, "web", 2))
    await _wait_set(client, namespace, "web", lambda s: _settled(s, 2), what="2 up to date")
    edited = await client.patch(
        WUKONGS, "web-1", {"spec": {"cpu": 4, "memory": "2Gi"}}, namespace=namespace
    )
    assert edited["spec"]["cpu"] == 4

    reverted = await run.wait_for(
        "web-1",
        lambda w: (
            w["spec"]["cpu"] == 1
            and w["spec"]["memory"] == "1Gi"
            and w["metadata"]["generation"] > edited["metadata"]["generation"]
        ),
        what="web-1 back to the template",
    )
    assert [d["name"] for d in reverted["spec"]["disks"]] == ["root"]
    await _wait_set(client, namespace, "web", lambda s: _settled(s, 2), what="2 up to date")
    messages = [
        e["message"]
        for e in await _events(client, namespace, "web")
        if e["reason"] == "UpdatingMembers"
    ]
    assert any("web-1 (spec changed by hand)" in m for m in messages), messages
    # The other member was left alone.
    web_0 = await run.get("web-0")
    assert web_0["metadata"]["generation"] == 1
    # The set controller's own rules grant the member patch it made.
    assert ("wukongs", "patch") in _used(set_operator.calls) & _granted(WUKONGSET_RULES)


async def test_a_refused_update_is_reported_and_does_not_hold_the_others_back(
    client: Client,
    namespace: str,
    start_wukong: StartWukong,
    set_operator: RecordingObserver,  # noqa: F811
) -> None:
    """A disk grown by hand cannot shrink back to the template's: the set says so once
    and leaves that member as it is, and a template change still reaches the others."""
    run = await start_wukong()
    await client.create(WUKONGSETS, _set(namespace, "web", 2))
    await _wait_set(client, namespace, "web", lambda s: _settled(s, 2), what="2 up to date")
    grown = [{"name": "root", "size": "2Gi"}]
    await client.patch(WUKONGS, "web-1", {"spec": {"disks": grown}}, namespace=namespace)

    async def refused() -> list[str]:
        return [
            e["message"]
            for e in await _events(client, namespace, "web")
            if e["reason"] == "UpdateRefused"
        ]

    await run.wait_until(lambda: _true(refused), what="UpdateRefused")
    (message,) = await refused()
    assert "web-1 (spec changed by hand)" in message and "disks" in message, message

    change = {"spec": {"template": {"spec": {"cpu": 2, "disks": DISKS}}}}
    await client.patch(WUKONGSETS, "web", change, namespace=namespace)
    await run.wait_for("web-0", lambda w: w["spec"]["cpu"] == 2, what="web-0 updated")
    rolled = await _wait_set(
        client,
        namespace,
        "web",
        lambda s: _status(s, "updatedReplicas") == 1 and _status(s, "availableReplicas") == 2,
        what="web-0 updated, web-1 left as it is",
    )
    rolling = condition(rolled, "RollingUpdate")
    assert rolling["status"] == "True" and "web-1" in rolling["message"], rolling
    web_1 = await run.get("web-1")
    assert web_1["spec"]["disks"] == grown and web_1["spec"]["cpu"] == 1
    # Refused once per change (the hand edit, then the template), never retried in a loop.
    assert len(await refused()) == 2
    errors = [e.error for e in set_operator.events if e.error is not None]
    assert errors == [], errors


async def _true(check: Any) -> bool:
    return bool(await check())
