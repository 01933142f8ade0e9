"""What the node agent costs: per traced cancellation, against the kernel's floor.

The scripted Go program (tests/ebpf/programs/cancels) runs N cancels in each
variant below, one process per run, the variants alternating within each of
`--rounds` rounds; every ratio is taken within a round, then min/median/max:

1. untraced: the program alone;
2. floor: a bare uprobe with an empty BPF program (BCC) on the same function,
   at its entry (what any tracer of cancel() pays) and at the agent's own probe
   site (the call that stores the error): the kernel's trap and nothing else;
3. agent: the agent attached and polling as `wukong agent` does: every cancel
   counted, callers named within the kernel's naming budget (a storm's rest
   counted by process and kind, `unnamed`); and the agent naming every cancel
   (no budget), what naming costs;
4. bpftrace: the one-liner an SRE would type instead in an incident, every
   cancel()'s stack counted (`@[ustack] = count()` on cancel's entry), with
   the agent's filter (only the workload's pid: a predicate in the kernel).

Then: 50 N cancel() calls on a context already cancelled (no-ops),
untraced against the agent; the agent's CPU per cancellation (its polling
thread) and its BPF program's run time per cancellation against an empty
program's at the same site (kernel BPF stats, in runs of their own: enabling
them costs time); cancellations counted against made,
and lost events as the agent counts them. Last, the Python probe points when
nobody traces (the semaphore is 0) against a no-op observer.

Needs root (BPF). `.venv/bin/python bench/agent_overhead.py [--cancels 200000]`
"""

import argparse
import asyncio
import logging
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import timeit
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from kubernetes_asyncio import client as k8s_client
from results import spread, write_fragment

from wukong.devcluster import binaries
from wukong.ebpf.agent import Agent
from wukong.ebpf.discovery import Discovery
from wukong.ebpf.elf import CANCEL_SYMBOL, load_bias, read_binary, read_code, read_memory
from wukong.ebpf.go_cancel_site import find_site
from wukong.ebpf.go_probe import NAMED_PER_WINDOW, UNNAMED, GoProbe
from wukong.ebpf.records import Cancellation
from wukong.runtime import Client, ReconcileContext, Request, RuntimeObserver
from wukong.runtime.observe import LifecycleEvent, Step
from wukong.runtime.probes import AuditProbes

PROGRAM = Path(__file__).resolve().parents[1] / "tests/ebpf/programs/cancels"
_EMPTY = b"int probe(struct pt_regs *ctx) { return 0; }"
_SCRIPT = ("-deadlines=0", "-children=0")
_POLL_INTERVAL = 0.05
_NOOPS_PER_CANCEL = 50  # as `wukong agent` polls
_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
_BPFTRACE = "/usr/bin/bpftrace"
# The agent per cancel against a bare uprobe at its own site: at most this.
_GOAL_VS_BARE_SITE = 1.2
_BREAKPOINT = b"\xcc"  # int3: what a uprobe writes over the probed instruction


@dataclass
class Run:
    seconds: float  # wall time of the scripted cancels
    agent_cpu: float = 0.0  # CPU seconds of the agent's polling thread
    counted: int = 0  # cancellations the agent counted
    named: int = 0  # of them, with their caller named (within the naming budget)
    lost: int = 0
    bpf_ns: float = 0.0  # BPF program run time per run (with kernel stats on)
    site: str = ""


