"""Reconcile spans on the wire: a real OTLP/HTTP export decoded from protobuf.

Three reconciles: a normal one (that requeues itself once, so the second span
links to the first), one cancelled at its deadline, and one cancelled by
shutdown. Each must arrive with the contract's attributes, an explicit status
and its events; log lines must carry the same trace id.
"""

import asyncio
import datetime
import io
import json
import logging

import pytest
from opentelemetry import trace

from tests.contract import RECONCILE_SPAN_ATTRIBUTES
from tests.integration.helpers import RecordingObserver, running
from tests.polling import eventually
from wukong.runtime import (
    Client,
    Controller,
    ControllerOptions,
    Manager,
    ManagerOptions,
    ReconcileContext,
    Request,
    Result,
)
from wukong.runtime.observe import Outcome
from wukong.runtime.resources import CONFIGMAPS
from wukong.tracing.logs import JsonFormatter
from wukong.tracing.receiver import OtlpReceiver, ReceivedSpan
from wukong.tracing.setup import configure_tracing
from wukong.tracing.spans import ReconcileTracer


def _traced_work(tracer: trace.Tracer, name: str) -> None:
    with tracer.start_as_current_span(name):
        pass


async def _traced_task(tracer: trace.Tracer) -> None:
    _traced_work(tracer, "in a child task")


class Scripted:
    def __init__(self, tracer: trace.Tracer) -> None:
        self.ok_runs = 0
        self.tracer = tracer

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        ctx.logger.info("reconciling")
        if ctx.controller == "deadline":
            if request.name == "slow":
                await asyncio.sleep(30)
            return Result()
        if request.name == "ok":
            logging.getLogger("user.code").info("inside the reconcile")
            # The reconcile's span is current across a thread hand-off and a child task.
            await asyncio.to_thread(_traced_work, self.tracer, "in a thread")
            await asyncio.create_task(_traced_task(self.tracer))
            await ctx.client.get(CONFIGMAPS, request.name, namespace=request.namespace)
            self.ok_runs += 1
            return Result(requeue_after=0.2) if self.ok_runs == 1 else Result()
        if request.name == "park":
            await asyncio.sleep(3600)
        return Result()


def _spans(spans: list[ReceivedSpan], controller: str, name: str) -> list[ReceivedSpan]:
    return sorted(
        (
            s
            for s in spans
            if s.name == "reconcile ConfigMap"
            and s.attributes.get("wukong.controller") == controller
            and s.attributes.get("wukong.object.name") == name
        ),
        key=lambda s: s.start_ns,
    )


