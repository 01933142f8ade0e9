"""A TracerProvider from the standard OTEL_* environment, or none at all.

Tracing is on when an OTLP endpoint is configured
(`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`) and not
switched off (`OTEL_SDK_DISABLED=true`, `OTEL_TRACES_EXPORTER=none`). Off means
no provider and no observers registered: a reconcile then pays nothing.

Read by the SDK itself: `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`, `OTEL_EXPORTER_OTLP_*HEADERS`,
timeouts and batch settings. Which reconciles keep their trace is Wukong's
(`WUKONG_TRACES_KEEP_RATIO`, `WUKONG_TRACES_KEEP_EVERY`, `WUKONG_TRACES_SLOW_SHARE`,
tracing/sampling.py),
decided as each ends; the SDK's sampler then applies to what is kept, so leave
it at its default (`parentbased_always_on`) for the operator. Chosen here: the exporter by
`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL`
(`grpc`, default, or `http/protobuf`), and Kubernetes resource attributes from
the Downward API variables the Helm chart sets (`K8S_POD_NAME`,
`K8S_NAMESPACE_NAME`, `K8S_NODE_NAME`).
"""

import os
from collections.abc import Mapping

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from wukong.tracing.spans import PresetIds

DEFAULT_SERVICE_NAME = "wukong-operator"
_DOWNWARD_API = {
    "K8S_POD_NAME": "k8s.pod.name",
    "K8S_NAMESPACE_NAME": "k8s.namespace.name",
    "K8S_NODE_NAME": "k8s.node.name",
}


def tracing_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").lower() == "none":
        return False
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def resource_from(environ: Mapping[str, str] = os.environ) -> Resource:
    attributes: dict[str, str] = {}
    if not environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = DEFAULT_SERVICE_NAME
    for variable, attribute in _DOWNWARD_API.items():
        if environ.get(variable):
            attributes[attribute] = environ[variable]
    # Resource.create merges OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME over these.
    return Resource.create(attributes)


def _exporter(environ: Mapping[str, str]) -> SpanExporter:
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    )
    # The SDK's exporters, imported only when tracing is on.
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpSpanExporter,
        )

        return HttpSpanExporter()
    raise ValueError(f"unsupported OTLP protocol {protocol!r}: use 'grpc' or 'http/protobuf'")


def configure_tracing(environ: Mapping[str, str] = os.environ) -> TracerProvider | None:
    """A provider exporting over OTLP as the environment says, or None when tracing is off."""
    if not tracing_enabled(environ):
        return None
    # PresetIds: the reconcile tracer makes a reconcile's span, at its end, with
    # the ids the reconcile had from its start (tracing/spans.py).
    provider = TracerProvider(resource=resource_from(environ), id_generator=PresetIds())
    provider.add_span_processor(BatchSpanProcessor(_exporter(environ)))
    return provider