@contextmanager
def program(
    binary: Path, *, cancels: int, noops: int, causes: int = 0
) -> Iterator["subprocess.Popen[str]"]:
    """The scripted Go program, ready: `timed` runs its cancels."""
    proc = subprocess.Popen(
        [str(binary), *_SCRIPT, f"-cancels={cancels}", f"-noops={noops}", f"-causes={causes}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def timed(proc: "subprocess.Popen[str]") -> float:
    assert proc.stdin is not None and proc.stdout is not None
    begin = time.perf_counter()
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "done"
    return time.perf_counter() - begin


def run_untraced(binary: Path, *, cancels: int, noops: int) -> Run:
    with program(binary, cancels=cancels, noops=noops) as proc:
        return Run(timed(proc))


def run_bare(binary: Path, *, cancels: int, noops: int, at_site: bool, stats: bool = False) -> Run:
    """An empty BPF program on cancel's entry, or on the agent's probe site."""
    from bcc import BPF

    with program(binary, cancels=cancels, noops=noops) as proc:
        elf = read_binary(binary)
        start, size = elf.symbols[CANCEL_SYMBOL]
        site = find_site(elf, read_code(binary, start, size)) if at_site else None
        bpf = BPF(text=_EMPTY)
        bpf.attach_uprobe(
            name=str(binary).encode(),
            addr=site.address if site else start,
            fn_name=b"probe",
            pid=proc.pid,
        )
        try:
            with bpf_stats(stats):
                seconds = timed(proc)
                bpf_ns = _ns_per_run(bpf.funcs[b"probe"].fd) if stats else 0.0
            return Run(seconds, bpf_ns=bpf_ns)
        finally:
            bpf.cleanup()


def run_bpftrace(binary: Path, *, cancels: int, noops: int) -> Run:
    """The incident one-liner: every cancel()'s user stack counted, by bpftrace."""
    with program(binary, cancels=cancels, noops=noops) as proc:
        elf = read_binary(binary)
        entry = elf.symbols[CANCEL_SYMBOL][0] + load_bias(proc.pid, elf)
        script = f'uprobe:{binary}:"{CANCEL_SYMBOL}" /pid == {proc.pid}/ {{ @[ustack] = count(); }}'
        tracer = subprocess.Popen(
            [_BPFTRACE, "-e", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            # Attached once the kernel's breakpoint is in the workload (bpftrace
            # says "Attaching" before it attaches).
            while read_memory(proc.pid, entry, 1) != _BREAKPOINT:
                if tracer.poll() is not None:
                    raise RuntimeError(f"bpftrace ended: {tracer.communicate()[1]}")
                time.sleep(0.05)
            seconds = timed(proc)
        finally:
            tracer.send_signal(signal.SIGINT)  # it prints its map and ends
            out, _ = tracer.communicate(timeout=300)
        # One `@[stack]: count` entry per stack id: the calls are their sum.
        calls = sum(int(count) for count in re.findall(r"^\]: (\d+)$", out, re.MULTILINE))
        return Run(seconds, counted=calls)


def run_agent(
    binary: Path,
    *,
    cancels: int,
    noops: int,
    stats: bool = False,
    named_per_window: int | None = NAMED_PER_WINDOW,
) -> Run:
    with program(binary, cancels=cancels, noops=noops) as proc:
        counted = [0, 0]  # all, named

        def on_cancel(cancellation: Cancellation) -> None:
            counted[0] += cancellation.count
            if cancellation.reason != UNNAMED:
                counted[1] += cancellation.count

        agent = Agent(
            node="bench",
            discovery=Discovery(pids={proc.pid}),
            on_cancel=on_cancel,
            on_notice=lambda _: None,
            named_per_window=named_per_window,
        )
        agent.rescan()
        probe = agent.probes.get(proc.pid)
        assert isinstance(probe, GoProbe), "the agent did not attach"
        # Having used its program compiled ahead, the agent compiles the next
        # one (a second of CPU): timed after it, as the agent runs between new binaries.
        until_idle()
        stop, cpu = threading.Event(), [0.0]

        def poll() -> None:
            begin = time.thread_time()
            while not stop.wait(_POLL_INTERVAL):
                probe.poll()
            cpu[0] = time.thread_time() - begin

        thread = threading.Thread(target=poll)
        with bpf_stats(stats):
            thread.start()
            seconds = timed(proc)
            stop.set()
            thread.join()
            probe.poll()
            run = Run(
                seconds,
                agent_cpu=cpu[0],
                counted=counted[0],
                named=counted[1],
                lost=agent.lost,
                bpf_ns=_ns_per_run(probe.bpf.funcs[probe.site.function.encode()].fd)
                if stats
                else 0.0,
                site=probe.site.function,
            )
        agent.close()
        return run


def missing_named_ok(rounds: list[dict[str, Run]], n: int) -> bool:
    """Whether the budgeted agent's total (named and not) is every cancellation."""
    return all(r["agent"].counted == n + 1 for r in rounds)


def until_idle(*, window: float = 0.2, busy: float = 0.1, limit: float = 30.0) -> None:
    """Until this process (the agent's threads) uses less than `busy` of a core
    over `window` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = time.process_time()
        time.sleep(window)
        if time.process_time() - before < busy * window:
            return
    raise TimeoutError(f"the agent still busy after {limit} s")


@contextmanager
def bpf_stats(enabled: bool) -> Iterator[None]:
    """Kernel BPF run-time statistics, on for this block only (they cost time)."""
    if not enabled:
        yield
        return
    before = _STATS.read_text()
    _STATS.write_text("1")
    try:
        yield
    finally:
        _STATS.write_text(before)


def _ns_per_run(fd: int) -> float:
    """Nanoseconds per run of the loaded BPF program `fd` (kernel BPF stats)."""
    run_time, runs = prog_stats(fd)
    return run_time / runs if runs else 0.0


def prog_stats(fd: int) -> tuple[int, int]:
    """A loaded BPF program's (run_time_ns, run_cnt) so far (/proc fdinfo; kernel BPF stats)."""
    info = dict(
        line.split(":", 1) for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines()
    )
    return int(info.get("run_time_ns", "0")), int(info.get("run_cnt", "0"))


class _NoOp(RuntimeObserver):
    """The cheapest observer: the floor the probe points are compared with."""


def _idle_probe_cost() -> tuple[float, float]:
    """ns per reconcile event: AuditProbes with no tracer, and a no-op observer."""

    async def measure() -> tuple[float, float]:
        client = Client(k8s_client.ApiClient(configuration=k8s_client.Configuration()))
        context = ReconcileContext(
            controller="bench",
            request=Request("ns", "name"),
            timeout=15.0,
            client=client,
            logger=logging.getLogger("bench"),
        )
        event = LifecycleEvent(step=Step.STARTED, context=context)
        probes, noop = AuditProbes(), _NoOp()
        number = 1_000_000
        timings = [
            min(timeit.repeat(partial(observer.reconcile, event), number=number, repeat=5))
            / number
            * 1e9
            for observer in (probes, noop)
        ]
        await client.close()
        return timings[0], timings[1]

    return asyncio.run(measure())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cancels", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("agent_overhead: needs root for BPF; skipped", file=sys.stderr)
        return 0
    binary = binaries.go_program(
        PROGRAM, name="test-cancels", progress=lambda line: print(line, file=sys.stderr)
    )
    n = args.cancels
    load_before = os.getloadavg()[0]
    # No-ops cost nanoseconds: many more of them, so a run outlasts the noise.
    noops = n * _NOOPS_PER_CANCEL
    effective = partial(run_untraced, binary, cancels=n, noops=0)
    variants: dict[str, Callable[[], Run]] = {
        "untraced": effective,
        "bare entry": partial(run_bare, binary, cancels=n, noops=0, at_site=False),
        "bare site": partial(run_bare, binary, cancels=n, noops=0, at_site=True),
        "agent": partial(run_agent, binary, cancels=n, noops=0),
        "agent naming all": partial(run_agent, binary, cancels=n, noops=0, named_per_window=None),
        "bpftrace": partial(run_bpftrace, binary, cancels=n, noops=0),
        "no-op untraced": partial(run_untraced, binary, cancels=0, noops=noops),
        "no-op agent": partial(run_agent, binary, cancels=0, noops=noops),
    }
    rounds: list[dict[str, Run]] = []
    for index in range(args.rounds):
        names = list(variants)
        if index % 2:  # alternate the order: drift in the machine's load hits both ends
            names.reverse()
        rounds.append({name: variants[name]() for name in names})
        print(
            f"round {index + 1}: "
            + ", ".join(
                f"{name} {run.seconds:.3f} s{' ' + run.site if run.site else ''}"
                for name, run in rounds[-1].items()
            ),
            file=sys.stderr,
        )
    # Kernel BPF statistics cost time: they get runs of their own, the agent's
    # program and an empty one at the same site one after the other.
    stats_run = run_agent(binary, cancels=n, noops=0, stats=True)
    stats_floor = run_bare(binary, cancels=n, noops=0, at_site=True, stats=True)

    def ns(name: str) -> list[float]:
        return [r[name].seconds / (noops if name.startswith("no-op") else n) * 1e9 for r in rounds]

    def ratio(a: str, b: str) -> list[float]:
        return [r[a].seconds / r[b].seconds for r in rounds]

    def overhead(name: str) -> list[float]:
        return [(r[name].seconds - r["untraced"].seconds) / n * 1e9 for r in rounds]

    all_over = overhead("agent naming all")
    all_vs_site = [a / b for a, b in zip(all_over, overhead("bare site"), strict=True)]
    named_share = [
        f"{r['agent'].named}/{r['agent'].counted} ({r['agent'].named / r['agent'].counted:.1%})"
        for r in rounds
    ]
    agent_over, entry_over, site_over = (
        overhead("agent"),
        overhead("bare entry"),
        overhead("bare site"),
    )
    over_vs_entry = [a / b for a, b in zip(agent_over, entry_over, strict=True)]
    over_vs_site = [a / b for a, b in zip(agent_over, site_over, strict=True)]
    bpftrace_over = overhead("bpftrace")
    over_vs_bpftrace = [a / b for a, b in zip(agent_over, bpftrace_over, strict=True)]
    # bpftrace counts every call of cancel(): the scripted cancels and the parent's.
    bpftrace_counted = [f"{r['bpftrace'].counted}/{n + 1}" for r in rounds]
    cpu_us = [r["agent"].agent_cpu / n * 1e6 for r in rounds]
    rate = [n / r["agent"].seconds for r in rounds]
    core = [r["agent"].agent_cpu / r["agent"].seconds * 100 for r in rounds]
    runs = [r[name] for r in rounds for name in ("agent", "agent naming all", "no-op agent")]
    runs.append(stats_run)
    # Every cancel and the parent cancelParent ends; the no-op run: cancelAgain's
    # one cancellation and the parent.
    made = {"agent": n + 1, "agent naming all": n + 1, "no-op agent": 2}
    counted = [f"{r[name].counted}/{made[name]}" for r in rounds for name in made]
    missing = sum(made[name] - r[name].counted for r in rounds for name in made)
    missing += n + 1 - stats_run.counted
    lost = sum(run.lost for run in runs)
    idle_ns, noop_ns = _idle_probe_cost()
    sites = {run.site for run in runs}
    site = "/".join(sorted(sites))
    where = (
        "the call storing the error: effective cancels only"
        if sites == {"on_store"}
        else "the entry: every cancel() traps"
    )
    rows = [
        [
            "Go cancel, traced by the agent",
            f"{spread(ns('agent'), '{:.0f}')} ns",
            f"bare uprobe at the agent's site {spread(ns('bare site'), '{:.0f}')} ns",
            f"x{spread(ratio('agent', 'bare site'))}",
        ],
        [
            "probe overhead per cancel (traced - untraced)",
            f"{spread(agent_over, '{:.0f}')} ns",
            f"bare uprobe at cancel's entry {spread(entry_over, '{:.0f}')} ns",
            f"x{spread(over_vs_entry)}",
        ],
        [
            "probe overhead per cancel",
            f"{spread(agent_over, '{:.0f}')} ns",
            f"bare uprobe at the agent's site {spread(site_over, '{:.0f}')} ns",
            f"x{spread(over_vs_site)}; goal <= x{_GOAL_VS_BARE_SITE}: "
            + ("met" if statistics.median(over_vs_site) <= _GOAL_VS_BARE_SITE else "NOT met"),
        ],
        [
            "probe overhead per cancel, every caller named (no naming budget)",
            f"{spread(all_over, '{:.0f}')} ns",
            f"bare uprobe at the agent's site {spread(site_over, '{:.0f}')} ns",
            f"x{spread(all_vs_site)}",
        ],
        [
            "cancels named (caller, cause, root or parent's) within the naming budget",
            ", ".join(named_share),
            f"budget: {NAMED_PER_WINDOW} per CPU per 10 ms; the rest counted by process "
            "and kind (`unnamed`)",
            "totals exact" if missing_named_ok(rounds, n) else "totals NOT exact",
        ],
        [
            "probe overhead per cancel",
            f"{spread(agent_over, '{:.0f}')} ns",
            "bpftrace one-liner (`@[ustack] = count()` at cancel's entry, `/pid == N/`) "
            f"{spread(bpftrace_over, '{:.0f}')} ns",
            f"x{spread(over_vs_bpftrace)}; goal < x1: "
            + ("met" if statistics.median(over_vs_bpftrace) < 1 else "NOT met"),
        ],
        [
            "Go cancel, untraced",
            f"{spread(ns('untraced'), '{:.0f}')} ns",
            "",
            "",
        ],
        [
            "no-op cancel (already cancelled), agent attached",
            f"{spread(ns('no-op agent'), '{:.1f}')} ns",
            f"untraced {spread(ns('no-op untraced'), '{:.1f}')} ns",
            f"x{spread(ratio('no-op agent', 'no-op untraced'))}",
        ],
        [
            "agent CPU per cancel (user space)",
            f"{spread(cpu_us, '{:.3f}')} us",
            f"at {spread(rate, '{:,.0f}')} cancels/s",
            f"{spread(core, '{:.2f}')}% of a core",
        ],
        [
            "agent BPF program per cancel (kernel)",
            f"{stats_run.bpf_ns:.0f} ns",
            f"empty program at the agent's site {stats_floor.bpf_ns:.0f} ns",
            f"x{stats_run.bpf_ns / stats_floor.bpf_ns:.2f}",
        ],
        [
            "cancellations missing from the counts",
            f"{missing}",
            f"lost events counted by the agent: {lost}",
            "all counted" if missing == 0 and lost == 0 else "NOT all counted",
        ],
        [
            "Python probe point, untraced",
            f"{idle_ns:.0f} ns/event",
            f"no-op observer {noop_ns:.0f} ns",
            f"x{idle_ns / noop_ns:.2f}",
        ],
    ]
    for row in rows:
        print(f"  {row[0]}: {row[1]} | {row[2]} | {row[3]}")
    write_fragment(
        "agent_overhead",
        title=f"Node agent cost ({n} Go cancels per run x {args.rounds} rounds)",
        header=["measure", "agent", "peer or floor (same round)", "ratio"],
        rows=rows,
        notes=[
            "Values: median (min-max) over rounds; each ratio is taken within a round. "
            f"The agent probes `{site}` ({where}); "
            "a bare uprobe is an empty BCC program, the kernel's trap alone.",
            "Counted/made per run (agent, agent naming all, no-op agent): "
            + ", ".join(counted)
            + f"; the kernel-stats run: {stats_run.counted}/{n + 1}; bpftrace's map (every "
            "cancel() call: the scripted cancels and the parent's): "
            + ", ".join(bpftrace_counted)
            + ".",
            'The one-liner: `bpftrace -e \'uprobe:BINARY:"context.(*cancelCtx).cancel" '
            "/pid == N/ { @[ustack] = count(); }'`, timed once the kernel's breakpoint is in "
            "the workload; its stack walk covers the whole user stack (5 frames in this "
            "workload, more in a controller's), the agent's key at most 8 frames.",
            "Goals judged on the median ratio. The machine's load average (1 min) before and "
            f"after the runs: {load_before:.1f}, {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} cores (other work shares it: the ranges say how much it moved).",
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
