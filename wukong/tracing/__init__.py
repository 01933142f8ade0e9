"""OpenTelemetry tracing for reconciles, fed by the runtime's lifecycle events.

- `setup.configure_tracing()`: a TracerProvider from the standard `OTEL_*`
  environment, or None (tracing fully off) when no exporter is configured.
- `spans.ReconcileTracer`: turns lifecycle events and API calls into spans; the
  only integration point with the runtime (`tracer.instrument(manager)`).
- `logs.configure_logging()`: JSON or console log lines carrying trace/span ids.
- `receiver.OtlpReceiver`: a small OTLP/HTTP receiver that keeps spans, for
  tests and the demo.
"""
