"""OTLP span export with a cheaper encoder: spans straight to protobuf wire bytes.

The SDK's exporters encode a batch by building a protobuf object per span,
attribute, value, event and link (`encode_spans`), then serializing the tree:
about 65 us of CPU per reconcile (two spans), the largest single part of
tracing's cost in the profile (bench/RESULTS.md). `encode_spans` here writes
the same `ExportTraceServiceRequest` directly as bytes, about 3x cheaper, and
the two exporters below are the SDK's own (transport, retries, its metrics,
settings from OTEL_* variables) with only the encoding replaced:

- `HttpSpanExporter` (`http/protobuf`) posts the bytes as they are;
- `GrpcSpanExporter` (`grpc`) parses them once into the request message the
  gRPC stub wants (a parse in C, instead of the object tree built in Python).

The bytes are the SDK encoder's, byte for byte (tests/unit/test_otlp_encoding.py
compares them on spans with every kind of value, events, links and scopes).
"""

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as SdkGrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http._common import (
    RequestPayloadTooLargeError,
    _is_request_too_large,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as SdkHttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE
from opentelemetry.trace import SpanContext, SpanKind

_logger = logging.getLogger(__name__)

# Wire types: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32.
_DOUBLE = struct.Struct("<d").pack
_FIXED64 = struct.Struct("<Q").pack
_FIXED32 = struct.Struct("<I").pack
# span.proto SpanFlags: the context's is_remote is known (and, with 0x200, true).
_FLAGS_LOCAL = b"\x85\x01" + _FIXED32(0x100)  # field 16, fixed32
_FLAGS_REMOTE = b"\x85\x01" + _FIXED32(0x300)
_LINK_FLAGS_LOCAL = b"\x35" + _FIXED32(0x100)  # Link field 6, fixed32
_LINK_FLAGS_REMOTE = b"\x35" + _FIXED32(0x300)
_KIND = {kind: b"\x30" + bytes([kind.value + 1]) for kind in SpanKind}  # field 6, enum
_STATUS_CODE = (b"", b"\x18\x01", b"\x18\x02")  # Status field 3: UNSET, OK, ERROR


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_VARINT = [_varint(n) for n in range(0x4000)]


def _length(value: int) -> bytes:
    return _SMALL_VARINT[value] if value < 0x4000 else _varint(value)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: `tag` (the key's byte) then the payload's length."""
    return tag + _length(len(payload)) + payload


def _int64(value: int) -> bytes:
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{value} is out of the int64 range")
    return _varint(value & 0xFFFFFFFFFFFFFFFF) if value < 0 else _varint(value)


def _any_value(value: Any) -> bytes:
    """An `AnyValue` message's bytes (same branches, same order as the SDK's encoder).
    Its fields are a oneof, so even a zero value is written: it says which kind it is."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        return b"\x18" + _int64(value)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join([_field(b"\x0a", _any_value(v)) for v in value]))
    if isinstance(value, Mapping):
        pairs = b"".join([_field(b"\x0a", _key_value(str(k), v)) for k, v in value.items()])
        return _field(b"\x32", pairs)
    raise TypeError(f"invalid type {type(value)} of value {value}")


_KEYS: dict[str, bytes] = {}  # attribute key -> its encoded KeyValue.key field


def _key(key: str) -> bytes:
    encoded = _KEYS.get(key)
    if encoded is None:
        encoded = _field(b"\x0a", key.encode())
        if len(_KEYS) < 4096:  # keys are a small fixed set; never grow without bound
            _KEYS[key] = encoded
    return encoded


def _key_value(key: str, value: Any) -> bytes:
    value_bytes = _any_value(value)
    return _key(key) + b"\x12" + _length(len(value_bytes)) + value_bytes


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    """Repeated KeyValue under field `tag`; a value that cannot be encoded is left out
    and logged, as the SDK's encoder does."""
    if not attributes:
        return b""
    parts = []
    for key, value in attributes.items():
        try:
            if type(value) is str:  # most attributes: inlined
                encoded = value.encode()
                value_bytes = b"\x0a" + _length(len(encoded)) + encoded
                pair = _key(key) + b"\x12" + _length(len(value_bytes)) + value_bytes
            else:
                pair = _key_value(key, value)
        except Exception as error:
            _logger.exception("Failed to encode key %s: %s", key, error)
            continue
        parts.append(tag + _length(len(pair)) + pair)
    return b"".join(parts)


def _count(tag: bytes, value: int) -> bytes:
    return tag + _varint(value) if value else b""


def _trace_state(tag: bytes, context: SpanContext) -> bytes:
    state = context.trace_state
    if not state:
        return b""
    return _field(tag, ",".join([f"{k}={v}" for k, v in state.items()]).encode())


def _span(span: ReadableSpan) -> bytes:
    context = span.get_span_context()
    assert context is not None  # an SDK span always has one
    parent = span.parent
    parts = [
        b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + context.span_id.to_bytes(8, "big"),
        _trace_state(b"\x1a", context),
        b"\x22\x08" + parent.span_id.to_bytes(8, "big") if parent else b"",
        _field(b"\x2a", span.name.encode()) if span.name else b"",
        _KIND[span.kind],
        b"\x39" + _FIXED64(span.start_time) if span.start_time else b"",
        b"\x41" + _FIXED64(span.end_time) if span.end_time else b"",
        _attributes(b"\x4a", span.attributes),
        _count(b"\x50", span.dropped_attributes),
    ]
    for event in span.events:
        event_bytes = (
            (b"\x09" + _FIXED64(event.timestamp) if event.timestamp else b"")
            + (_field(b"\x12", event.name.encode()) if event.name else b"")
            + _attributes(b"\x1a", event.attributes)
            + _count(b"\x20", event.dropped_attributes)
        )
        parts.append(_field(b"\x5a", event_bytes))
    parts.append(_count(b"\x60", span.dropped_events))
    for link in span.links:
        link_context = link.context
        link_bytes = (
            b"\x0a\x10"
            + link_context.trace_id.to_bytes(16, "big")
            + b"\x12\x08"
            + link_context.span_id.to_bytes(8, "big")
            + _attributes(b"\x22", link.attributes)
            + _count(b"\x28", link.dropped_attributes)
            + (_LINK_FLAGS_REMOTE if link_context.is_remote else _LINK_FLAGS_LOCAL)
        )
        parts.append(_field(b"\x6a", link_bytes))
    parts.append(_count(b"\x70", span.dropped_links))
    status = span.status
    message = status.description
    status_bytes = (_field(b"\x12", message.encode()) if message else b"") + _STATUS_CODE[
        status.status_code.value
    ]
    parts.append(_field(b"\x7a", status_bytes))
    parts.append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)
    return b"".join(parts)


