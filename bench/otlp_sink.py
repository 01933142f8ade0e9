"""An OTLP endpoint in its own process, so receiving spans costs the benchmark nothing.

The telemetry benchmark measures the CPU of the process that reconciles; a
receiver running inside it (decoding every span it exports) would be billed
to tracing. This one runs apart, counts the spans it receives and, on SIGTERM,
prints the count so the benchmark can check that every span arrived. It speaks
OTLP/gRPC (the chart's `tracing.protocol`, the default) or OTLP/HTTP.

    python bench/otlp_sink.py [grpc|http/protobuf]  # prints "listening <port>",
                                                    # then the count at exit
"""

import signal
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_count = 0
_lock = threading.Lock()
_REPLY = ExportTraceServiceResponse().SerializeToString()


def _received(request: ExportTraceServiceRequest) -> None:
    global _count
    spans = sum(
        len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans
    )
    with _lock:
        _count += spans


class Handler(BaseHTTPRequestHandler):
    # Keeps the exporter's connection open between posts, as an OpenTelemetry
    # Collector does (HTTP/1.0 would bill every export a new connection).
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        _received(request)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(_REPLY)))
        self.end_headers()
        self.wfile.write(_REPLY)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(  # the service's method name
        self, request: ExportTraceServiceRequest, context: Any
    ) -> ExportTraceServiceResponse:
        _received(request)
        return ExportTraceServiceResponse()


def main() -> None:
    protocol = sys.argv[1] if len(sys.argv) > 1 else "grpc"
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    if protocol == "grpc":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        print(f"listening {port}", flush=True)
        stopped.wait()
        server.stop(grace=1).wait()
    elif protocol == "http/protobuf":
        http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=http.serve_forever, daemon=True).start()
        print(f"listening {http.server_address[1]}", flush=True)
        stopped.wait()
        http.shutdown()
    else:
        raise SystemExit(f"unsupported OTLP protocol {protocol!r}: grpc or http/protobuf")
    print(f"spans {_count}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
