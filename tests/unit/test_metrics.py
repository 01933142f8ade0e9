"""Metrics observers: synthetic lifecycle events, API calls and queue activity."""

import asyncio
import logging
import time
import urllib.request
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest
from kubernetes_asyncio import client as k8s_client
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder

from tests.exposition import metric_samples
from wukong.metrics import MetricsServer, RuntimeMetrics, create_metrics
from wukong.metrics.plain import EXEMPLAR_INTERVAL
from wukong.runtime import (
    Admission,
    AdmissionRequest,
    ApiTimeout,
    CancelReason,
    Client,
    Controller,
    ControllerOptions,
    Manager,
    ManagerOptions,
    ReconcileContext,
    Request,
    Result,
    RuntimeObserver,
)
from wukong.runtime._running import RunningController
from wukong.runtime.observe import ApiCall, LifecycleEvent, Outcome, Step
from wukong.runtime.resources import CONFIGMAPS
from wukong.runtime.serving import WebhookServer

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C


_clients: list[Client] = []


def _client() -> Client:
    configuration = k8s_client.Configuration()
    configuration.host = "https://127.0.0.1:6443"
    client = Client(k8s_client.ApiClient(configuration=configuration))
    _clients.append(client)
    return client


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while _clients:
        await _clients.pop().close()


def _context(*, timeout: float = 2.0, due_at: float | None = None) -> ReconcileContext:
    return ReconcileContext(
        controller="c",
        request=Request("ns", "obj"),
        timeout=timeout,
        client=_client(),
        logger=logging.getLogger("test"),
        due_at=due_at,
    )


def _finished(
    ctx: ReconcileContext,
    outcome: Outcome,
    *,
    duration: float,
    reason: CancelReason | None = None,
) -> LifecycleEvent:
    return LifecycleEvent(
        step=Step.FINISHED,
        context=ctx,
        outcome=outcome,
        reason=reason,
        duration=duration,
    )


def _call(
    *,
    status: int | None,
    error: BaseException | None = None,
    reason: CancelReason | None = None,
    reconcile: ReconcileContext | None = None,
) -> ApiCall:
    return ApiCall(
        verb="get",
        method="GET",
        resource="configmaps",
        host="127.0.0.1:6443",
        namespace="ns",
        path="/api/v1/namespaces/ns/configmaps/obj",
        status_code=status,
        started=0.0,
        duration=0.02,
        retries=0,
        error=error,
        cancel_reason=reason,
        reconcile=reconcile,
    )


class _Idle:
    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        return Result()


def openmetrics(registry: CollectorRegistry) -> bytes:
    encode, _ = choose_encoder("application/openmetrics-text")
    return encode(registry)


@pytest.fixture
def observers() -> RuntimeMetrics:
    return RuntimeMetrics(metrics=create_metrics())


def _value(observers: RuntimeMetrics, metric: str, /, **labels: str) -> float | None:
    return observers.metrics.registry.get_sample_value(metric, labels)