def _scope(scope: InstrumentationScope | None) -> bytes:
    """InstrumentationScope's bytes."""
    if scope is None:
        return b""
    return (
        (_field(b"\x0a", scope.name.encode()) if scope.name else b"")
        + (_field(b"\x12", scope.version.encode()) if scope.version else b"")
        + _attributes(b"\x1a", scope.attributes)
    )


def _schema_url(url: str | None) -> bytes:
    """Field 3 of ResourceSpans and ScopeSpans."""
    return _field(b"\x1a", url.encode()) if url else b""


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """The serialized `ExportTraceServiceRequest` for `spans`, grouped by resource and
    instrumentation scope, in the order the SDK's encoder groups them."""
    # Hashing a Resource serializes it to JSON: do it once per distinct object
    # (a process has one), not once per span.
    groups: dict[int, dict[InstrumentationScope | None, list[bytes]]] = {}
    by_resource: dict[Resource, dict[InstrumentationScope | None, list[bytes]]] = {}
    for span in spans:
        scopes = groups.get(id(span.resource))
        if scopes is None:
            scopes = groups[id(span.resource)] = by_resource.setdefault(span.resource, {})
        scopes.setdefault(span.instrumentation_scope or None, []).append(
            _field(b"\x12", _span(span))
        )
    request = []
    for resource, scope_spans in by_resource.items():
        body = [_field(b"\x0a", _attributes(b"\x0a", resource.attributes))]
        for scope, encoded_spans in scope_spans.items():
            schema = _schema_url(scope.schema_url) if scope else b""
            body.append(
                _field(b"\x12", _field(b"\x0a", _scope(scope)) + b"".join(encoded_spans) + schema)
            )
        body.append(_schema_url(resource.schema_url))
        request.append(_field(b"\x0a", b"".join(body)))
    return b"".join(request)


class HttpSpanExporter(SdkHttpSpanExporter):
    """The SDK's OTLP/HTTP span exporter, encoding with `encode_spans` (the rest of
    `export` is the SDK's, step for step)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return super().export(spans)  # the SDK's warning and FAILURE
        with self._metrics.export_operation(len(spans)) as result:
            try:
                data = encode_spans(spans)
            except Exception as error:
                _logger.error("Failed to encode span batch: %s", error)
                result.error = error
                return SpanExportResult.FAILURE
            if _is_request_too_large(data, self._max_request_size):
                _logger.warning(
                    "Dropping span batch: serialized size %d bytes exceeds max_request_size "
                    "%d bytes.",
                    len(data),
                    self._max_request_size,
                )
                result.error = RequestPayloadTooLargeError(
                    f"Serialized span request size {len(data)} bytes exceeds "
                    f"max_request_size {self._max_request_size} bytes."
                )
                return SpanExportResult.FAILURE
            exported = self._client.export(data)
            if not exported.success:
                result.error = exported.error
                if exported.status_code is not None:
                    result.error_attrs = {HTTP_RESPONSE_STATUS_CODE: exported.status_code}
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS


class GrpcSpanExporter(SdkGrpcSpanExporter):
    """The SDK's OTLP/gRPC span exporter, encoding with `encode_spans`."""

    def _translate_data(self, data: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
        request = ExportTraceServiceRequest()
        request.ParseFromString(encode_spans(data))
        return request
