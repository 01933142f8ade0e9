"""Log lines carry the current trace, in JSON and on the console."""


def test_log_lines_carry_the_current_trace() -> None:
    import io
    import json
    import logging

    from opentelemetry.sdk.trace import TracerProvider

    from wukong.tracing.logs import ConsoleFormatter, JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.trace.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    with TracerProvider().get_tracer("t").start_as_current_span("work") as span:
        logger.info("hello", extra={"controller": "c"})
        console = ConsoleFormatter().format(
            logger.makeRecord("x", logging.INFO, "f", 1, "m", (), None)
        )
    logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert line["controller"] == "c" and line["message"] == "hello"
    assert f"trace={line['trace_id']}" in console
