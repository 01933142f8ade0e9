"""Answers that mean "come back later" when there is no later: the call ran out of time.

A stand-in HTTP server answers like an API server under load: 429 with
Retry-After (priority and fairness throttling), 503 with Retry-After (a server
shutting down), 504 (it gave up at the `?timeout=` the client sent). Inside a
reconcile whose deadline is nearer than the wait, each is `api_timeout`, a
normal event, never a server error. With time to wait, the client waits and
retries, as client-go does.
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio import client as k8s_client

from tests.integration.helpers import RecordingObserver
from tests.polling import eventually
from wukong.runtime import (
    ApiTimeout,
    CancelReason,
    Client,
    Controller,
    Object,
    ReconcileContext,
    Request,
    Result,
)
from wukong.runtime._calls import layered
from wukong.runtime._fanout import ObserverFanout
from wukong.runtime._running import RunningController
from wukong.runtime.observe import Outcome
from wukong.runtime.resources import CONFIGMAPS

_STATUS = {"kind": "Status", "apiVersion": "v1", "status": "Failure"}


class FakeApiServer:
    """Answers each ConfigMap name with a scripted status; counts the requests."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.timeouts: list[str] = []  # the `?timeout=` each request carried

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.requests.append(name)
        self.timeouts.append(request.query.get("timeout", ""))
        if name == "throttled":
            return web.json_response(
                {**_STATUS, "code": 429, "reason": "TooManyRequests"},
                status=429,
                headers={"Retry-After": "3"},
            )
        if name == "unavailable":
            return web.json_response(
                {**_STATUS, "code": 503, "reason": "ServiceUnavailable"},
                status=503,
                headers={"Retry-After": "3"},
            )
        if name == "gave-up":
            return web.json_response(
                {**_STATUS, "code": 504, "reason": "Timeout", "message": "request timed out"},
                status=504,
            )
        if name == "busy-once" and self.requests.count(name) == 1:
            return web.json_response(
                {**_STATUS, "code": 429}, status=429, headers={"Retry-After": "0.2"}
            )
        return web.json_response({"kind": "ConfigMap", "metadata": {"name": name}})


