"""The agent's series and memory stay bounded whatever a traced process does.

A process the agent traces is not trusted: a Python process that reports
1,000 made-up cancel reasons gets one series (`reason="other"`), its texts go
to the event stream only; a Go program with more distinct call sites than the
kernel's counts map holds keeps its series bounded, and what did not fit is
counted as lost, by reason, never silently dropped.
"""

import subprocess
import time
from collections import Counter
from pathlib import Path

from tests.ebpf.agent_helpers import Running, cancels_program
from tests.polling import wait_until
from wukong.ebpf.agent import OVERFLOW_REASON, Agent
from wukong.ebpf.discovery import Discovery
from wukong.ebpf.records import Cancellation

COUNTS_MAP_ENTRIES = 10240  # go_probe.c's `counts`

# A stand-in for a Python operator (Debian's interpreter has the USDT probes; the
# file name carries "wukong" as an operator's command line does) that reports
# cancellations with reasons of its own making, 100 at a time.
_MADE_UP_REASONS = """
import sys, time
print("ready", flush=True)
sys.stdin.readline()
for i in range(1000):
    sys.audit(f"wukong.cancel|c=stand-in|k=ns/object-{i}|n=ns|r=made-up-{i}")
    if i % 100 == 99:
        time.sleep(0.1)
print("done", flush=True)
sys.stdin.readline()
"""


def _series(agent: Agent, pid_runtime: str) -> dict[str, float]:
    """reason -> value of wukong_node_cancellations_total for unattributed processes."""
    found = {}
    for family in agent.registry.collect():
        for sample in family.samples:
            if (
                sample.name == "wukong_node_cancellations_total"
                and sample.labels["runtime"] == pid_runtime
            ):
                found[sample.labels["reason"]] = sample.value
    return found


def test_made_up_reasons_count_as_one_series_and_keep_their_text_in_the_events(
    tmp_path: Path,
) -> None:
    script = tmp_path / "wukong_reasons_stand_in.py"
    script.write_text(_MADE_UP_REASONS)
    proc = subprocess.Popen(
        ["/usr/bin/python3", str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    seen: list[Cancellation] = []
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == b"ready"
        agent = Agent(node="n", discovery=Discovery(pids={proc.pid}), on_cancel=seen.append)
        with Running(agent) as running:
            wait_until(lambda: proc.pid in running.agent.probes, "the agent to attach")
            proc.stdin.write(b"\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == b"done"
            wait_until(
                lambda: len(seen) + running.agent.lost >= 1000, "1,000 cancellations or losses"
            )
            time.sleep(0.5)  # nothing more may arrive
        assert agent.lost == 0, agent.lost_by_reason
        assert _series(agent, "python") == {OVERFLOW_REASON: 1000.0}
        assert {c.reason for c in seen} == {OVERFLOW_REASON}
        assert sorted(c.reported_reason for c in seen) == sorted(
            f"made-up-{i}" for i in range(1000)
        )
    finally:
        proc.kill()
        proc.wait()


def test_more_call_sites_than_the_counts_map_holds_are_counted_as_lost() -> None:
    binary = cancels_program()
    distinct = COUNTS_MAP_ENTRIES + 2000
    proc = subprocess.Popen(
        [
            str(binary),
            "-deadlines=0",
            "-cancels=0",
            "-causes=0",
            "-children=0",
            f"-distinct-causes={distinct}",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    counted: Counter[str] = Counter()

    def on_cancel(cancellation: Cancellation) -> None:
        counted[cancellation.reason] += cancellation.count

    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == b"ready"
        # Every call site named, however fast they come: the naming budget off.
        agent = Agent(
            node="n",
            discovery=Discovery(pids={proc.pid}),
            on_cancel=on_cancel,
            named_per_window=None,
        )
        with Running(agent) as running:
            wait_until(lambda: proc.pid in running.agent.probes, "the agent to attach")
            proc.stdin.write(b"\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == b"done"
            total = distinct + 1  # and the parent cancelParent always makes
            wait_until(
                lambda: sum(counted.values()) + running.agent.lost >= total,
                "every cancellation counted or lost",
                timeout=60,
            )
            time.sleep(0.5)  # nothing more may arrive
        # Every cancellation is accounted for: counted, or lost with its reason.
        assert sum(counted.values()) + agent.lost == total
        assert agent.lost == agent.lost_by_reason["counts_map_full"] > 0
        assert sum(counted.values()) <= COUNTS_MAP_ENTRIES
        # Its first occurrences did not all fit the ring buffer either: said, not hidden.
        assert agent.lost_by_reason["ring_buffer_full"] > 0
        # However many call sites, the series stay the reasons'.
        assert set(_series(agent, "go")) <= {"canceled", "deadline_exceeded", "parent_cancelled"}
        lost = agent.registry.get_sample_value(
            "wukong_node_events_lost_total",
            {"node": "n", "runtime": "go", "reason": "counts_map_full"},
        )
        assert lost == agent.lost
    finally:
        proc.kill()
        proc.wait()
