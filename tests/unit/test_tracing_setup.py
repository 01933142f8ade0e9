"""Tracing is off unless an OTLP endpoint is configured; resource attributes from env."""

import pytest

from wukong.tracing.setup import configure_tracing, resource_from, tracing_enabled


@pytest.mark.parametrize(
    ("environ", "enabled"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_enabled_only_when_configured(environ: dict[str, str], enabled: bool) -> None:
    assert tracing_enabled(environ) is enabled
    if not enabled:
        assert configure_tracing(environ) is None


def test_downward_api_attributes() -> None:
    attributes = resource_from(
        {"K8S_POD_NAME": "p", "K8S_NAMESPACE_NAME": "ns", "K8S_NODE_NAME": "n"}
    ).attributes
    assert attributes["k8s.pod.name"] == "p"
    assert attributes["k8s.namespace.name"] == "ns"
    assert attributes["k8s.node.name"] == "n"


def test_unknown_protocol_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unsupported OTLP protocol 'thrift'"):
        configure_tracing(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"}
        )