async def test_results_errors_timeouts_and_cancellations(observers: RuntimeMetrics) -> None:
    ctx = _context(timeout=2.0)
    observers.reconcile(_finished(ctx, Outcome.SUCCESS, duration=0.5))
    observers.reconcile(_finished(ctx, Outcome.REQUEUE_AFTER, duration=0.1))
    observers.reconcile(_finished(ctx, Outcome.ERROR, duration=0.2))
    observers.reconcile(
        _finished(ctx, Outcome.CANCELLED, duration=2.0, reason=CancelReason.DEADLINE_EXCEEDED)
    )
    observers.reconcile(
        _finished(ctx, Outcome.CANCELLED, duration=0.3, reason=CancelReason.SHUTDOWN)
    )

    total = "controller_runtime_reconcile_total"
    assert _value(observers, total, controller="c", result="success") == 1
    assert _value(observers, total, controller="c", result="requeue_after") == 1
    # A reconcile cut by its deadline is an error (and a timeout), as in
    # controller-runtime; one stopped by shutdown is no error: it is requeued.
    assert _value(observers, total, controller="c", result="error") == 2
    assert _value(observers, total, controller="c", result="requeue") == 1
    assert _value(observers, "controller_runtime_reconcile_errors_total", controller="c") == 2
    assert _value(observers, "controller_runtime_reconcile_timeouts_total", controller="c") == 1
    cancellations = "wukong_reconcile_cancellations_total"
    assert _value(observers, cancellations, controller="c", reason="deadline_exceeded") == 1
    assert _value(observers, cancellations, controller="c", reason="shutdown") == 1
    time_count = "controller_runtime_reconcile_time_seconds_count"
    assert _value(observers, time_count, controller="c") == 5
    # The deadline-length reconcile lands in a finite bucket, not only in +Inf.
    bucket = "controller_runtime_reconcile_time_seconds_bucket"
    assert _value(observers, bucket, controller="c", le="2.5") == 5
    budget = "wukong_reconcile_budget_used_ratio"
    assert _value(observers, f"{budget}_sum", controller="c") == pytest.approx(3.1 / 2.0)
    assert _value(observers, f"{budget}_bucket", controller="c", le="1.0") == 5


@pytest.mark.parametrize(
    ("reason", "result", "timeouts"),
    [
        (CancelReason.SHUTDOWN, "requeue", 0),
        (CancelReason.LEADER_LOST, "requeue", 0),
        (CancelReason.DELETED, "requeue", 0),
        (CancelReason.PARENT_CANCELLED, "requeue", 0),
        # A call's own limit is a failure, but only the reconcile's deadline is a timeout.
        (CancelReason.API_TIMEOUT, "error", 0),
        (CancelReason.DEADLINE_EXCEEDED, "error", 1),
    ],
)
async def test_only_failures_count_as_errors_and_only_the_deadline_as_a_timeout(
    observers: RuntimeMetrics, reason: CancelReason, result: str, timeouts: int
) -> None:
    observers.reconcile(_finished(_context(), Outcome.CANCELLED, duration=0.3, reason=reason))
    total = "controller_runtime_reconcile_total"
    assert _value(observers, total, controller="c", result=result) == 1
    errors = 1 if result == "error" else None  # no series until the first error
    assert _value(observers, "controller_runtime_reconcile_errors_total", controller="c") == errors
    timeouts_total = _value(
        observers, "controller_runtime_reconcile_timeouts_total", controller="c"
    )
    assert (timeouts_total or 0) == timeouts
    cancellations = "wukong_reconcile_cancellations_total"
    assert _value(observers, cancellations, controller="c", reason=reason.value) == 1


