"""Fixtures of the tests that read traces back from a real Jaeger.

One Jaeger and one control plane whose kube-apiserver traces into it serve
the session; each test's operator exports to the same Jaeger under a service
name of its own, so tests never read each other's spans.
"""

import uuid
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from tests import build_progress
from wukong.devcluster import ControlPlane, binaries, ephemeral_control_plane
from wukong.devcluster.jaeger import LocalJaeger
from wukong.tracing.setup import configure_tracing


@pytest.fixture(scope="session")
def jaeger() -> Iterator[LocalJaeger]:
    """Jaeger v2, built on first use (minutes cold), for the session."""
    local = LocalJaeger(binary=binaries.jaeger_binary(progress=build_progress.progress))
    local.start()
    yield local
    local.stop()


@pytest.fixture(scope="session")
def traced_plane(
    jaeger: LocalJaeger, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """A control plane whose kube-apiserver traces every request into `jaeger`."""
    with ephemeral_control_plane(
        progress=build_progress.progress,
        state_dir=tmp_path_factory.mktemp("traced-plane"),
        tracing_endpoint=jaeger.otlp_grpc,
    ) as plane:
        yield plane


@pytest.fixture
def operator_tracing(
    jaeger: LocalJaeger, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TracerProvider, str]]:
    """The operator's provider, exporting to `jaeger` over OTLP/HTTP; its service name."""
    service = f"wukong-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_http)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_SERVICE_NAME", service)
    provider = configure_tracing()
    assert provider is not None
    yield provider, service
    provider.shutdown()
