"""Watches that never go stale (no watch gap): every event reaches its Wukong.

A Wukong that waited has a RequeueAfter pending, which would also bring the
change in the end; so each test checks that the reconcile acting on the change
was started by the watch event (through a field index or an owner reference),
not by a requeue.
"""

import time

from tests.integration.wukong_harness import WATCH_EVENT, StartWukong, condition, started_by
from wukong.operator.api import WUKONGS
from wukong.runtime import NotFound, Object
from wukong.runtime.apis import NETWORK_ATTACHMENT_DEFINITIONS
from wukong.runtime.observe import Step

BRIDGE = '{"cniVersion": "0.3.1", "type": "bridge", "bridge": "br0"}'


def _running(obj: Object) -> bool:
    return (obj.get("status") or {}).get("phase") == "Running"


async def test_a_referenced_nad_deleted_and_recreated(start_wukong: StartWukong) -> None:
    run = await start_wukong()
    await run.create_nad("shared")
    await run.create("user", {"networks": [{"name": "net", "nadName": "shared"}]})
    await run.wait_for("user", _running, what="Running")

    deleted = time.time()
    await run.client.delete(NETWORK_ATTACHMENT_DEFINITIONS, "shared", namespace=run.namespace)
    lost = await run.wait_for(
        "user",
        lambda o: condition(o, "NetworksConfigured").get("status") == "False",
        what="NetworksConfigured to turn False",
    )
    assert condition(lost, "NetworksConfigured")["reason"] == "NetworkNotFound"
    assert lost["status"]["phase"] == "Error"
    # The status write that said so: the NAD's delete event mapped to the Wukong
    # through the nadName index.
    call = await run.first_call("patch", "wukongs", since=deleted)
    assert started_by(call) == WATCH_EVENT

    recreated = time.time()
    await run.create_nad("shared")
    back = await run.wait_for(
        "user",
        lambda o: _running(o) and condition(o, "NetworksConfigured").get("status") == "True",
        what="the Wukong to recover",
    )
    # Not the 15 s problem retry: the NAD's add event.
    call = await run.first_call("patch", "wukongs", since=recreated)
    assert started_by(call) == WATCH_EVENT
    assert back["status"]["networks"] == [{"name": "net", "nadName": "shared", "created": False}]
    # Reused, so never adopted: no owner was added.
    shared = await run.client.get(NETWORK_ATTACHMENT_DEFINITIONS, "shared", namespace=run.namespace)
    assert "ownerReferences" not in shared["metadata"]


async def test_an_owned_nad_follows_the_config_and_comes_back_when_deleted(
    start_wukong: StartWukong,
) -> None:
    run = await start_wukong()
    await run.create("owner", {"networks": [{"name": "data", "config": BRIDGE}]})
    await run.wait_for("owner", _running, what="Running")

    edited = BRIDGE.replace("br0", "br1")
    patch = {"spec": {"networks": [{"name": "data", "config": edited}]}}
    await run.client.patch(WUKONGS, "owner", patch, namespace=run.namespace)

    async def nad_config() -> str | None:
        try:
            nad = await run.client.get(
                NETWORK_ATTACHMENT_DEFINITIONS, "owner-data", namespace=run.namespace
            )
        except NotFound:
            return None
        return str(nad["spec"]["config"])

    async def edited_config() -> bool:
        return await nad_config() == edited

    await run.wait_until(edited_config, what="the NAD to carry the edited config")

    # The event follows the patch: wait for it rather than read events at once.
    async def updated_event() -> bool:
        return "Updated" in [e["reason"] for e in await run.events("owner")]

    await run.wait_until(updated_event, what="the Updated event")

    deleted = time.time()
    await run.client.delete(NETWORK_ATTACHMENT_DEFINITIONS, "owner-data", namespace=run.namespace)
    await run.wait_until(edited_config, what="the deleted NAD to be re-created")
    # Its delete event, mapped through the owner reference, brought the reconcile.
    call = await run.first_call("create", "network-attachment-definitions", since=deleted)
    assert started_by(call) == WATCH_EVENT


async def test_the_sync_period_reconciles_an_idle_wukong_again(start_wukong: StartWukong) -> None:
    run = await start_wukong(sync_period=0.5)
    await run.create("idle", {})
    await run.wait_for("idle", _running, what="Running")
    settled = len(run.lifecycle)

    def reconciles_since_running() -> int:
        return sum(
            1
            for event in run.lifecycle[settled:]
            if event.step == Step.STARTED and event.request.name == "idle"
        )

    # Running returns no requeue and nothing changes: only the resync reconciles it.
    await run.wait_until(
        lambda: _true(reconciles_since_running() >= 3), what="three resync reconciles"
    )
    assert _running(await run.get("idle"))


async def _true(value: bool) -> bool:
    return value
