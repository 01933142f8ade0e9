"""A reconcile that outlives its deadline is really cancelled, and requeued quietly.

The API server is made slow by a latency proxy, so the reconcile is stuck in a
real API call when its deadline passes; the call must be aborted on the wire.
"""

import asyncio
import logging
import re
from pathlib import Path

import pytest

from tests.integration.helpers import RecordingObserver, running
from tests.polling import eventually
from wukong.devcluster import ControlPlane
from wukong.devcluster.kubeconfig import kubeconfig_via
from wukong.devcluster.latency_proxy import LatencyProxy
from wukong.runtime import (
    CancelReason,
    Client,
    Controller,
    ControllerOptions,
    Manager,
    ManagerOptions,
    ReconcileContext,
    Request,
    Result,
)
from wukong.runtime.observe import LifecycleEvent, Outcome, Step
from wukong.runtime.resources import CONFIGMAPS


class SlowApiReconciler:
    """Reads its ConfigMap through the (slow) API server."""

    def __init__(self, proxy: LatencyProxy) -> None:
        self.proxy = proxy
        self.attempts = 0

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        self.attempts += 1
        if self.attempts == 1:
            self.proxy.delay = 30.0  # the first attempt meets a hung API server
        else:
            self.proxy.delay = 0.0
        await ctx.client.get(CONFIGMAPS, request.name, namespace=request.namespace)
        return Result()


async def test_deadline_cancels_the_reconcile_and_its_api_call(
    control_plane: ControlPlane,
    client: Client,
    namespace: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = LatencyProxy(target_host="127.0.0.1", target_port=control_plane.config.apiserver_port)
    await proxy.start()
    kubeconfig = kubeconfig_via(control_plane.kubeconfig, tmp_path / "kubeconfig", port=proxy.port)
    recorder = RecordingObserver()
    caplog.set_level(logging.DEBUG, logger="wukong")
    reconciler = SlowApiReconciler(proxy)

    async with await Client.from_kubeconfig(kubeconfig) as slow_client:
        manager = Manager(
            client=slow_client, observers=[recorder], options=ManagerOptions(namespace=namespace)
        )
        manager.add(
            Controller(
                name="deadline-test",
                reconciler=reconciler,
                primary=CONFIGMAPS,
                # Calls may use the whole deadline: only the deadline can cut them.
                options=ControllerOptions(reconcile_timeout=1.0, call_budget_share=1.0),
            )
        )
        async with running(manager) as run:
            await client.create(CONFIGMAPS, {"metadata": {"name": "cm", "namespace": namespace}})

            def finished() -> list[LifecycleEvent]:
                return [e for e in recorder.finished() if e.request.name == "cm"]

            await eventually(
                lambda: any(e.outcome is Outcome.SUCCESS for e in finished()),
                timeout=30,
                what="a successful reconcile after the cancelled one",
            )
        assert run.result() == CancelReason.SHUTDOWN
    await proxy.close()

    first, *rest = finished()
    assert first.outcome is Outcome.CANCELLED
    assert first.reason is CancelReason.DEADLINE_EXCEEDED
    assert first.duration is not None and first.duration >= 1.0
    requests = [
        e.step
        for e in recorder.events
        if e.request.name == "cm"
        and e.step in (Step.CANCEL_REQUESTED, Step.FINISHED, Step.REQUEUED)
    ]
    assert requests[:3] == [Step.CANCEL_REQUESTED, Step.FINISHED, Step.REQUEUED]
    assert rest[-1].outcome is Outcome.SUCCESS

    # The GET in flight was aborted: the client hung up on the held response,
    # and the call ended with a cancellation, not an answer.
    assert proxy.client_aborts >= 1
    aborted = [c for c in recorder.calls if c.verb == "get" and c.status_code is None]
    assert aborted and isinstance(aborted[0].error, asyncio.CancelledError)
    # ...reported as the reconcile's own call, with the reason the runtime decided.
    assert aborted[0].cancel_reason is CancelReason.DEADLINE_EXCEEDED
    assert aborted[0].reconcile is not None and aborted[0].reconcile.request.name == "cm"

    # Cancellation is normal: a DEBUG line with the reason, never an ERROR.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    cancelled = [r for r in caplog.records if "reason=deadline_exceeded" in r.getMessage()]
    assert cancelled and all(r.levelno == logging.DEBUG for r in cancelled)
    # It names the call the reconcile was waiting for, and how long it had waited.
    line = cancelled[0].getMessage()
    waiting = re.search(r"API call in flight: get configmaps after ([0-9.]+)s", line)
    assert waiting and 0.9 <= float(waiting.group(1)) <= 1.2, line
