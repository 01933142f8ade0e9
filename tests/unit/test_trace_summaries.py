"""Trace summaries of a drill's window, on hand-made spans: reconciles, cancellations by
reason, the slowest call and the API's share."""

from collections import Counter

from wukong.demo.telemetry import summarize_traces
from wukong.diagnose.jaeger import JaegerSpan


def _span(name: str, start_ms: float, end_ms: float, **tags: object) -> JaegerSpan:
    return JaegerSpan(
        trace_id="t",
        span_id=name,
        service="wukong-operator",
        name=name,
        parent=None,
        links=(),
        tags=dict(tags),
        start_us=int(start_ms * 1e3),
        duration_us=int((end_ms - start_ms) * 1e3),
    )


def test_trace_summary() -> None:
    spans = [
        _span("reconcile Wukong", 0, 100, **{"wukong.cancel.reason": "deadline_exceeded"}),
        _span("reconcile Wukong", 200, 300),
        _span("create persistentvolumeclaims", 10, 90, **{"k8s.verb": "create"}),
        _span("patch wukongs", 210, 230, **{"k8s.verb": "patch"}),
        _span("patch wukongs", 230, 240, **{"k8s.verb": "patch"}),
        _span("reconcile Wukong", -50, -10),  # before the window
    ]
    summary = summarize_traces(spans, since_us=0)
    assert summary.reconciles == 2
    assert summary.cancellations == Counter({"deadline_exceeded": 1})
    assert summary.dominant_reason == "deadline_exceeded"
    assert summary.slowest_call == "create persistentvolumeclaims"
    assert summary.api_p50_ms == 20.0
    assert round(summary.api_share, 2) == 0.55
