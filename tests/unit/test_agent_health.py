"""The agent's /healthz and /readyz: served by its metrics thread on a port of their own."""

import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from wukong.cli import build_parser
from wukong.metrics.thread import LoopHealth, MetricsThread


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture
def served() -> Iterator[tuple[LoopHealth, MetricsThread]]:
    health = LoopHealth(stall=0.5)
    thread = MetricsThread(registry=CollectorRegistry(), health=health)
    thread.start("127.0.0.1:0", health_bind="127.0.0.1:0")
    yield health, thread
    thread.stop()


def test_ready_once_the_loop_went_round(served: tuple[LoopHealth, MetricsThread]) -> None:
    health, thread = served
    assert thread.health_port is not None
    assert _get(thread.health_port, "/readyz") == (503, "first scan not finished")
    assert _get(thread.health_port, "/healthz") == (200, "ok")
    health.beat()
    assert _get(thread.health_port, "/readyz") == (200, "ok")


def test_not_alive_when_the_loop_stalls(served: tuple[LoopHealth, MetricsThread]) -> None:
    health, thread = served
    assert thread.health_port is not None
    health.beat()
    time.sleep(0.7)
    status, text = _get(thread.health_port, "/healthz")
    assert status == 500 and text.startswith("main loop stalled for")
    health.beat()
    assert _get(thread.health_port, "/healthz") == (200, "ok")


def test_health_is_not_on_the_metrics_port(served: tuple[LoopHealth, MetricsThread]) -> None:
    _, thread = served
    assert thread.health_port is not None
    assert _get(thread.health_port, "/metrics")[0] == 404


def test_agent_flags() -> None:
    args = build_parser().parse_args(["agent"])
    assert args.health_bind == ":8081"
    assert str(args.state_dir) == "/run/wukong-agent"
    args = build_parser().parse_args(
        ["agent", "--health-probe-bind-address=:9000", "--state-dir=/var/run/wukong-agent"]
    )
    assert (args.health_bind, str(args.state_dir)) == (":9000", "/var/run/wukong-agent")
    assert str(build_parser().parse_args(["trace", "--state-dir=/x"]).state_dir) == "/x"
