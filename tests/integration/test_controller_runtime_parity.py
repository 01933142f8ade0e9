"""`wukong run` serves every metric family a controller-runtime manager serves, alike.

Dashboards and alerts written for kubebuilder operators select families by
name and aggregate by label names; a family that is missing, has another type
or lacks a label finds nothing. So the bench's controller-runtime peer (a real
controller-runtime manager, built from the Go module proxy) and `wukong run`
both start against the same API server in the same run, and their `/metrics`
are compared family by family: every family of controller-runtime's (its
certwatcher's included), client-go's work queue and REST client must be served
by Wukong with the same type and label names, already before anything happened
(at 0). Wukong may
serve more (its own `wukong_*` families, client-go's request latency).
"""

import asyncio
import functools
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.exposition import metric_samples
from tests.polling import eventually
from wukong.devcluster import ControlPlane
from wukong.devcluster.processes import free_port
from wukong.runtime import Client
from wukong.runtime.resources import NAMESPACES

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from compare_peers import make_peer  # noqa: E402

# The families controller-runtime's own metrics and its adapters of client-go's serve.
COMPARED_PREFIXES = (
    "controller_runtime_",
    "certwatcher_",
    "workqueue_",
    "rest_client_",
    "leader_election_",
)
# Families controller-runtime serves that have no meaning in Wukong: none.
NOT_APPLICABLE: frozenset[str] = frozenset()

Families = dict[str, tuple[str, frozenset[str]]]


def families(text: str) -> Families:
    """The compared families in an exposition: name -> (type, label names of its series)."""
    found: Families = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith(COMPARED_PREFIXES):
            continue
        labels = {
            name
            for sample in family.samples
            for name in sample.labels
            if name not in ("le", "quantile")  # a histogram's buckets, a summary's quantiles
        }
        found[family.name] = (family.type, frozenset(labels))
    return found


async def _metrics(url: str) -> str | None:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return await response.text() if response.status == 200 else None
    except aiohttp.ClientError:
        return None


def test_families_parse_types_and_label_names() -> None:
    text = (
        "# HELP workqueue_depth d\n# TYPE workqueue_depth gauge\n"
        'workqueue_depth{controller="a",name="a",priority=""} 0\n'
        "# HELP controller_runtime_webhook_panics_total p\n"
        "# TYPE controller_runtime_webhook_panics_total counter\n"
        "controller_runtime_webhook_panics_total 0\n"
        "# HELP wukong_x x\n# TYPE wukong_x counter\nwukong_x_total 1\n"
    )
    assert families(text) == {
        "workqueue_depth": ("gauge", frozenset({"controller", "name", "priority"})),
        "controller_runtime_webhook_panics": ("counter", frozenset()),
    }


async def test_wukong_run_serves_controller_runtime_families_with_its_types_and_labels(
    control_plane: ControlPlane, client: Client, infrastructure: None, tmp_path: Path
) -> None:
    namespace = f"parity-{uuid.uuid4().hex[:8]}"
    await client.create(NAMESPACES, {"metadata": {"name": namespace}})
    peer_port, metrics_port, health_port = free_port(), free_port(), free_port()
    peer = make_peer(
        "controller-runtime",
        kubeconfig=control_plane.kubeconfig,
        namespace=namespace,
        work_dir=tmp_path,
    )
    peer.argv.append(f"--metrics-bind-address=127.0.0.1:{peer_port}")
    with (tmp_path / "wukong-run.log").open("w") as log:
        wukong = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "wukong.cli",
            "run",
            f"--kubeconfig={control_plane.kubeconfig}",
            f"--namespace={namespace}",
            f"--leader-election-namespace={namespace}",
            f"--metrics-bind=127.0.0.1:{metrics_port}",
            f"--health-bind=127.0.0.1:{health_port}",
            "--no-metrics-secure",
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    await peer.start()
    try:
        texts: dict[str, str] = {}

        async def scraped(name: str, url: str) -> bool:
            text = await _metrics(url)
            # Wukong's controller families exist once its controller was added.
            if text is not None and "controller_runtime_reconcile_total{" in text:
                texts[name] = text
            return name in texts

        for name, port in (("controller-runtime", peer_port), ("wukong", metrics_port)):
            url = f"http://127.0.0.1:{port}/metrics"
            check = functools.partial(scraped, name, url)
            await eventually(check, timeout=60, what=f"{name}'s /metrics")
    finally:
        await peer.stop()
        wukong.terminate()
        await asyncio.wait_for(wukong.wait(), 30)
    expected, served = families(texts["controller-runtime"]), families(texts["wukong"])
    # What a controller-runtime manager serves from the start, whatever it reconciles.
    assert {
        "controller_runtime_reconcile",
        "controller_runtime_reconcile_errors",
        "controller_runtime_terminal_reconcile_errors",
        "controller_runtime_reconcile_panics",
        "controller_runtime_webhook_panics",
        "controller_runtime_conversion_webhook_panics",
        "certwatcher_read_certificate",
        "certwatcher_read_certificate_errors",
        "controller_runtime_max_concurrent_reconciles",
        "controller_runtime_active_workers",
        "workqueue_depth",
    } <= expected.keys()
    # The failure families exist at 0 before anything failed, as in controller-runtime;
    # the certwatcher's too, with no certificate directory to read.
    for name in (
        "certwatcher_read_certificate_total",
        "certwatcher_read_certificate_errors_total",
        "controller_runtime_terminal_reconcile_errors_total",
        "controller_runtime_reconcile_panics_total",
        "controller_runtime_webhook_panics_total",
        "controller_runtime_conversion_webhook_panics_total",
    ):
        values = [value for _, value in metric_samples(texts["wukong"], name)]
        assert values and set(values) == {0.0}, (name, values)
    differences = {
        name: (kind_and_labels, served.get(name))
        for name, kind_and_labels in expected.items()
        if name not in NOT_APPLICABLE and served.get(name) != kind_and_labels
    }
    assert not differences, f"(controller-runtime, wukong) per family: {differences}"
