"""An OTLP/HTTP endpoint in its own process, so receiving spans costs the benchmark nothing.

The telemetry benchmark measures the CPU of the process that reconciles; a
receiver running inside it (decoding every span it exports) would be billed
to tracing. This one runs apart, counts the spans it receives and, on SIGTERM,
prints the count so the benchmark can check that every span arrived.

    python bench/otlp_sink.py  # prints "listening <port>", then the count at exit
"""

import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_count = 0
_lock = threading.Lock()
_REPLY = ExportTraceServiceResponse().SerializeToString()


class Handler(BaseHTTPRequestHandler):
    # Keeps the exporter's connection open between posts, as an OpenTelemetry
    # Collector does (HTTP/1.0 would bill every export a new connection).
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        global _count
        request = ExportTraceServiceRequest()
        request.ParseFromString(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        spans = sum(
            len(scope.spans)
            for resource in request.resource_spans
            for scope in resource.scope_spans
        )
        with _lock:
            _count += spans
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(_REPLY)))
        self.end_headers()
        self.wfile.write(_REPLY)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()
    print(f"spans {_count}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
