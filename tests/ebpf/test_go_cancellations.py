"""Real uprobes on Go programs: exact counts by kind, the cause text, the calling function.

The scripted program (programs/cancels) expires 3 deadlines (each with a child
context, ended by propagation) and, when asked, deadlines with a cause, cancels 4 contexts,
cancels 5 with a cause and one parent with 2 children, each in a function of
its own, after a line on stdin. The agent is started before or after the
program; the program is built as a plain executable and as PIE (stripped
builds: test_stripped_go.py).
"""

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
from wukong.ebpf.go_probe import GoProbe
from wukong.ebpf.records import Cancellation


def _run_script(proc: "subprocess.Popen[str]") -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "done"


@pytest.mark.parametrize("agent_first", [False, True], ids=["program-first", "agent-first"])
@pytest.mark.parametrize("pie", [False, True], ids=["exec", "pie"])
def test_counts_each_kind_exactly_and_names_the_caller(
    program: object, agent_first: bool, pie: bool
) -> None:
    binary = cancels_program("-buildmode=pie") if pie else cancels_program()
    seen: list[Cancellation] = []
    proc = None
    if not agent_first:
        proc = program(binary)  # type: ignore[operator]
    discovery = Discovery(executables={binary})  # every process of it, started when it may
    agent = Agent(node="test-node", discovery=discovery, on_cancel=seen.append)
    with Running(agent) as running:
        if agent_first:
            proc = program(binary)  # type: ignore[operator]
        wait_until(lambda: proc.pid in running.agent.probes, "the agent to attach")
        probe = running.agent.probes[proc.pid]
        assert isinstance(probe, GoProbe) and probe.binary.pie is pie
        assert isinstance(probe, GoProbe) and probe.site.function == "on_store", probe.site
        _run_script(proc)
        wait_until(
            lambda: sum(c.count for c in seen if c.pid == proc.pid) >= 18, "18 cancellations"
        )
        time.sleep(0.5)  # nothing more may arrive
    mine = [c for c in seen if c.pid == proc.pid]
    assert _kinds(mine) == {
        ("deadline_exceeded", "", "context.WithDeadlineCause.func2", True): 3,
        ("deadline_exceeded", "", "context.WithDeadlineCause.func2", False): 3,  # children
        ("canceled", "", "main.cancelExplicitly", True): 4,
        ("canceled", "scripted cause", "main.cancelWithCause", True): 5,
        ("canceled", "", "main.cancelParent", True): 1,
        ("canceled", "", "main.cancelParent", False): 2,  # the children, by propagation
    }, _kinds(mine)
    # A root cancel is `canceled` (with its cause when it has one), a timer that
    # fires `deadline_exceeded`; the children cancelled through their parent are
    # `parent_cancelled`, whichever error they inherit: one deadline, one count.
    reasons: Counter[str] = Counter()
    for c in mine:
        reasons[c.reason] += c.count
    assert reasons == {
        "deadline_exceeded": 3,
        "canceled": 10,
        "parent_cancelled": 5,
    }
    deadline_stack = next(c.stack for c in mine if c.error == "deadline_exceeded")
    assert deadline_stack[0] == "context.(*cancelCtx).cancel"
    _check_agent_contract(agent)


def _kinds(cancellations: list[Cancellation]) -> Counter[tuple[str, str, str, bool]]:
    kinds: Counter[tuple[str, str, str, bool]] = Counter()
    for c in cancellations:
        kinds[(c.error, c.cause, c.caller, c.root)] += c.count
    return kinds


@pytest.mark.parametrize("site", ["on_store", "on_entry"])
def test_no_op_cancels_are_not_counted_at_either_probe_site(
    program: object, site: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cancel() on a context already cancelled is no cancellation: the store
    site never sees it, the entry fallback (another compiler's layout) skips it."""
    if site == "on_entry":
        import wukong.ebpf.go_probe as go_probe

        def entry_only(binary: Binary, code: bytes) -> ProbeSite:
            return ProbeSite(binary.symbols[CANCEL_SYMBOL][0], "on_entry", "forced by the test")

        monkeypatch.setattr(go_probe, "find_site", entry_only)
    proc = program(cancels_program(), "-noops=50")  # type: ignore[operator]
    seen: list[Cancellation] = []
    agent = Agent(node="n", discovery=Discovery(pids={proc.pid}), on_cancel=seen.append)
    with Running(agent) as running:
        wait_until(lambda: proc.pid in running.agent.probes, "the agent to attach")
        probe = running.agent.probes[proc.pid]
        assert isinstance(probe, GoProbe) and probe.site.function == site
        assert _traced(agent) == 1
        _run_script(proc)
        wait_until(lambda: sum(c.count for c in seen) >= 19, "19 cancellations")
        time.sleep(0.5)  # nothing more may arrive
    assert _traced(agent) is None  # detached: the series went with it
    kinds = _kinds(seen)
    # The 50 no-op cancels after the first are not counted, at either site.
    assert kinds[("canceled", "", "main.cancelAgain", True)] == 1, kinds
    counted = sum(kinds.values())  # 18 as above, and the one before the no-ops
    if site == "on_store":
        assert counted == 19, kinds
    else:
        # An entry uprobe can fire twice for one call on this VM (a signal during
        # the single-step restarts the instruction); go_probe.c drops a re-fire
        # within REFIRE_WINDOW_NS, and a slower one may still count once more.
        assert counted in (19, 20), kinds
    assert ("canceled", "scripted cause", "main.cancelWithCause", True) in kinds
    assert agent.lost == 0


def test_a_deadline_with_a_cause_is_a_deadline_that_names_it(program: object) -> None:
    """WithTimeoutCause: the timer cancels with the cause, which the agent reads as text;
    a cause never turns a deadline into `canceled`."""
    proc = program(  # type: ignore[operator]
        cancels_program(),
        "-deadlines=0",
        "-deadline-causes=2",
        "-cancels=0",
        "-causes=0",
        "-children=0",
    )
    seen: list[Cancellation] = []
    agent = Agent(node="n", discovery=Discovery(pids={proc.pid}), on_cancel=seen.append)
    with Running(agent) as running:
        wait_until(lambda: proc.pid in running.agent.probes, "the agent to attach")
        _run_script(proc)
        wait_until(lambda: sum(c.count for c in seen) >= 3, "3 cancellations")
        time.sleep(0.5)  # nothing more may arrive
    assert _kinds(seen) == {
        ("deadline_exceeded", "scripted deadline", "context.WithDeadlineCause.func2", True): 2,
        ("canceled", "", "main.cancelParent", True): 1,  # the parent, with no children
    }, _kinds(seen)
    assert {c.reason for c in seen if c.cause} == {"deadline_exceeded"}


def _traced(agent: Agent) -> float | None:
    """The agent's gauge of traced processes for an unattributed Go process."""
    labels = {"node": agent.node, "namespace": "", "pod": "", "container": "", "runtime": "go"}
    return agent.registry.get_sample_value("wukong_node_traced_processes", labels)


def _check_agent_contract(agent: Agent) -> None:
    """The agent's exposition meets the contract for node agents (docs/contract.md)."""
    exposition = generate_latest(agent.registry).decode()
    assert check_exposition(exposition, agent=True, require_samples=True) == []
    assert 'reason="canceled"' in exposition
