"""Traces read back from Jaeger's query API.

`JaegerQuery` reads the JSON of `/api/traces/{id}` and `/api/traces?service=...`
(the API Jaeger's UI uses, v1 and v2 alike) into `JaegerSpan`s: in that model
a span's parent is its CHILD_OF reference and an OTLP link a FOLLOWS_FROM one.
"""

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from wukong.errors import UserError


class JaegerError(UserError):
    """Jaeger's query API answered with an error."""


@dataclass(frozen=True, kw_only=True)
class JaegerSpan:
    """One span as Jaeger's query API returns it (ids in lowercase hex)."""

    trace_id: str
    span_id: str
    service: str
    name: str
    parent: str | None  # the CHILD_OF reference's span id
    links: tuple[tuple[str, str], ...]  # FOLLOWS_FROM references: (trace id, span id)
    tags: dict[str, Any]
    start_us: int
    duration_us: int

    @property
    def end_us(self) -> int:
        return self.start_us + self.duration_us


class JaegerQuery:
    """Jaeger's query API at `query_url` (e.g. http://jaeger-query:16686)."""

    def __init__(self, query_url: str) -> None:
        self.query_url = query_url.rstrip("/")
        # Never through an http_proxy from the environment: local or port-forwarded.
        self._open = urllib.request.build_opener(urllib.request.ProxyHandler({})).open

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        """The JSON answer's `data`, None on 404 (a trace not stored yet) or no answer."""
        url = f"{self.query_url}{path}"
        if params:
            url += f"?{urllib.parse.urlencode(params)}"
        try:
            with self._open(url, timeout=10) as response:
                return json.loads(response.read())["data"]
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise JaegerError(f"jaeger query {path} answered {exc.code}") from None
        except OSError:
            return None

    def services(self) -> list[str]:
        """The services that have sent spans."""
        return list(self._get("/api/services") or [])

    def trace(self, trace_id: str) -> list[JaegerSpan]:
        """The spans stored for trace `trace_id` (hex), none if it is unknown."""
        data = self._get(f"/api/traces/{trace_id}")
        return [span for found in data or [] for span in _spans(found)]

    def traces(
        self,
        *,
        service: str,
        operation: str | None = None,
        tags: dict[str, str] | None = None,
        limit: int = 100,
        lookback: str = "1h",
        start_us: int | None = None,
    ) -> list[list[JaegerSpan]]:
        """The recent traces with a span of `service` (and `operation`, `tags`), each
        whole; `start_us` (epoch microseconds) bounds them from below."""
        params = {"service": service, "limit": str(limit), "lookback": lookback}
        if operation is not None:
            params["operation"] = operation
        if tags:
            params["tags"] = json.dumps(tags)
        if start_us is not None:
            params["start"] = str(start_us)
        return [_spans(found) for found in self._get("/api/traces", params) or []]


def _spans(found: dict[str, Any]) -> list[JaegerSpan]:
    services = {key: process["serviceName"] for key, process in found["processes"].items()}
    result = []
    for span in found["spans"]:
        references = span.get("references") or []
        result.append(
            JaegerSpan(
                trace_id=_trace_id(span["traceID"]),
                span_id=_span_id(span["spanID"]),
                service=services[span["processID"]],
                name=span["operationName"],
                parent=next(
                    (_span_id(ref["spanID"]) for ref in references if ref["refType"] == "CHILD_OF"),
                    None,
                ),
                links=tuple(
                    (_trace_id(ref["traceID"]), _span_id(ref["spanID"]))
                    for ref in references
                    if ref["refType"] == "FOLLOWS_FROM"
                ),
                tags={tag["key"]: tag["value"] for tag in span.get("tags") or []},
                start_us=span["startTime"],
                duration_us=span["duration"],
            )
        )
    return result


# The query API prints ids as numbers in hex, without their leading zeros.
def _trace_id(text: str) -> str:
    return text.zfill(32)


def _span_id(text: str) -> str:
    return text.zfill(16)
