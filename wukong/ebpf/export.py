"""Individual cancellations as OpenTelemetry span events, rate-limited.

Counting every cancellation is cheap (the metric); exporting each one is not,
and during a storm there may be thousands a second. At most `per_second`
records become a span `cancellation <runtime>` with the cause, the caller,
the stack, the pod and how many cancellations the record stands for (Go
records aggregate a call site's, see records.py); the rest are counted in
`dropped`.
"""

import logging
import time
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Link, SpanContext, TraceFlags

from wukong.ebpf.records import Cancellation

log = logging.getLogger(__name__)


class CancellationExporter:
    def __init__(self, *, provider: TracerProvider, per_second: float = 20.0) -> None:
        self._tracer = provider.get_tracer("wukong.ebpf")
        self._rate = per_second
        self._tokens = per_second
        self._last = time.monotonic()
        self.dropped = 0

    def __call__(self, cancellation: Cancellation) -> None:
        now = time.monotonic()
        self._tokens = min(self._rate, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1:
            self.dropped += 1
            return
        self._tokens -= 1
        attributes: dict[str, Any] = {
            "wukong.cancel.reason": cancellation.reason,
            "process.pid": cancellation.pid,
            "process.command": cancellation.comm,
            "wukong.runtime": cancellation.runtime,
            "wukong.cancellations.count": cancellation.count,
            "k8s.node.name": cancellation.node,
            "k8s.namespace.name": cancellation.namespace,
            "k8s.pod.name": cancellation.pod,
            "k8s.container.name": cancellation.container,
        }
        if cancellation.runtime == "go":
            attributes |= {
                "go.context.error": cancellation.error,
                "go.context.root": cancellation.root,
                "go.context.cause": cancellation.cause,
                "code.function": cancellation.caller,
                "code.stacktrace": "\n".join(cancellation.stack),
            }
        else:
            attributes |= {
                "wukong.controller": cancellation.controller,
                "wukong.object.key": cancellation.object_key,
                "wukong.object.namespace": cancellation.object_namespace,
                "wukong.reconcile.elapsed_ms": cancellation.elapsed_ms or 0,
                "wukong.reconcile.timeout_ms": cancellation.budget_ms or 0,
            }
        start = int(cancellation.time * 1e9)
        span = self._tracer.start_span(
            f"cancellation {cancellation.runtime}",
            start_time=start,
            attributes=attributes,
            links=_reconcile_link(cancellation),
        )
        span.add_event("cancelled", {"wukong.cancel.reason": cancellation.reason}, start)
        span.end(end_time=start)


def _reconcile_link(cancellation: Cancellation) -> list[Link]:
    """A link to the cancelled reconcile's own span, when the operator reported it."""
    if not (cancellation.trace_id and cancellation.span_id):
        return []
    try:
        context = SpanContext(
            trace_id=int(cancellation.trace_id, 16),
            span_id=int(cancellation.span_id, 16),
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
    except ValueError:  # cut or garbled in the probe's fixed-size buffer
        log.debug("unreadable span ids %r/%r", cancellation.trace_id, cancellation.span_id)
        return []
    return [Link(context, {"wukong.link": "reconcile"})]
