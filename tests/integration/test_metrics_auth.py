"""A secure /metrics against the real API server, under the chart's own RBAC.

The chart's ServiceAccounts and roles are applied for real, with one reader in
`metrics.readers`. The operator's metrics server runs in-process on a client
that authenticates as the chart's operator ServiceAccount (so the
metrics-auth ClusterRole is proven sufficient), the agent's endpoint likewise
as the agent's ServiceAccount, and callers come with tokens from the
TokenRequest API: the reader gets the metrics over HTTPS, another
ServiceAccount 403, no token or a made-up one 401, with bodies that say only
that (the reasons are in the DEBUG log).
"""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Counter

from tests.deploy.chart_tools import render, values_file
from tests.exposition import metric_samples
from tests.integration.helpers import RecordingObserver, scrape, service_account_token
from tests.integration.test_chart_on_cluster import _dump, _kubectl, _token_kubeconfig
from wukong.devcluster import ControlPlane
from wukong.metrics import MetricsServer, RuntimeMetrics
from wukong.metrics.server import SecureServing
from wukong.metrics.thread import MetricsThread
from wukong.runtime import Client
from wukong.runtime._calls import layered
from wukong.runtime.resources import NAMESPACES

RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


@dataclass(frozen=True)
class Accounts:
    release: str  # where the chart's ServiceAccounts are
    operator: Path  # kubeconfig of the chart's operator ServiceAccount
    agent: Path  # kubeconfig of the chart's agent ServiceAccount
    reader: str  # token of the ServiceAccount in metrics.readers
    intruder: str  # token of a ServiceAccount that is granted nothing


@pytest.fixture
async def accounts(
    control_plane: ControlPlane, client: Client, kubectl: Path, tmp_path: Path
) -> AsyncIterator[Accounts]:
    release, scrapers = (f"{prefix}-{uuid.uuid4().hex[:6]}" for prefix in ("wukong", "scrapers"))
    for name in (release, scrapers):
        await client.create(NAMESPACES, {"metadata": {"name": name}})
    values = {
        "agent": {"enabled": True},
        "metrics": {"readers": [{"namespace": scrapers, "name": "prometheus"}]},
    }
    objects = [
        obj
        for obj in render("--namespace", release, "-f", str(values_file(tmp_path, values)))
        if obj["kind"] in RBAC_KINDS
    ]
    for account in ("prometheus", "intruder"):
        metadata = {"name": account, "namespace": scrapers}
        objects.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata})
    await asyncio.to_thread(
        _kubectl, kubectl, control_plane, "apply", "-f", "-", stdin=_dump(objects)
    )

    def token(namespace: str, name: str) -> str:
        return service_account_token(kubectl, control_plane.kubeconfig, namespace, name)

    yield Accounts(
        release=release,
        operator=_token_kubeconfig(control_plane, token(release, "wukong"), tmp_path / "op.kc"),
        agent=_token_kubeconfig(control_plane, token(release, "wukong-agent"), tmp_path / "ag.kc"),
        reader=token(scrapers, "prometheus"),
        intruder=token(scrapers, "intruder"),
    )
    for name in (release, scrapers):
        await client.delete(NAMESPACES, name)


async def _refused(url: str) -> bool:
    """Whether a plain-HTTP request to `url` fails (the port speaks only TLS)."""
    try:
        await scrape(url, None)
    except aiohttp.ClientError:
        return True
    return False


async def test_the_operators_metrics_answer_only_the_charts_readers(
    accounts: Accounts, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wukong.runtime.delegatedauth")
    metrics = RuntimeMetrics()
    calls = RecordingObserver()
    async with await Client.from_kubeconfig(accounts.operator) as as_operator:
        server = MetricsServer(
            registry=metrics.metrics.registry,
            secure=SecureServing(client=layered(as_operator, observer=calls)),
        )
        port = await server.start("127.0.0.1:0")
        url = f"https://127.0.0.1:{port}/metrics"
        try:
            status, text = await scrape(url, accounts.reader)
            assert status == 200, text
            assert "# TYPE controller_runtime_reconcile_total counter" in text
            reviews = [call.resource for call in calls.calls]
            assert reviews == ["tokenreviews", "subjectaccessreviews"]

            # Again within the cache's time: no API call at all.
            assert (await scrape(url, accounts.reader))[0] == 200
            assert len(calls.calls) == 2

            # Generic bodies: the user, the token and the API server's words stay in the log.
            assert await scrape(url, accounts.intruder) == (403, "Forbidden\n")
            assert ":intruder may not get /metrics" in caplog.text
            assert await scrape(url, None) == (401, "Unauthorized\n")
            assert await scrape(url, "made-up") == (401, "Unauthorized\n")
            assert "not authenticated" in caplog.text
            assert await _refused(f"http://127.0.0.1:{port}/metrics")

            _, text = await scrape(url, accounts.reader)
            counted = {
                (labels["code"], labels["via"]): value
                for labels, value in metric_samples(text, "wukong_metrics_auth_requests_total")
            }
            assert counted == {
                ("200", "review"): 1.0,
                ("200", "cache"): 2.0,  # this scrape included: counted before it is served
                ("403", "review"): 1.0,
                ("401", "none"): 1.0,
                ("401", "review"): 1.0,
            }
        finally:
            await server.stop()


async def test_without_the_review_grants_nothing_is_served(
    control_plane: ControlPlane,
    accounts: Accounts,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The reader's own identity may not create reviews: the server cannot tell
    # who calls, and says so with a 500 rather than serving on doubt.
    unprivileged = _token_kubeconfig(control_plane, accounts.intruder, tmp_path / "in.kc")
    async with await Client.from_kubeconfig(unprivileged) as as_intruder:
        server = MetricsServer(
            registry=CollectorRegistry(), secure=SecureServing(client=as_intruder)
        )
        port = await server.start("127.0.0.1:0")
        try:
            status, text = await scrape(f"https://127.0.0.1:{port}/metrics", accounts.reader)
        finally:
            await server.stop()
    assert (status, text) == (500, "Internal Server Error\n")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("cannot review a request for get /metrics" in m and "403" in m for m in warnings)


async def test_the_agents_metrics_thread_answers_only_the_charts_readers(
    accounts: Accounts,
) -> None:
    registry = CollectorRegistry()
    Counter("wukong_node_cancellations", "test", registry=registry).inc()
    thread = MetricsThread(
        registry=registry, connect=lambda: Client.from_kubeconfig(accounts.agent)
    )
    port = await asyncio.to_thread(thread.start, "127.0.0.1:0")
    url = f"https://127.0.0.1:{port}/metrics"
    try:
        status, text = await scrape(url, accounts.reader)
        assert status == 200, text
        assert "wukong_node_cancellations_total 1.0" in text
        assert (await scrape(url, accounts.intruder))[0] == 403
        assert (await scrape(url, None))[0] == 401
    finally:
        await asyncio.to_thread(thread.stop)
