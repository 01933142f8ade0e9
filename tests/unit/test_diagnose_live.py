"""`wukong diagnose` against a stand-in Prometheus HTTP API: the signals it reads, what
it prints and its exit status (0 healthy, 1 incident, 2 cannot tell)."""

import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from wukong.cli import main
from wukong.devcluster.processes import free_port
from wukong.diagnose.live import Target, read_signals
from wukong.diagnose.panels import CANCEL_STORM_DASHBOARD, EVIDENCE_PANELS, LEADER_PANEL
from wukong.diagnose.prometheus import PrometheusAPI


def _panels(rendered: str) -> list[dict[str, Any]]:
    dashboard = json.loads(rendered)
    found = []
    for panel in dashboard["panels"]:
        found += [panel, *panel.get("panels", [])]
    return found


# Answers by a piece of the query: the first piece found in it wins.
Answers = list[tuple[str, list[dict[str, Any]]]]


def _sample(value: float, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [1.0, str(value)]}


class StandIn:
    def __init__(self) -> None:
        self.answers: Answers = []
        self.alerts: list[dict[str, Any]] = []
        self.queries: list[str] = []

    def answer(self, query: str) -> list[dict[str, Any]]:
        self.queries.append(query)
        return next((result for piece, result in self.answers if piece in query), [])


@pytest.fixture
def prometheus() -> Iterator[tuple[StandIn, str]]:
    stand_in = StandIn()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urllib.parse.urlparse(self.path)
            if url.path == "/api/v1/alerts":
                data: Any = {"alerts": stand_in.alerts}
            else:
                query = urllib.parse.parse_qs(url.query)["query"][0]
                data = {"resultType": "vector", "result": stand_in.answer(query)}
            body = json.dumps({"status": "success", "data": data}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield stand_in, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


OPERATOR = ("controller_runtime_reconcile_total{", [_sample(12, controller="wukong")])


def _slow_api_server(stand_in: StandIn) -> None:
    stand_in.answers = [
        ("wukong_reconcile_cancellations_total", [_sample(7.2, reason="deadline_exceeded")]),
        ("quantile_over_time", [_sample(0.006)]),
        ("sum by (le, verb)", [_sample(0.61, verb="POST"), _sample(0.6, verb="GET")]),
        ("sum by (le)", [_sample(0.6)]),
        OPERATOR,
    ]
    stand_in.alerts = [
        {
            "labels": {"alertname": "WukongCancelStorm", "namespace": "wukong-system"},
            "state": "firing",
            "activeAt": "2026-01-01T00:00:00Z",
        },
        {"labels": {"alertname": "WukongCancelStorm", "namespace": "elsewhere"}, "state": "firing"},
        {"labels": {"alertname": "Watchdog"}, "state": "firing"},
    ]


def test_signals_read_from_prometheus(prometheus: tuple[StandIn, str]) -> None:
    stand_in, url = prometheus
    _slow_api_server(stand_in)
    stand_in.answers[:0] = [
        ("changes(process_start_time_seconds", [_sample(3, pod="wukong-0"), _sample(0, pod="b")]),
        ("max(changes(leader_election_master_status", [_sample(1)]),
    ]
    signals = read_signals(PrometheusAPI(url), Target(namespace="wukong-system"), window="2m")
    assert dict(signals.cancellations) == {"deadline_exceeded": 7}
    assert (signals.api_p50_ms, signals.baseline_api_p50_ms) == (600, 6)
    assert (signals.slowest_call, signals.slowest_call_p50_ms) == ("POST calls", 610)
    assert dict(signals.restarts) == {"wukong-0": 3}
    # One change is a replica taking the Lease at start, not a loss.
    assert not signals.leader_dropped
    assert all('namespace=~"wukong-system"' in query for query in stand_in.queries)
    assert any("[2m]" in query for query in stand_in.queries)


def test_an_incident_is_named_with_its_evidence(
    prometheus: tuple[StandIn, str], capsys: pytest.CaptureFixture[str]
) -> None:
    stand_in, url = prometheus
    _slow_api_server(stand_in)
    code = main(["diagnose", f"--prometheus={url}", "--namespace=wukong-system", "--window=3m"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert out.startswith("diagnosis: slow_api_server (last 3m)\n")
    assert "7 reconciles hit their deadline while API calls took p50 600 ms" in out
    assert "slowest: POST calls (p50 610 ms)" in out
    # Only Wukong's alerts, only for the operator's namespace.
    assert "alerts pending or firing: WukongCancelStorm (firing)\n" in out
    assert "panel Cancellations by reason: " in out


def test_healthy_is_exit_status_0(
    prometheus: tuple[StandIn, str], capsys: pytest.CaptureFixture[str]
) -> None:
    stand_in, url = prometheus
    stand_in.answers = [OPERATOR]
    assert main(["diagnose", f"--prometheus={url}"]) == 0
    assert capsys.readouterr().out.startswith("diagnosis: healthy (last 5m)\n")


def test_cannot_tell_without_operator_series_or_prometheus(
    prometheus: tuple[StandIn, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = prometheus
    assert main(["diagnose", f"--prometheus={url}", "--job=nope"]) == 2
    out = capsys.readouterr().out
    assert out.startswith("cannot tell: no operator series")
    assert 'job=~"nope"' in out
    unreachable = f"http://127.0.0.1:{free_port()}"
    assert main(["diagnose", f"--prometheus={unreachable}"]) == 2
    assert capsys.readouterr().out.startswith(f"cannot tell: Prometheus at {unreachable} ")


def test_a_bad_window_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["diagnose", "--prometheus=http://x", "--window=5 minutes"])
    assert exit_.value.code == 2
    assert "a duration such as 90s, 5m or 1h" in capsys.readouterr().err


def test_the_panels_read_are_the_cancel_storm_dashboards() -> None:
    from wukong.dashboards import cancel_storm
    from wukong.dashboards.render import render_dashboards

    assert CANCEL_STORM_DASHBOARD == f"{cancel_storm.UID}.json"
    titles = {panel.get("title") for panel in _panels(render_dashboards()[CANCEL_STORM_DASHBOARD])}
    assert {*EVIDENCE_PANELS, LEADER_PANEL} <= titles
