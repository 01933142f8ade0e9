"""A Wukong converges through a slow API server that cancels reconciles mid-way.

Every answer from the API server is held 0.2 s (a latency proxy between the
operator and the server) and reconciles get 1 s, so the first reconciles of a
Wukong with five dependents run out of time in the middle of creating them.
Each attempt is cut short, by the deadline (`deadline_exceeded`) or by a
call's own share of it (`api_timeout`), logged at DEBUG (no ERROR), and
retried; the next attempt finds what the last one created (a create whose
answer was cut off may well have succeeded), so the object reaches Running and
every dependent exists exactly once.

Deleting it then goes through the same slow server: each deletion reconcile
must leave progress behind for the next one, so the Wukong goes and takes every
dependent it created with it.
"""

import logging
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.test_wukong_controller import FULL_SPEC, _create_shared_nad
from tests.integration.test_wukong_deletion import wait_all_gone
from tests.integration.wukong_harness import StartWukong, WukongRun
from wukong.devcluster import ControlPlane
from wukong.devcluster.kubeconfig import kubeconfig_via
from wukong.devcluster.latency_proxy import LatencyProxy
from wukong.operator.api import WUKONG_LABEL, WUKONGS
from wukong.runtime import CancelReason, Client
from wukong.runtime.apis import DATA_VOLUMES, NETWORK_ATTACHMENT_DEFINITIONS, VIRTUAL_MACHINES
from wukong.runtime.observe import Outcome, Step
from wukong.runtime.resources import PERSISTENT_VOLUME_CLAIMS


async def test_cancelled_reconciles_retry_cleanly_and_create_nothing_twice(
    control_plane: ControlPlane,
    start_wukong: StartWukong,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="wukong")
    proxy = LatencyProxy(target_host="127.0.0.1", target_port=control_plane.config.apiserver_port)
    await proxy.start()
    proxy.delay = 0.2
    kubeconfig = kubeconfig_via(control_plane.kubeconfig, tmp_path / "kubeconfig", port=proxy.port)
    async with await Client.from_kubeconfig(kubeconfig) as slow:
        run = await start_wukong(operator_client=slow, reconcile_timeout=1.0)
        await _create_shared_nad(run)
        await run.create("web", FULL_SPEC)
        await run.wait_for(
            "web",
            lambda obj: (obj.get("status") or {}).get("phase") == "Running",
            what="web to be Running through the slow API server",
            timeout=60,
        )
        await _assert_each_dependent_created_once(run)

        await run.client.delete(WUKONGS, "web", namespace=run.namespace)
        # Bounded: a deletion that starts over at every cut-off never ends.
        await wait_all_gone(run, timeout=60)
        await run.stop_operator()
    await proxy.close()

    cancelled = [
        event
        for event in run.lifecycle
        if event.step == Step.FINISHED and event.outcome == Outcome.CANCELLED
    ]
    assert cancelled, "the deadline never cut a reconcile short; the test proves nothing"
    reasons = {event.reason for event in cancelled}
    # Cut by the deadline, or by a call's own share of it (each call may take half
    # of what is left); stopping the operator at the end may cut one more short, and
    # so may the Wukong's own delete event, which can overtake the slow answer to the
    # patch that removed its finalizer.
    ran_out = {CancelReason.DEADLINE_EXCEEDED, CancelReason.API_TIMEOUT}
    assert reasons & ran_out
    assert reasons <= ran_out | {CancelReason.SHUTDOWN, CancelReason.DELETED}

    cancel_logs = [r for r in caplog.records if "reconcile cancelled after" in r.getMessage()]
    assert cancel_logs and all(r.levelno == logging.DEBUG for r in cancel_logs)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def _assert_each_dependent_created_once(run: WukongRun) -> None:
    created = Counter(
        call.resource
        for call in run.calls
        if call.verb == "create" and call.status_code == 201 and call.resource != "events"
    )
    # A create whose answer was cut off may have succeeded without a 201 reaching
    # us; more 201s for a kind than the spec has objects of it (two empty disks'
    # claims; CDI makes the image's) would mean a duplicate.
    most = Counter(
        {
            PERSISTENT_VOLUME_CLAIMS.plural: 2,
            NETWORK_ATTACHMENT_DEFINITIONS.plural: 1,
            DATA_VOLUMES.plural: 1,
            VIRTUAL_MACHINES.plural: 1,
        }
    )
    assert created <= most, created
    selector = f"{WUKONG_LABEL}=web"
    for resource, names in [
        (NETWORK_ATTACHMENT_DEFINITIONS, ["web-data"]),
        (PERSISTENT_VOLUME_CLAIMS, ["web-image", "web-root", "web-scratch"]),
        (DATA_VOLUMES, ["web-image"]),
        (VIRTUAL_MACHINES, ["web"]),
    ]:
        listed = await run.client.list(resource, namespace=run.namespace, label_selector=selector)
        assert sorted(item["metadata"]["name"] for item in listed["items"]) == names
