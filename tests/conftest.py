"""Shared test harness.

- `control_plane`: one real etcd + kube-apiserver for the whole test session,
  on free loopback ports and a temporary state directory, so it never collides
  with a developer's `wukong dev up` cluster.
- `client`: the project's client, configured from that cluster's kubeconfig.
- `namespace`: a fresh namespace per test.
- `kubectl`: kubectl built at the API server's release (no preinstalled one is used).

Tests under tests/integration, tests/ebpf and tests/e2e get the matching marker;
`ebpf` tests are skipped unless running as root.
"""

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests import build_progress
from wukong.devcluster import ControlPlane, ephemeral_control_plane
from wukong.runtime import Client
from wukong.runtime.resources import NAMESPACES

# The Wukong controller with its simulated infrastructure, for integration and e2e tests.
pytest_plugins = ["tests.integration.wukong_harness"]

_MARKED_DIRECTORIES = ("integration", "ebpf", "e2e", "node")


def pytest_configure(config: pytest.Config) -> None:
    build_progress.pytest_configure(config)  # first-use builds show their progress


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for marker in _MARKED_DIRECTORIES:
            if marker in parts:
                item.add_marker(getattr(pytest.mark, marker))
        if item.get_closest_marker("ebpf") and os.geteuid() != 0:
            item.add_marker(pytest.mark.skip(reason="eBPF tests need root"))
        if item.get_closest_marker("node") and os.geteuid() != 0:
            item.add_marker(
                pytest.mark.skip(reason="the dev node needs root (namespaces, cgroups, mounts)")
            )


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with ephemeral_control_plane(
        progress=build_progress.progress,
        state_dir=tmp_path_factory.mktemp("control-plane"),  # kept: logs for failures
    ) as plane:
        yield plane


@pytest.fixture(scope="session")
def kubectl() -> Path:
    """kubectl at the API server's release, built from the Go module proxy (cached)."""
    from wukong.devcluster import binaries

    return binaries.kubectl_binary(progress=build_progress.progress)  # first use: minutes


@pytest.fixture
async def client(control_plane: ControlPlane) -> AsyncIterator[Client]:
    async with await Client.from_kubeconfig(control_plane.kubeconfig) as api:
        yield api


@pytest.fixture
async def namespace(client: Client) -> AsyncIterator[str]:
    name = f"test-{uuid.uuid4().hex[:10]}"
    await client.create(
        NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    yield name
    # Without a controller-manager the namespace stays Terminating; its name is
    # unique, so that harms no later test.
    await client.delete(NAMESPACES, name)
