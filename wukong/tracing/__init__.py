"""OpenTelemetry tracing for reconciles, fed by the runtime's lifecycle events.

- `setup.configure_tracing()`: a TracerProvider from the standard `OTEL_*`
  environment, or None (tracing fully off) when no exporter is configured.
- `spans.ReconcileTracer`: the RuntimeObserver that turns reconcile events and
  API calls into spans (`Manager(observers=[ReconcileTracer(provider=...)])`),
  made through the SDK's public API once a reconcile's trace is kept.
- `sampling.TailSampling`: which traces are kept, decided as each reconcile
  ends (every cancelled, failed or slow one; the others at a ratio).
- `logs.configure_logging()`: JSON or console log lines carrying trace/span ids.
- `receiver.OtlpReceiver`: a small OTLP/HTTP receiver that keeps spans, for
  tests and the demo.
"""
