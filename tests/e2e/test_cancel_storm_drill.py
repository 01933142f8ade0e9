"""The cancel-storm drill end to end: a restart and three faults, each diagnosed from telemetry.

The operator runs as a real `wukong run` process with tracing to Jaeger (where
the drill's own control plane traces its API server too) and metrics scraped
by Debian's Prometheus (with the alert rules);
first it is restarted twice under load, which must read as no failure at all:
reconciles cancelled for shutdown, no ERROR line in its logs, no alert even
pending. Then the faults: a latency proxy in front of the API server, a
reconcile timeout far too tight, and a stolen Lease. Each report must name its
cause, show the storm on the cancel-storm dashboard's panels, and the stack
must heal (every Wukong Running). The slow API server's slowest calls, split
from their joined traces, spend their time outside the server.
"""

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import build_progress
from wukong.demo.drill import Drill
from wukong.demo.stack import DemoStack
from wukong.devcluster import ControlPlane, binaries, ephemeral_control_plane
from wukong.devcluster.jaeger import LocalJaeger
from wukong.diagnose.rules import LEADER_LOST, ROLLING_RESTART, SLOW_API, TIGHT_DEADLINE
from wukong.diagnose.split import OUTSIDE

# A cold build of Jaeger (minutes) happens in the fixture's setup.
pytestmark = pytest.mark.timeout(600, func_only=True)


@pytest.fixture
def jaeger() -> Iterator[LocalJaeger]:
    local = LocalJaeger(binary=binaries.jaeger_binary(progress=build_progress.progress))
    local.start()
    yield local
    local.stop()


@pytest.fixture
def traced_plane(jaeger: LocalJaeger, tmp_path: Path) -> Iterator[ControlPlane]:
    """A control plane of the drill's own, tracing its API server into `jaeger`."""
    with ephemeral_control_plane(
        progress=build_progress.progress,
        state_dir=tmp_path / "plane",
        tracing_endpoint=jaeger.otlp_grpc,
    ) as plane:
        yield plane


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs Debian's prometheus")
async def test_drill_diagnoses_each_fault(
    traced_plane: ControlPlane, jaeger: LocalJaeger, tmp_path: Path
) -> None:
    work_dir = tmp_path / "drill"
    async with DemoStack(plane=traced_plane, work_dir=work_dir, jaeger=jaeger) as stack:
        drill = Drill(stack=stack, progress=lambda line: print(line, file=sys.stderr))
        reports = await drill.run()
        phases = await stack.phases()

    assert [(r.expected, r.diagnosis.cause) for r in reports] == [
        (ROLLING_RESTART, ROLLING_RESTART),
        (SLOW_API, SLOW_API),
        (TIGHT_DEADLINE, TIGHT_DEADLINE),
        (LEADER_LOST, LEADER_LOST),
    ], "\n".join(report.render() for report in reports)
    restart, slow, tight, lease = reports
    # The rolling restart is no failure: cancellations for shutdown only, no alert.
    assert set(restart.traces.cancellations) == {"shutdown"}
    shutdown = restart.traces.cancellations["shutdown"]
    assert shutdown > 0, "no reconcile was in flight at a restart: the drill proves nothing"
    noun = "reconcile" if shutdown == 1 else "reconciles"
    assert restart.diagnosis.explanation.startswith(
        f"no failure: {shutdown} {noun} cancelled for shutdown, "
    ), restart.render()
    assert restart.alerts == []
    # The operators that lived through the restarts (the first three) logged no ERROR.
    for start in (1, 2, 3):
        assert _error_lines(work_dir / f"operator-{start}.log") == []
    # A slow API server: the calls run out of their own share of the deadline;
    # a deadline too tight: the reconciles run out of theirs.
    assert slow.traces.dominant_reason == "api_timeout"
    assert slow.traces.api_p50_ms > 5 * drill.baseline_api_p50_ms
    # The latency proxy's delay is outside the API server, in each slowest call's trace
    # that reached it (a call cut during its connection's handshake never did).
    joined = [call for call in slow.calls if call.server_span is not None]
    assert joined, slow.render()
    assert {call.dominant for call in joined} == {OUTSIDE}, slow.render()
    assert tight.traces.dominant_reason == "deadline_exceeded"
    # A real deadline storm still raises the timeout alert (pending: its `for` is
    # longer than a drill), where the restart raised none.
    tight_alerts = {alert.split(" ")[0] for alert in tight.alerts}
    assert "WukongReconcileTimeoutsSustained" in tight_alerts, tight.render()
    assert lease.traces.cancellations["leader_lost"] > 0
    for report, reason in ((slow, "api_timeout"), (tight, "deadline_exceeded")):
        cancellations = next(p for p in report.panels if p.title == "Cancellations by reason")
        by_reason = {labels["reason"]: value for labels, value in cancellations.series}
        assert by_reason.get(reason, 0) > 0, report.render()
    drill_objects = {name: phase for name, phase in phases.items() if name.startswith("drill-")}
    assert drill_objects and set(drill_objects.values()) == {"Running"}, drill_objects


def _error_lines(log_file: Path) -> list[str]:
    lines = log_file.read_text().splitlines()
    return [line for line in lines if line.startswith("{") and json.loads(line)["level"] == "ERROR"]
