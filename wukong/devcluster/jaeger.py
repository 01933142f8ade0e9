"""A real Jaeger v2 collecting traces locally, for tests and the demo.

`LocalJaeger` runs Jaeger's all-in-one program (`binaries.jaeger_binary`) with
an in-memory store, OTLP receivers over gRPC (`otlp_grpc`, host:port, what
kube-apiserver's TracingConfiguration takes) and HTTP (`otlp_http`, a URL for
`OTEL_EXPORTER_OTLP_ENDPOINT`), and its query API (`query_url`), each on a free
loopback port, with its config and log in a temporary directory. It runs as a
`processes.Component` like the control plane's processes; `stop()` ends it and
removes the directory.

Reading traces back goes through the query API's JSON (`/api/traces/{id}`,
`/api/traces?service=...`), turned into `JaegerSpan`s: in that model a span's
parent is its CHILD_OF reference and an OTLP link a FOLLOWS_FROM one.
"""

import json
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from wukong.devcluster import processes
from wukong.devcluster.errors import DevClusterError

# Never through an http_proxy from the environment: the address is local.
_open = urllib.request.build_opener(urllib.request.ProxyHandler({})).open


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


def config(*, host: str, otlp_grpc: int, otlp_http: int, query_http: int, query_grpc: int) -> str:
    """Jaeger's configuration (an OpenTelemetry Collector's): OTLP in, memory store, query out."""
    document = {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query"],
            "pipelines": {
                "traces": {"receivers": ["otlp"], "exporters": ["jaeger_storage_exporter"]}
            },
            # No telemetry of its own: a metrics port would collide between sessions.
            "telemetry": {
                "metrics": {"level": "none"},
                "traces": {"level": "none"},
                "logs": {"level": "info"},
            },
        },
        "extensions": {
            "jaeger_storage": {"backends": {"memory": {"memory": {"max_traces": 100_000}}}},
            "jaeger_query": {
                "storage": {"traces": "memory"},
                "enable_tracing": False,  # on by default, to the default OTLP endpoint
                "http": {"endpoint": f"{host}:{query_http}"},
                "grpc": {"endpoint": f"{host}:{query_grpc}"},
            },
        },
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"{host}:{otlp_grpc}"},
                    "http": {"endpoint": f"{host}:{otlp_http}"},
                }
            }
        },
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memory"}},
    }
    return yaml.safe_dump(document, sort_keys=False)


class LocalJaeger:
    """Jaeger v2 with an in-memory store on free loopback ports (see the module's docstring)."""

    def __init__(self, *, binary: Path, host: str = "127.0.0.1") -> None:
        self._binary = binary
        self._dir = Path(tempfile.mkdtemp(prefix="wukong-jaeger-"))
        self.component = processes.Component(name="jaeger", state_dir=self._dir)
        ports = {
            name: processes.free_port(host)
            for name in ("otlp_grpc", "otlp_http", "query_http", "query_grpc")
        }
        self._config = self._dir / "config.yaml"
        self._config.write_text(config(host=host, **ports))
        self.otlp_grpc = f"{host}:{ports['otlp_grpc']}"
        """host:port of the OTLP gRPC receiver."""
        self.otlp_http = f"http://{host}:{ports['otlp_http']}"
        """URL of the OTLP HTTP receiver (its traces at /v1/traces)."""
        self.query_url = f"http://{host}:{ports['query_http']}"
        """URL of the query API (and the UI, when built with its assets)."""

    @property
    def log_file(self) -> Path:
        return self.component.log_file

    def start(self, *, timeout: float = 30.0) -> None:
        proc = processes.start(self.component, [str(self._binary), f"--config={self._config}"])
        processes.wait_started(
            self.component,
            proc,
            self._ready,
            what="Jaeger's query API",
            timeout=timeout,
        )

    def stop(self) -> None:
        processes.stop(self.component)
        shutil.rmtree(self._dir, ignore_errors=True)

    def _ready(self) -> bool:
        try:
            with _open(f"{self.query_url}/api/services", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        """The JSON answer's `data`, None on 404 (a trace not stored yet) or no answer."""
        url = f"{self.query_url}{path}"
        if params:
            url += f"?{urllib.parse.urlencode(params)}"
        try:
            with _open(url, timeout=5) as response:
                return json.loads(response.read())["data"]
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise DevClusterError(f"jaeger query {path} answered {exc.code}") from None
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
    ) -> list[list[JaegerSpan]]:
        """The recent traces with a span of `service` (and `operation`, `tags`), each whole."""
        params = {"service": service, "limit": str(limit), "lookback": lookback}
        if operation is not None:
            params["operation"] = operation
        if tags:
            params["tags"] = json.dumps(tags)
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
