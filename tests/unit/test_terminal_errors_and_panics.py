"""What a reconcile's or a validator's exception counts as, as controller-runtime counts
it: `TerminalError` is an error that is not retried; an unexpected exception (a bug)
is a panic and, for a reconcile, still an error that is retried; an expected failure
(an API error, a call out of time, a failed connection) is neither.

The real runtime pieces (a running controller, the webhook server) report to the real
metrics observer; no API server is involved (nothing here makes a call).
"""

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s_client

from wukong.metrics.observers import RuntimeMetrics
from wukong.runtime import (
    Admission,
    AdmissionRequest,
    AdmitOnError,
    ApiTimeout,
    CancelReason,
    Client,
    Controller,
    ControllerOptions,
    NotFound,
    ReconcileContext,
    Request,
    Result,
    TerminalError,
)
from wukong.runtime._errors import is_panic
from wukong.runtime._ratelimit import ItemExponentialFailureRateLimiter
from wukong.runtime._running import RunningController
from wukong.runtime.observe import LifecycleEvent, Outcome, Step
from wukong.runtime.resources import CONFIGMAPS
from wukong.runtime.serving import WebhookServer


class Recording(RuntimeMetrics):
    """The metrics observer, keeping the reconcile events too."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[LifecycleEvent] = []

    def reconcile(self, event: LifecycleEvent) -> None:
        self.events.append(event)
        super().reconcile(event)

    def steps(self, step: Step) -> list[LifecycleEvent]:
        return [event for event in self.events if event.step is step]

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)


class Raises:
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        raise self.error

    async def validate(self, request: AdmissionRequest) -> Admission:
        raise self.error


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    """A client for no cluster: nothing here makes a call."""
    async with Client(k8s_client.ApiClient(configuration=k8s_client.Configuration())) as api:
        yield api


async def _reconcile_once(client: Client, error: Exception) -> Recording:
    """Reconcile one key with a reconciler raising `error`; wait past its first retry."""
    observer = Recording()
    controller = RunningController(
        Controller(
            name="c",
            reconciler=Raises(error),
            primary=CONFIGMAPS,
            # The first retry 1 s after a failure.
            options=ControllerOptions(
                rate_limiter=ItemExponentialFailureRateLimiter(base_delay=1.0, max_delay=1.0)
            ),
        ),
        client=client,
        observer=observer,
        reconcile_timeout=10.0,
    )
    observer.controller_added(controller)
    controller.start()
    controller.enqueue(Request("ns", "a"))
    await asyncio.sleep(1.5)
    await controller.stop(reason=CancelReason.SHUTDOWN, grace=1.0)
    return observer


@pytest.mark.looptime
async def test_a_terminal_error_is_an_error_that_is_not_requeued(client: Client) -> None:
    error = TerminalError("spec.disks[0]: no StorageClass can ever serve it")
    observer = await _reconcile_once(client, error)

    (finished,) = observer.steps(Step.FINISHED)  # once: no retry 1 s later
    assert (finished.outcome, finished.error, finished.panicked) == (Outcome.ERROR, error, False)
    assert observer.steps(Step.REQUEUED) == []
    for name in (
        "controller_runtime_terminal_reconcile_errors_total",
        "controller_runtime_reconcile_errors_total",
    ):
        assert observer.value(name, controller="c") == 1.0
    assert observer.value("controller_runtime_reconcile_total", controller="c", result="error") == 1
    assert observer.value("controller_runtime_reconcile_panics_total", controller="c") == 0.0


@pytest.mark.looptime
async def test_an_unexpected_exception_is_a_panic_and_an_error_and_is_retried(
    client: Client,
) -> None:
    observer = await _reconcile_once(client, KeyError("spec"))

    finished = observer.steps(Step.FINISHED)
    assert [(e.outcome, e.panicked) for e in finished] == [(Outcome.ERROR, True)] * 2
    assert [e.rate_limited for e in observer.steps(Step.REQUEUED)] == [True, True]
    for name in (
        "controller_runtime_reconcile_panics_total",
        "controller_runtime_reconcile_errors_total",
    ):
        assert observer.value(name, controller="c") == 2.0
    assert observer.value("controller_runtime_terminal_reconcile_errors_total", controller="c") == 0


@pytest.mark.looptime
async def test_an_expected_failure_is_an_error_but_no_panic(client: Client) -> None:
    observer = await _reconcile_once(
        client, NotFound(status=404, reason="NotFound", message="gone", verb="GET", path="/x")
    )

    assert [e.panicked for e in observer.steps(Step.FINISHED)] == [False, False]
    assert observer.value("controller_runtime_reconcile_errors_total", controller="c") == 2.0
    assert observer.value("controller_runtime_reconcile_panics_total", controller="c") == 0.0


@pytest.mark.parametrize(
    ("error", "panic"),
    [
        (KeyError("spec"), True),
        (TypeError("None is not a dict"), True),
        (AssertionError(), True),
        (TerminalError("never"), False),
        (ApiTimeout(verb="GET", path="/x", timeout=1.0), False),
        (aiohttp.ClientConnectionError("refused"), False),
        (ConnectionResetError(), False),
        (asyncio.CancelledError(), False),
        (None, False),
    ],
)
def test_what_is_a_panic(error: BaseException | None, panic: bool) -> None:
    assert is_panic(error) is panic


def _review() -> bytes:
    request = {
        "uid": "u-1",
        "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
        "operation": "CREATE",
        "namespace": "ns",
        "object": {"metadata": {"name": "a"}},
    }
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    return json.dumps(review).encode()


async def test_a_validator_that_raises_a_bug_is_a_webhook_panic(client: Client) -> None:
    observer = Recording()
    bug = Raises(KeyError("metadata"))
    server = WebhookServer(
        client=client,
        validators={
            "/bug": bug,
            "/bug-admitted": AdmitOnError(bug),
            "/timeout": Raises(ApiTimeout(verb="GET", path="/x", timeout=1.0)),
        },
        observer=observer,
    )
    panics = "controller_runtime_webhook_panics_total"
    assert observer.value(panics) == 0.0  # served from the start
    port = await server.start("127.0.0.1:0", ssl_context=None)
    try:
        async with aiohttp.ClientSession() as session:
            for path, expected in (("/timeout", 0.0), ("/bug", 1.0), ("/bug-admitted", 2.0)):
                async with session.post(
                    f"http://127.0.0.1:{port}{path}",
                    data=_review(),
                    headers={"Content-Type": "application/json"},
                ) as response:
                    assert response.status == 200
                    answer = (await response.json())["response"]
                assert answer["allowed"] is (path == "/bug-admitted")
                assert observer.value(panics) == expected, path
    finally:
        await server.stop()
    # Wukong has no conversion webhook: the family is served, at 0.
    assert observer.value("controller_runtime_conversion_webhook_panics_total") == 0.0