async def test_reconcile_time_carries_the_trace_id_exemplar(observers: RuntimeMetrics) -> None:
    ctx = _context()
    ctx.span = NonRecordingSpan(
        SpanContext(
            trace_id=TRACE_ID, span_id=0x00F067AA0BA902B7, is_remote=False,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
    )  # fmt: skip
    observers.reconcile(_finished(ctx, Outcome.SUCCESS, duration=0.07))
    text = openmetrics(observers.metrics.registry).decode()
    line = next(
        line
        for line in text.splitlines()
        if line.startswith("controller_runtime_reconcile_time_seconds_bucket")
        and 'le="0.1"' in line
    )
    assert f'# {{trace_id="{TRACE_ID:032x}"}} 0.07' in line


async def test_a_bucket_exemplar_is_renewed_at_most_once_an_interval(
    observers: RuntimeMetrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    def traced(trace_id: int) -> ReconcileContext:
        ctx = _context()
        ctx.span = NonRecordingSpan(SpanContext(trace_id, 1, False))
        return ctx

    def exemplar_in(le: str) -> str:
        line = next(
            line
            for line in openmetrics(observers.metrics.registry).decode().splitlines()
            if line.startswith("controller_runtime_reconcile_time_seconds_bucket")
            and f'le="{le}"' in line
        )
        return line.partition(" # ")[2]

    # Two fast reconciles within the interval: the bucket keeps the first's trace;
    # a slow one, in a bucket of its own, gets its trace all the same.
    for trace_id, duration in ((0xA1, 0.07), (0xA2, 0.07), (0xB1, 1.5)):
        observers.reconcile(_finished(traced(trace_id), Outcome.SUCCESS, duration=duration))
    assert exemplar_in("0.1").startswith(f'{{trace_id="{0xA1:032x}"}} 0.07')
    assert exemplar_in("2.5").startswith(f'{{trace_id="{0xB1:032x}"}} 1.5')
    # Once the interval has passed (on the clock the observer reads), the next traced
    # observation renews it.
    later = time.monotonic() + EXEMPLAR_INTERVAL
    monkeypatch.setattr("wukong.metrics.observers.time", SimpleNamespace(monotonic=lambda: later))
    observers.reconcile(_finished(traced(0xA3), Outcome.SUCCESS, duration=0.08))
    assert exemplar_in("0.1").startswith(f'{{trace_id="{0xA3:032x}"}} 0.08')
    assert _value(observers, "controller_runtime_reconcile_time_seconds_count", controller="c") == 4


async def test_no_exemplar_without_a_valid_span(observers: RuntimeMetrics) -> None:
    ctx = _context()
    ctx.span = NonRecordingSpan(SpanContext(trace_id=0, span_id=0, is_remote=False))
    observers.reconcile(_finished(ctx, Outcome.SUCCESS, duration=0.07))
    assert "trace_id" not in openmetrics(observers.metrics.registry).decode()


@pytest.mark.looptime  # a virtual clock: the lateness is exactly what was set up
async def test_requeue_delay_is_measured_from_start_with_an_exemplar(
    observers: RuntimeMetrics,
) -> None:
    late = _context(due_at=asyncio.get_running_loop().time() - 0.3)
    late.span = NonRecordingSpan(SpanContext(trace_id=TRACE_ID, span_id=1, is_remote=False))
    early = _context(due_at=asyncio.get_running_loop().time() + 5)  # clock skew: clamp to 0
    plain = _context()
    await asyncio.sleep(2.0)  # a long reconcile: the delay is still its start's lateness
    for ctx in (late, early, plain):
        observers.reconcile(_finished(ctx, Outcome.SUCCESS, duration=2.0))
    delay = "wukong_requeue_delay_seconds"
    assert _value(observers, f"{delay}_count", controller="c") == 2
    assert _value(observers, f"{delay}_sum", controller="c") == pytest.approx(0.3)
    assert _value(observers, f"{delay}_bucket", controller="c", le="0.001") == 1
    # The late requeue's bucket and the budget histogram lead to its trace.
    lines = openmetrics(observers.metrics.registry).decode().splitlines()
    exemplar = f'# {{trace_id="{TRACE_ID:032x}"}}'
    assert any(line.startswith(f"{delay}_bucket") and exemplar in line for line in lines)
    budget = "wukong_reconcile_budget_used_ratio_bucket"
    assert any(line.startswith(budget) and exemplar in line for line in lines)


async def test_api_calls_codes_and_cancellation_reasons(observers: RuntimeMetrics) -> None:
    timeout = ApiTimeout(verb="get", path="/", timeout=1.0)
    cancelled = asyncio.CancelledError()
    ctx = _context()
    ctx.span = NonRecordingSpan(SpanContext(trace_id=TRACE_ID, span_id=1, is_remote=False))
    observers.api_call(_call(status=200))
    observers.api_call(_call(status=404))
    observers.api_call(_call(status=None, error=timeout, reason=CancelReason.API_TIMEOUT))
    observers.api_call(_call(status=None, error=cancelled, reason=CancelReason.PARENT_CANCELLED))
    observers.api_call(
        _call(status=None, error=cancelled, reason=CancelReason.DEADLINE_EXCEEDED, reconcile=ctx)
    )

    requests = "rest_client_requests_total"
    host = "127.0.0.1:6443"
    assert _value(observers, requests, code="200", method="GET", host=host) == 1
    assert _value(observers, requests, code="404", method="GET", host=host) == 1
    assert _value(observers, requests, code="<error>", method="GET", host=host) == 3
    duration = "rest_client_request_duration_seconds_count"
    assert _value(observers, duration, verb="GET", host=host) == 5  # the method, as client-go
    cancellations = "wukong_api_request_cancellations_total"
    labels = {"verb": "get", "resource": "configmaps"}
    assert _value(observers, cancellations, **labels, reason="api_timeout") == 1
    assert _value(observers, cancellations, **labels, reason="parent_cancelled") == 1
    assert _value(observers, cancellations, **labels, reason="deadline_exceeded") == 1
    # The call made for a traced reconcile carries its trace as the exemplar.
    text = openmetrics(observers.metrics.registry).decode()
    assert text.count(f'trace_id="{TRACE_ID:032x}"') == 1


@pytest.mark.looptime  # a virtual clock: durations are exact
async def test_queue_and_controller_state(observers: RuntimeMetrics) -> None:
    manager = Manager(
        client=_client(), observers=[observers], options=ManagerOptions(block_warning_seconds=None)
    )
    running = manager.add(
        Controller(
            name="cms",
            reconciler=_Idle(),
            primary=CONFIGMAPS,
            options=ControllerOptions(max_concurrent_reconciles=3),
        )
    )
    assert isinstance(running, RunningController)
    queue = running.queue
    queue.add(Request("ns", "a"))
    queue.add(Request("ns", "a"))  # deduplicated: not an add
    queue.add(Request("ns", "b"))
    await asyncio.sleep(0.25)
    ticket = await queue.get()
    queue.add_rate_limited(Request("ns", "c"))
    await asyncio.sleep(1.5)

    labels = {"name": "cms", "controller": "cms"}
    # a, b and c once its retry delay passed; the duplicate a was merged.
    assert _value(observers, "workqueue_adds_total", **labels) == 3
    assert _value(observers, "workqueue_retries_total", **labels) == 1
    assert _value(observers, "workqueue_queue_duration_seconds_count", **labels) == 1
    assert _value(observers, "workqueue_queue_duration_seconds_sum", **labels) == pytest.approx(
        0.25
    )
    # b, and c once it came due; no priorities, as controller-runtime's plain queue.
    assert _value(observers, "workqueue_depth", **labels, priority="") == 2
    assert _value(observers, "workqueue_unfinished_work_seconds", **labels) == pytest.approx(1.5)
    assert _value(
        observers, "workqueue_longest_running_processor_seconds", **labels
    ) == pytest.approx(1.5)
    max_concurrent = "controller_runtime_max_concurrent_reconciles"
    assert _value(observers, max_concurrent, controller="cms") == 3
    assert _value(observers, "controller_runtime_active_workers", controller="cms") == 0

    queue.done(ticket.key)
    assert _value(observers, "workqueue_work_duration_seconds_count", **labels) == 1
    assert _value(observers, "workqueue_work_duration_seconds_sum", **labels) == pytest.approx(1.5)
    assert _value(observers, "workqueue_longest_running_processor_seconds", **labels) == 0
    queue.shut_down()


def test_leader_status(observers: RuntimeMetrics) -> None:
    status = "leader_election_master_status"
    for leading, value in ((False, 0), (True, 1), (False, 0)):
        observers.leadership_changed("wukong-lock", leading)
        assert _value(observers, status, name="wukong-lock") == value


def test_watch_restarts_relists_and_standbys_by_cause(observers: RuntimeMetrics) -> None:
    for cause in ("gone", "timeout", "error", "gone"):
        observers.watch_restarted("configmaps", cause)
    observers.relisted("configmaps", "gone")
    observers.standing_by("wukong-lock")
    observers.standing_by("wukong-lock")

    restarts = "wukong_watch_restarts_total"
    assert _value(observers, restarts, resource="configmaps", cause="gone") == 2
    assert _value(observers, restarts, resource="configmaps", cause="timeout") == 1
    assert _value(observers, restarts, resource="configmaps", cause="error") == 1
    relists = "wukong_informer_relists_total"
    assert _value(observers, relists, resource="configmaps", cause="gone") == 1
    assert _value(observers, "wukong_leader_standbys_total", name="wukong-lock") == 2


class _Broken(RuntimeObserver):
    name = "broken"

    def queue_added(self, queue: str) -> None:
        raise RuntimeError("observer bug")


async def test_observers_see_controllers_added_later_and_survive_a_broken_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = RuntimeMetrics()
    manager = Manager(
        client=_client(),
        observers=[_Broken(), metrics],
        options=ManagerOptions(block_warning_seconds=None),
    )
    running = manager.add(Controller(name="cms", reconciler=_Idle(), primary=CONFIGMAPS))
    assert isinstance(running, RunningController)
    # Series exist at 0 from the start (controller-runtime's initMetrics), not only
    # after the first error or retry.
    total = "controller_runtime_reconcile_total"
    for result in ("success", "error", "requeue", "requeue_after"):
        assert _value(metrics, total, controller="cms", result=result) == 0
    assert _value(metrics, "controller_runtime_reconcile_errors_total", controller="cms") == 0
    assert _value(metrics, "workqueue_retries_total", name="cms", controller="cms") == 0
    running.enqueue(Request("ns", "a"))
    running.enqueue(Request("ns", "b"))
    # The broken observer did not stop the add, nor the metrics observer after it.
    assert running.queue_depth() == 2
    assert _value(metrics, "workqueue_adds_total", name="cms", controller="cms") == 2
    assert _value(metrics, "workqueue_depth", name="cms", controller="cms", priority="") == 2
    # Counted each time, logged once.
    assert _value(metrics, "wukong_observer_failures_total", observer="broken") == 2
    assert manager.observer_failures == 2
    logged = [r for r in caplog.records if "observer broken failed in queue_added" in r.message]
    assert len(logged) == 1 and logged[0].exc_info is not None
    running.queue.shut_down()


async def test_server_negotiates_the_format(observers: RuntimeMetrics) -> None:
    ctx = _context()
    ctx.span = NonRecordingSpan(SpanContext(trace_id=TRACE_ID, span_id=1, is_remote=False))
    observers.reconcile(_finished(ctx, Outcome.SUCCESS, duration=0.07))
    server = MetricsServer(registry=observers.metrics.registry)
    port = await server.start("127.0.0.1:0")
    try:

        def scrape(accept: str | None) -> tuple[str, str]:
            headers = {"Accept": accept} if accept else {}
            request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.headers["Content-Type"], response.read().decode()

        content_type, text = await asyncio.to_thread(scrape, None)
        assert content_type.startswith("text/plain; version=0.0.4")
        assert 'controller_runtime_reconcile_total{controller="c",result="success"} 1.0' in (
            text.splitlines()
        )
        assert "trace_id" not in text  # the classic format has no exemplars
        content_type, text = await asyncio.to_thread(
            scrape, "application/openmetrics-text; version=1.0.0,text/plain;q=0.5"
        )
        assert content_type.startswith("application/openmetrics-text")
        assert text.endswith("# EOF\n")
        assert f'trace_id="{TRACE_ID:032x}"' in text
    finally:
        await server.stop()


class Allows:
    async def validate(self, request: AdmissionRequest) -> Admission:
        return Admission.allow()


async def test_a_webhook_is_served_at_0_from_its_registration(observers: RuntimeMetrics) -> None:
    # As controller-runtime's InstrumentedHook: requests for codes 200 and 500, in flight.
    WebhookServer(client=_client(), validators={"/validate": Allows()}, observer=observers)
    text = generate_latest(observers.metrics.registry).decode()
    requests = {
        (labels["webhook"], labels["code"]): value
        for labels, value in metric_samples(text, "controller_runtime_webhook_requests_total")
    }
    assert requests == {("/validate", "200"): 0.0, ("/validate", "500"): 0.0}
    in_flight = metric_samples(text, "controller_runtime_webhook_requests_in_flight")
    assert in_flight == [({"webhook": "/validate"}, 0.0)]
    # The latency histogram's series come with the first request, as there.
    assert metric_samples(text, "controller_runtime_webhook_latency_seconds_count") == []