@pytest.fixture
async def server() -> AsyncIterator[tuple[FakeApiServer, str]]:
    fake = FakeApiServer()
    app = web.Application()
    app.router.add_get("/api/v1/namespaces/ns/configmaps/{name}", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield fake, f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def recorder_and_client(
    server: tuple[FakeApiServer, str],
) -> AsyncIterator[tuple[RecordingObserver, Client]]:
    configuration = k8s_client.Configuration()
    configuration.host = server[1]
    recorder = RecordingObserver()
    async with Client(k8s_client.ApiClient(configuration=configuration)) as plain:
        yield recorder, layered(plain, observer=ObserverFanout([recorder]))


def _reconcile(client: Client, *, timeout: float) -> ReconcileContext:
    return ReconcileContext(
        controller="c",
        request=Request("ns", "x"),
        timeout=timeout,
        client=client,
        logger=logging.getLogger("test"),
        call_share=0.5,
    )


async def _as_reconcile(ctx: ReconcileContext, call: Coroutine[Any, Any, Object]) -> Object:
    """`call` made from the reconcile's task, where the call layer finds the reconcile."""
    return await asyncio.create_task(call, context=ctx._task_context)


@pytest.mark.parametrize(
    ("name", "why", "attempts"),
    [
        # Told to come back after the deadline: not tried again sooner.
        ("throttled", "429 with Retry-After 3s and no time left to wait", 1),
        ("unavailable", "503 with Retry-After 3s and no time left to wait", 1),
        # Timed out at the server: tried again (three times at most) while a retry
        # still has a budget of its own.
        ("gave-up", "request timed out", 4),
    ],
)
async def test_no_time_left_to_wait_is_an_api_timeout(
    server: tuple[FakeApiServer, str],
    recorder_and_client: tuple[RecordingObserver, Client],
    name: str,
    why: str,
    attempts: int,
) -> None:
    fake, _ = server
    recorder, client = recorder_and_client
    ctx = _reconcile(client, timeout=2.0)
    with pytest.raises(ApiTimeout) as raised:
        await _as_reconcile(ctx, ctx.client.get(CONFIGMAPS, name, namespace="ns"))
    assert why in str(raised.value)
    assert len(recorder.calls) == len(fake.requests) == attempts
    assert all(call.cancel_reason is CancelReason.API_TIMEOUT for call in recorder.calls)
    assert all(call.reconcile is ctx for call in recorder.calls)
    # The server was told how long the client would wait: half of what was left.
    budgets = [float(timeout.removesuffix("s")) for timeout in fake.timeouts]
    assert 0.9 <= budgets[0] <= 1.0
    assert budgets == sorted(budgets, reverse=True)


async def test_with_time_to_wait_the_call_is_retried(
    server: tuple[FakeApiServer, str], recorder_and_client: tuple[RecordingObserver, Client]
) -> None:
    fake, _ = server
    recorder, client = recorder_and_client
    ctx = _reconcile(client, timeout=10.0)
    got = await _as_reconcile(ctx, ctx.client.get(CONFIGMAPS, "busy-once", namespace="ns"))
    assert got["metadata"]["name"] == "busy-once"
    assert fake.requests == ["busy-once", "busy-once"]
    assert [(c.status_code, c.retries) for c in recorder.calls] == [(200, 1)]
    await asyncio.sleep(0)


class GetsItsConfigMap:
    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        await ctx.client.get(CONFIGMAPS, request.name, namespace=request.namespace)
        return Result()


async def test_a_reconcile_throttled_past_its_deadline_logs_why_at_debug(
    server: tuple[FakeApiServer, str],
    recorder_and_client: tuple[RecordingObserver, Client],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="wukong")
    recorder, client = recorder_and_client
    controller = RunningController(
        Controller(name="c", reconciler=GetsItsConfigMap(), primary=CONFIGMAPS),
        client=client,
        observer=recorder,
        reconcile_timeout=2.0,
    )
    controller.start()
    controller.enqueue(Request("ns", "throttled"))
    await eventually(lambda: bool(recorder.finished()), what="the reconcile to end")
    await controller.stop(reason=CancelReason.SHUTDOWN, grace=1.0)

    # The first attempt (later ones, requeued with a short backoff, may meet the stop).
    ended = recorder.finished()[0]
    assert (ended.outcome, ended.reason) == (Outcome.CANCELLED, CancelReason.API_TIMEOUT)
    # A normal event: DEBUG, never ERROR, with the reason and what the server said.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    line = next(r for r in caplog.records if "reconcile cancelled" in r.getMessage())
    assert line.levelno == logging.DEBUG
    message = line.getMessage()
    assert "reason=api_timeout" in message
    assert "cause: get /api/v1/namespaces/ns/configmaps/throttled" in message, message
    assert "(429 with Retry-After 3s and no time left to wait)" in message, message


async def test_the_reconcile_travels_in_the_task_context_not_in_the_client(
    server: tuple[FakeApiServer, str], recorder_and_client: tuple[RecordingObserver, Client]
) -> None:
    fake, _ = server
    recorder, client = recorder_and_client
    ctx = _reconcile(client, timeout=2.0)
    # From the reconcile's task (and tasks it starts): its deadline, reported as its call.
    await _as_reconcile(ctx, client.get(CONFIGMAPS, "inside", namespace="ns"))
    # The same client elsewhere: no deadline, nobody's call.
    await client.get(CONFIGMAPS, "outside", namespace="ns")
    assert [(call.path.rsplit("/", 1)[1], call.reconcile) for call in recorder.calls] == [
        ("inside", ctx),
        ("outside", None),
    ]
    inside, outside = fake.timeouts
    assert 0.9 <= float(inside.removesuffix("s")) <= 1.0  # half of the 2 s left
    assert outside == ""