async def test_reconcile_spans_over_otlp(
    client: Client, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = OtlpReceiver()
    receiver.start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "wukong-test")
    monkeypatch.setenv("K8S_POD_NAME", "wukong-0")
    provider = configure_tracing()
    assert provider is not None

    logs = io.StringIO()
    handler = logging.StreamHandler(logs)
    handler.setFormatter(JsonFormatter())
    for name in ("wukong", "user"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.DEBUG)

    recorder = RecordingObserver()
    reconciler = Scripted(provider.get_tracer("user.code"))
    manager = Manager(
        client=client,
        observers=[recorder, ReconcileTracer(provider=provider)],
        options=ManagerOptions(namespace=namespace),
    )
    manager.add(
        Controller(
            name="main",
            reconciler=reconciler,
            primary=CONFIGMAPS,
            options=ControllerOptions(max_concurrent_reconciles=2, reconcile_timeout=60),
        )
    )
    manager.add(
        Controller(
            name="deadline",
            reconciler=reconciler,
            primary=CONFIGMAPS,
            options=ControllerOptions(reconcile_timeout=1.0),
        )
    )
    try:
        async with running(manager):
            for name in ("ok", "slow", "park"):
                await client.create(
                    CONFIGMAPS, {"metadata": {"name": name, "namespace": namespace}}
                )

            def seen(controller: str, name: str, outcome: Outcome) -> bool:
                return any(
                    e.request.name == name and e.outcome is outcome
                    for e in recorder.finished(controller=controller)
                )

            await eventually(
                lambda: (
                    reconciler.ok_runs >= 2
                    and seen("main", "ok", Outcome.SUCCESS)
                    and seen("deadline", "slow", Outcome.CANCELLED)
                    and any(c.request.name == "park" for c in manager.controllers[0].in_flight())
                ),
                timeout=30,
                what="the three scripted reconciles",
            )
    finally:
        await asyncio.to_thread(provider.force_flush)
        provider.shutdown()
        for name in ("wukong", "user"):
            logging.getLogger(name).removeHandler(handler)
        receiver.stop()

    spans = receiver.snapshot()
    first, second = _spans(spans, "main", "ok")[:2]
    for span in (first, second):
        assert RECONCILE_SPAN_ATTRIBUTES <= span.attributes.keys()
        assert span.status == "OK"
        assert span.name == "reconcile ConfigMap"
        assert span.attributes["k8s.namespace.name"] == namespace
        assert span.attributes["wukong.object.name"] == "ok"
        assert span.attributes["wukong.controller"] == "main"
        # The deadline is the span's start plus the timeout (RFC 3339, to the ms).
        deadline = datetime.datetime.fromisoformat(span.attributes["wukong.reconcile.deadline"])
        start = datetime.datetime.fromtimestamp(span.start_ns / 1e9, tz=datetime.UTC)
        assert (deadline - start).total_seconds() == pytest.approx(60.0, abs=0.01)
        remaining = span.attributes["wukong.reconcile.budget_remaining_ms"]
        assert remaining == pytest.approx(60000 - (span.end_ns - span.start_ns) / 1e6, abs=50)
    assert first.resource["service.name"] == "wukong-test"
    assert first.resource["k8s.pod.name"] == "wukong-0"
    assert first.attributes["wukong.requeue.after_ms"] == pytest.approx(200)
    assert first.attributes["wukong.reconcile.timeout_ms"] == 60000
    # The requeued reconcile links back to the one that asked for it, and knows how late it ran.
    assert [(link[1], link[2]["wukong.link"]) for link in second.links] == [
        (first.span_id, "requeued_by")
    ]
    # It started when it was due (200 ms after the first asked) plus that lateness.
    lateness_ms = second.attributes["wukong.requeue.delay_ms"]
    assert 0 <= lateness_ms < 1000
    gap_ms = (second.start_ns - first.end_ns) / 1e6
    assert gap_ms == pytest.approx(200 + lateness_ms, abs=20)
    for name in ("in a thread", "in a child task"):
        assert next(s.parent_span_id for s in spans if s.name == name) == first.span_id
    # The API call is a child span of its reconcile.
    gets = [s for s in spans if s.name == "get configmaps" and s.parent_span_id == first.span_id]
    assert gets and gets[0].attributes["http.response.status_code"] == 200

    slow = _spans(spans, "deadline", "slow")[0]
    assert slow.status == "ERROR"
    assert slow.attributes["wukong.cancel.reason"] == "deadline_exceeded"
    assert slow.attributes["wukong.reconcile.budget_remaining_ms"] <= 0
    assert [name for name, _ in slow.events] == ["deadline exceeded", "cancelled"]

    park = _spans(spans, "main", "park")[-1]
    assert park.status == "OK"  # stopped on purpose, explicitly recorded
    assert park.attributes["wukong.cancel.reason"] == "shutdown"
    assert ("cancelled", {"wukong.cancel.reason": "shutdown"}) in park.events

    # Log lines carry the trace id of their reconcile's span, whoever logs them.
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    runtime_line = next(
        line
        for line in lines
        if line["message"] == "reconciling" and line.get("object_name") == "ok"
    )
    user_line = next(line for line in lines if line["message"] == "inside the reconcile")
    ok_traces = {first.trace_id, second.trace_id}
    assert runtime_line["trace_id"] in ok_traces
    assert user_line["trace_id"] in ok_traces
    cancelled_line = next(
        line for line in lines if line.get("cancel_reason") == "deadline_exceeded"
    )
    assert cancelled_line["trace_id"] == slow.trace_id and cancelled_line["level"] == "DEBUG"
