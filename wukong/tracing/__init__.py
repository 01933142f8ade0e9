"""OpenTelemetry tracing for reconciles, fed by the runtime's lifecycle events.

- `setup.configure_tracing()`: a TracerProvider from the standard `OTEL_*`
  environment, or None (tracing fully off) when no exporter is configured.
- `spans.ReconcileTracer`: the RuntimeObserver that turns reconcile events and
  API calls into spans (`Manager(observers=[ReconcileTracer(provider=...)])`).
- `recorder.SpanRecorder`: makes those spans as the SDK's tracer would (sampler,
  limits, processors), without most of its CPU per span.
- `otlp`: the SDK's OTLP span exporters (gRPC, HTTP) with a cheaper encoder,
  which `configure_tracing` uses.
- `logs.configure_logging()`: JSON or console log lines carrying trace/span ids.
- `receiver.OtlpReceiver`: a small OTLP/HTTP receiver that keeps spans, for
  tests and the demo.
"""
