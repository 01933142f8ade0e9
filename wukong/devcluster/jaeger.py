"""A real Jaeger v2 collecting traces locally, for tests and the demo.

`LocalJaeger` runs Jaeger's all-in-one program (`binaries.jaeger_binary`) with
an in-memory store, OTLP receivers over gRPC (`otlp_grpc`, host:port, what
kube-apiserver's TracingConfiguration takes) and HTTP (`otlp_http`, a URL for
`OTEL_EXPORTER_OTLP_ENDPOINT`), and its query API (`query_url`), each on a free
loopback port, with its config and log in a temporary directory. It runs as a
`processes.Component` like the control plane's processes; `stop()` ends it and
removes the directory.

Traces are read back through its query API (`trace`, `traces`, `services`:
`wukong.diagnose.jaeger.JaegerQuery`, what `wukong diagnose` reads a cluster's
Jaeger with).
"""

import shutil
import tempfile
import urllib.request
from pathlib import Path

import yaml

from wukong.devcluster import processes
from wukong.diagnose.jaeger import JaegerQuery, JaegerSpan

__all__ = ["JaegerSpan", "LocalJaeger", "config"]

# Never through an http_proxy from the environment: the address is local.
_open = urllib.request.build_opener(urllib.request.ProxyHandler({})).open


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


class LocalJaeger(JaegerQuery):
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
        # `query_url`: the query API (and the UI, when built with its assets).
        super().__init__(f"http://{host}:{ports['query_http']}")

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
