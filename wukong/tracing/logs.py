"""Log lines that carry the trace: JSON for machines, a readable console format for people.

Every line logged about a reconcile carries `trace_id` and `span_id` (from the
reconcile context, see `ReconcileLogger`, or else from the current span), plus
the controller, object and reconcile id, so a log search and a trace lead to
each other.
"""

import datetime
import json
import logging
import sys
from typing import Any, Literal, TextIO

from opentelemetry import trace

LogFormat = Literal["json", "console"]

# Fields the runtime puts on records, in the order they are shown.
_FIELDS = (
    "controller",
    "object_namespace",
    "object_name",
    "reconcile_id",
    "cancel_reason",
    "trace_id",
    "span_id",
)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = {key: getattr(record, key) for key in _FIELDS if getattr(record, key, None)}
    if "trace_id" not in fields:
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            fields["trace_id"] = f"{span_context.trace_id:032x}"
            fields["span_id"] = f"{span_context.span_id:016x}"
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        time = datetime.datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        fields = _fields(record)
        trace_id = fields.pop("trace_id", None)
        fields.pop("span_id", None)
        context = " ".join(f"{key}={value}" for key, value in fields.items())
        line = f"{time} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if context:
            line += f"  [{context}]"
        if trace_id:
            line += f"  trace={trace_id}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a record is emitted, as logging's last
    resort does: a stderr replaced after logging was configured (a test's capture,
    closed when the test ends) never turns a log line into a logging error."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> TextIO:
        return sys.stderr


def configure_logging(*, log_format: LogFormat = "console", level: int = logging.INFO) -> None:
    """Send the root logger's records to stderr in `log_format`."""
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter stays at WARNING even when Wukong logs at DEBUG.
    for noisy in ("asyncio", "aiohttp", "kubernetes_asyncio", "urllib3"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
