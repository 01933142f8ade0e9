"""A slow API call's time split by where it went, on hand-made joined traces: the
privileged client's (the server's span in the reconcile's trace) and the
ServiceAccount's (the server's span in a trace of its own, linked)."""

from dataclasses import replace
from typing import Any

from wukong.diagnose.jaeger import JaegerSpan
from wukong.diagnose.split import (
    ADMISSION,
    OUTSIDE,
    STORAGE,
    server_span_for,
    split_call,
)

RECONCILE_TRACE = "a" * 32
SERVER_TRACE = "b" * 32


def _span(
    span_id: str,
    name: str,
    start_ms: float,
    duration_ms: float,
    *,
    service: str = "apiserver",
    parent: str | None = None,
    trace_id: str = RECONCILE_TRACE,
    links: tuple[tuple[str, str], ...] = (),
    **tags: Any,
) -> JaegerSpan:
    return JaegerSpan(
        trace_id=trace_id,
        span_id=span_id.ljust(16, "0"),
        service=service,
        name=name,
        parent=parent.ljust(16, "0") if parent else None,
        links=links,
        tags=tags,
        start_us=int(start_ms * 1000),
        duration_us=int(duration_ms * 1000),
    )


def _call(start_ms: float, duration_ms: float, method: str = "POST") -> JaegerSpan:
    return _span(
        "c1",
        "create persistentvolumeclaims",
        start_ms,
        duration_ms,
        service="wukong-operator",
        parent="r1",
        **{"k8s.verb": "create", "http.request.method": method},
    )


def _server(start_ms: float, duration_ms: float, **where: Any) -> JaegerSpan:
    tags = {"span.kind": "server", "http.method": "POST"}
    return _span(
        "s1", "POST /api/v1/namespaces/{:namespace}/pvcs", start_ms, duration_ms, **where, **tags
    )


def test_a_latency_proxy_shows_as_time_outside_the_server() -> None:
    call = _call(0, 610)
    server = _server(300, 8, parent="r1")
    trace = [
        call,
        server,
        _span("e1", "Create etcd3", 302, 5, parent="s1"),
        _span("e2", "etcdserverpb.KV/Txn", 302.5, 4, parent="e1"),
    ]
    assert server_span_for(call, trace) == server
    split = split_call(call, server, trace)
    assert split.dominant == OUTSIDE
    assert (split.outside_ms, split.storage_ms, split.admission_ms) == (602, 4, 0)
    assert split.server_other_ms == 4
    assert "outside the server dominates" in split.describe()


def test_a_slow_etcd_shows_as_storage_in_the_linked_trace() -> None:
    call = _call(0, 900)
    server = _server(2, 895, trace_id=SERVER_TRACE, links=((RECONCILE_TRACE, "r1".ljust(16, "0")),))
    server_trace = [
        server,
        _span("w1", "Call validating webhook", 5, 20, parent="s1", trace_id=SERVER_TRACE),
        _span("w2", "HTTP POST", 6, 18, parent="w1", trace_id=SERVER_TRACE),
        _span("e1", "etcdserverpb.KV/Txn", 30, 800, parent="s1", trace_id=SERVER_TRACE),
        # Two reads in parallel count once.
        _span("e2", "etcdserverpb.KV/Range", 840, 40, parent="s1", trace_id=SERVER_TRACE),
        _span("e3", "etcdserverpb.KV/Range", 850, 30, parent="s1", trace_id=SERVER_TRACE),
    ]
    # Not in the reconcile's own trace...
    assert server_span_for(call, [call]) is None
    # ...but linked to its reconcile span.
    assert server_span_for(call, server_trace) == server
    split = split_call(call, server, server_trace)
    assert split.dominant == STORAGE
    assert (split.storage_ms, split.admission_ms, split.outside_ms) == (840, 20, 5)


def test_a_slow_webhook_shows_as_admission() -> None:
    call = _call(0, 400)
    server = _server(1, 398, parent="r1")
    trace = [
        call,
        server,
        _span("w1", "Call validating webhook", 5, 350, parent="s1"),
        _span("e1", "etcdserverpb.KV/Txn", 360, 5, parent="s1"),
    ]
    assert split_call(call, server, trace).dominant == ADMISSION


def test_other_calls_of_the_same_reconcile_are_not_joined() -> None:
    call = _call(100, 50)
    before = _server(10, 5, parent="r1")  # the reconcile's earlier call
    get = replace(_server(110, 5, parent="r1"), tags={"span.kind": "server", "http.method": "GET"})
    assert server_span_for(call, [before, get]) is None
    unjoined = split_call(call, None, [])
    assert unjoined.dominant is None
    assert "no span of the API server joined to it" in unjoined.describe()
