"""Where a slow API call's time went, from its joined trace.

The operator's span of an API call ends at the client: it holds the network,
any proxy, the API server's queueing and filters, its admission chain and its
storage. kube-apiserver traces itself; its request span joins the operator's
trace as a sibling of the call's span (a privileged client: a child of the
reconcile span current at the call, in the same trace) or starts a trace of
its own that links to that reconcile span (any other client). Under it hang
its admission webhook calls and its etcd calls (docs/tracing.md).

`split_call` divides the call's time into:

- outside the server: the client span minus the server's request span (the
  network, proxies, the client's own queueing);
- admission: the server's webhook and admission spans;
- storage: its etcd calls (`etcdserverpb.*`, the gRPC client spans);
- the rest of the server: its filters, serialization, priority and fairness;

and names the part that dominates.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass

from wukong.diagnose.jaeger import JaegerQuery, JaegerSpan

APISERVER_SERVICE = "apiserver"  # kube-apiserver's service.name
OUTSIDE = "outside the server"
ADMISSION = "admission"
STORAGE = "storage"
SERVER_OTHER = "rest of the server"

_ADMISSION = re.compile(r"webhook|admission|admit", re.IGNORECASE)
_STORAGE_PREFIX = "etcdserverpb."
# Clocks of the operator's and the API server's hosts differ a little; a server
# span may start this much before the client's span and still be its call's.
CLOCK_SLACK_US = 50_000


@dataclass(frozen=True, kw_only=True)
class CallSplit:
    """One API call's time, split by where it was spent (milliseconds)."""

    call: str  # the operator's span name, e.g. "create persistentvolumeclaims"
    trace_id: str
    total_ms: float
    server_span: str | None  # the API server's request span joined to it, if found
    outside_ms: float = 0.0
    admission_ms: float = 0.0
    storage_ms: float = 0.0
    server_other_ms: float = 0.0

    @property
    def parts(self) -> dict[str, float]:
        return {
            OUTSIDE: self.outside_ms,
            ADMISSION: self.admission_ms,
            STORAGE: self.storage_ms,
            SERVER_OTHER: self.server_other_ms,
        }

    @property
    def dominant(self) -> str | None:
        """The part with the most time; None when the server's side was not found."""
        if self.server_span is None:
            return None
        parts = self.parts
        return max(parts, key=lambda name: parts[name])

    def describe(self) -> str:
        head = f"{self.call} {self.total_ms:.0f} ms (trace {self.trace_id})"
        if self.server_span is None:
            return f"{head}: no span of the API server joined to it"
        parts = ", ".join(f"{name} {ms:.0f} ms" for name, ms in self.parts.items())
        return f"{head}: {parts}; {self.dominant} dominates"


def is_api_call(span: JaegerSpan) -> bool:
    """The operator's span of one API call (the runtime tags it with the verb)."""
    return "k8s.verb" in span.tags


def is_server_request(span: JaegerSpan) -> bool:
    return span.service == APISERVER_SERVICE and span.tags.get("span.kind") == "server"


def server_span_for(call: JaegerSpan, candidates: Iterable[JaegerSpan]) -> JaegerSpan | None:
    """The API server's request span of `call` among `candidates`: joined to the span
    current at the call (the call's parent, or the call itself) as its parent or by a
    link, inside the call's time, with the same HTTP method; the closest in time."""
    joined_to = {(call.trace_id, call.span_id)}
    if call.parent is not None:
        joined_to.add((call.trace_id, call.parent))
    method = str(call.tags.get("http.request.method", "")).upper()
    found = []
    for span in candidates:
        if not is_server_request(span):
            continue
        parent = (span.trace_id, span.parent) if span.parent else None
        if parent not in joined_to and not joined_to.intersection(span.links):
            continue
        if not (
            call.start_us - CLOCK_SLACK_US <= span.start_us
            and span.end_us <= call.end_us + CLOCK_SLACK_US
        ):
            continue
        server_method = str(span.tags.get("http.method", span.tags.get("http.request.method", "")))
        if method and server_method and server_method.upper() != method:
            continue
        found.append(span)
    return min(found, key=lambda span: abs(span.start_us - call.start_us), default=None)


def split_call(call: JaegerSpan, server: JaegerSpan | None, trace: list[JaegerSpan]) -> CallSplit:
    """Split `call`'s time given its server span and the spans of the server's trace."""
    total_us = call.duration_us
    if server is None:
        return CallSplit(
            call=call.name, trace_id=call.trace_id, total_ms=total_us / 1000, server_span=None
        )
    below = _descendants(trace, server)
    admission_us = _covered(span for span in below if _ADMISSION.search(span.name))
    storage_us = _covered(
        span
        for span in below
        if span.name.startswith(_STORAGE_PREFIX) and not _under_admission(span, below)
    )
    server_us = server.duration_us
    # Parallel or overlapping children never count more than the server span itself.
    admission_us = min(admission_us, server_us)
    storage_us = min(storage_us, server_us - admission_us)
    return CallSplit(
        call=call.name,
        trace_id=call.trace_id,
        total_ms=total_us / 1000,
        server_span=server.name,
        outside_ms=max(0, total_us - server_us) / 1000,
        admission_ms=admission_us / 1000,
        storage_ms=storage_us / 1000,
        server_other_ms=max(0, server_us - admission_us - storage_us) / 1000,
    )


def slowest_calls(
    jaeger: JaegerQuery, *, service: str, start_us: int, top: int = 3, limit: int = 200
) -> list[CallSplit]:
    """The `top` slowest API calls of `service` since `start_us`, each split."""
    traces = jaeger.traces(service=service, start_us=start_us, limit=limit)
    calls = sorted(
        (
            span
            for spans in traces
            for span in spans
            if span.service == service and is_api_call(span) and span.start_us >= start_us
        ),
        key=lambda span: -span.duration_us,
    )[:top]
    by_trace = {spans[0].trace_id: spans for spans in traces if spans}
    server_traces: list[list[JaegerSpan]] | None = None
    splits = []
    for call in calls:
        own = by_trace.get(call.trace_id, [])
        server = server_span_for(call, own)
        trace = own
        if server is None:
            # Not a privileged client: the server's trace is its own, linked to ours.
            if server_traces is None:
                server_traces = jaeger.traces(
                    service=APISERVER_SERVICE, start_us=start_us, limit=limit * 10
                )
            for spans in server_traces:
                server = server_span_for(call, spans)
                if server is not None:
                    trace = spans
                    break
        splits.append(split_call(call, server, trace))
    return splits


def _descendants(spans: list[JaegerSpan], root: JaegerSpan) -> list[JaegerSpan]:
    children: dict[str, list[JaegerSpan]] = {}
    for span in spans:
        if span.parent is not None:
            children.setdefault(span.parent, []).append(span)
    found, stack = [], [root.span_id]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child.span_id)
    return found


def _under_admission(span: JaegerSpan, spans: list[JaegerSpan]) -> bool:
    by_id = {s.span_id: s for s in spans}
    parent = by_id.get(span.parent or "")
    while parent is not None:
        if _ADMISSION.search(parent.name):
            return True
        parent = by_id.get(parent.parent or "")
    return False


def _covered(spans: Iterable[JaegerSpan]) -> int:
    """Microseconds covered by the union of the spans' intervals (nested or
    overlapping spans count once)."""
    total, end = 0, None
    for span in sorted(spans, key=lambda s: s.start_us):
        if end is None or span.start_us >= end:
            total += span.duration_us
            end = span.end_us
        elif span.end_us > end:
            total += span.end_us - end
            end = span.end_us
    return total
