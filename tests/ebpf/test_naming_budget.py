"""A cancel storm past the kernel's naming budget: every cancellation counted, callers sampled.

Each CPU names (reads the stack: caller, cause, root or propagated) the first
NAMED_PER_WINDOW cancellations of every 10 ms; the rest are counted by process
and kind only and reported as `unnamed`. The scripted program cancels 20,000
contexts in a tight loop, far past the budget: the agent's total per kind must
still equal what the program says it ended, and the named share must show.
"""

import os
import subprocess
import time
from collections import Counter

import pytest
from prometheus_client import generate_latest

from tests.contract import check_exposition
from tests.ebpf.agent_helpers import Running, cancels_program
from tests.polling import wait_until
from wukong.ebpf.agent import Agent
from wukong.ebpf.discovery import Discovery
from wukong.ebpf.elf import CANCEL_SYMBOL, Binary
from wukong.ebpf.go_cancel_site import ProbeSite
from wukong.ebpf.go_probe import NAMED_PER_WINDOW, UNNAMED, GoProbe
from wukong.ebpf.records import Cancellation

STORM = 20000
WINDOW_S = 0.010  # go_probe.c's NAMING_WINDOW_NS


@pytest.mark.parametrize("site", ["on_store", "on_entry"])
def test_a_storm_past_the_naming_budget_is_counted_exactly_and_named_on_a_sample(
    program: object, site: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if site == "on_entry":
        import wukong.ebpf.go_probe as go_probe

        def entry_only(binary: Binary, code: bytes) -> ProbeSite:
            return ProbeSite(binary.symbols[CANCEL_SYMBOL][0], "on_entry", "forced by the test")

        monkeypatch.setattr(go_probe, "find_site", entry_only)
    proc: subprocess.Popen[str] = program(  # type: ignore[operator]
        cancels_program(),
        "-deadlines=1",
        f"-cancels={STORM}",
        "-causes=0",
        "-children=0",
        "-say-count",
    )
    seen: list[Cancellation] = []
    agent = Agent(node="n", discovery=Discovery(pids={proc.pid}), on_cancel=seen.append)
    with Running(agent) as running:
        wait_until(lambda: proc.pid in running.agent.probes, "the agent to attach")
        probe = running.agent.probes[proc.pid]
        assert isinstance(probe, GoProbe) and probe.site.function == site
        assert proc.stdin is not None and proc.stdout is not None
        started = time.monotonic()
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "done"
        elapsed = time.monotonic() - started
        made = int(proc.stdout.readline().split()[1])  # "cancelled N"
        assert made == 2 + STORM + 1  # the deadline and its child, the storm, the parent
        wait_until(lambda: sum(c.count for c in seen) >= made, f"{made} cancellations")
        time.sleep(0.5)  # nothing more may arrive
    assert agent.lost == 0, agent.lost_by_reason
    by_kind: Counter[str] = Counter()
    named: Counter[str] = Counter()
    for c in seen:
        assert c.pid == proc.pid
        by_kind[c.error] += c.count
        if c.reason != UNNAMED:
            named[c.error] += c.count
    expected = {"deadline_exceeded": 2, "canceled": STORM + 1}
    if site == "on_store":
        assert by_kind == expected, by_kind
    else:
        # An entry uprobe may fire twice for one call (see test_go_cancellations):
        # a re-fire slower than go_probe.c's window counts once more.
        assert by_kind["deadline_exceeded"] == 2, by_kind
        assert STORM + 1 <= by_kind["canceled"] <= (STORM + 1) * 1.01, by_kind
    # The deadlines came one at a time, well within the budget: named.
    assert named["deadline_exceeded"] == 2, named
    # The storm is named on a sample no larger than the budget allows.
    windows = elapsed / WINDOW_S + 1
    budget = NAMED_PER_WINDOW * (os.cpu_count() or 1) * windows
    assert 0 < named["canceled"] <= budget, (named, budget)
    unnamed = sum(c.count for c in seen if c.reason == UNNAMED)
    assert unnamed == by_kind["canceled"] - named["canceled"] > 0
    # The named ones still name their caller; the others say they are not named.
    assert {c.caller for c in seen if c.reason == "canceled"} >= {"main.cancelExplicitly"}
    assert {c.where for c in seen if c.reason == UNNAMED} == {"(not named: canceled)"}
    # The exported series: the named share by reason, the rest as `unnamed`.
    labels = {"node": "n", "namespace": "", "pod": "", "container": "", "runtime": "go"}
    series = agent.registry.get_sample_value(
        "wukong_node_cancellations_total", labels | {"reason": UNNAMED}
    )
    assert series == unnamed
    exposition = generate_latest(agent.registry).decode()
    assert check_exposition(exposition, agent=True, require_samples=True) == []


def test_without_a_naming_budget_a_storm_is_named_whole(program: object) -> None:
    """`named_per_window=None` (what a test of every call site wants): nothing unnamed."""
    proc: subprocess.Popen[str] = program(  # type: ignore[operator]
        cancels_program(), "-deadlines=0", "-cancels=3000", "-causes=0", "-children=0"
    )
    seen: list[Cancellation] = []
    agent = Agent(
        node="n", discovery=Discovery(pids={proc.pid}), on_cancel=seen.append, named_per_window=None
    )
    with Running(agent) as running:
        wait_until(lambda: proc.pid in running.agent.probes, "the agent to attach")
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "done"
        wait_until(lambda: sum(c.count for c in seen) >= 3001, "3,001 cancellations")
        time.sleep(0.5)
    callers: Counter[str] = Counter()
    for c in seen:
        callers[c.caller] += c.count
    assert callers == {"main.cancelExplicitly": 3000, "main.cancelParent": 1}, callers
