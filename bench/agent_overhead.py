"""What the node agent costs: per traced cancellation, in the agent, and when nobody traces.

1. Probe overhead per cancel: the scripted Go program (tests/ebpf/programs/cancels)
   makes N explicit cancels, timed without the agent and with it attached,
   alternating, `--rounds` times; (with - without) / N.
2. Agent CPU at that event rate: CPU seconds the agent spent (polling, decoding,
   symbolizing, counting) per cancellation, and as a share of one core.
3. Python probe points when nobody traces: the runtime's AuditProbes observer
   called on a reconcile event against a no-op observer (the semaphore is 0).

Needs root (BPF). `.venv/bin/python bench/agent_overhead.py [--cancels 200000]`
"""

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
import timeit
from functools import partial
from pathlib import Path

from kubernetes_asyncio import client as k8s_client
from results import write_fragment

from wukong.devcluster import binaries
from wukong.ebpf.agent import Agent
from wukong.ebpf.discovery import Discovery
from wukong.runtime import Client, LifecycleEvent, ReconcileContext, Request, RuntimeObserver, Step
from wukong.runtime.probes import AuditProbes

PROGRAM = Path(__file__).resolve().parents[1] / "tests/ebpf/programs/cancels"


def _run_program(binary: Path, cancels: int, *, traced: bool) -> tuple[float, float, int]:
    """(wall seconds of the cancels, agent CPU seconds, cancellations counted)."""
    proc = subprocess.Popen(
        [str(binary), "-deadlines=0", "-causes=0", "-children=0", f"-cancels={cancels}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdout.readline()  # ready
    agent, stop, thread, cpu = None, threading.Event(), None, [0.0]
    if traced:
        agent = Agent(node="bench", discovery=Discovery(pids={proc.pid}), on_notice=lambda _: None)
        agent.step()
        assert proc.pid in agent.probes, "the agent did not attach"

        def poll() -> None:
            start = time.thread_time()
            while not stop.is_set():
                for probe in list(agent.probes.values()):
                    probe.poll()
                time.sleep(0.01)
            cpu[0] = time.thread_time() - start

        thread = threading.Thread(target=poll)
        thread.start()
    begin = time.perf_counter()
    proc.stdin.write("\n")
    proc.stdin.flush()
    proc.stdout.readline()  # done
    wall = time.perf_counter() - begin
    counted = 0
    if agent is not None and thread is not None:
        time.sleep(0.5)
        stop.set()
        thread.join()
        agent.step()
        counted = sum(agent.counts.values())
        agent.close()
    proc.stdin.write("\n")
    proc.stdin.flush()
    proc.wait()
    return wall, cpu[0], counted


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
    plain, traced, agent_cpu, counted = [], [], [], []
    for _ in range(args.rounds):
        plain.append(_run_program(binary, args.cancels, traced=False)[0])
        wall, cpu, count = _run_program(binary, args.cancels, traced=True)
        traced.append(wall)
        agent_cpu.append(cpu)
        counted.append(count)
    n = args.cancels
    base, with_agent = statistics.median(plain), statistics.median(traced)
    per_cancel_ns = (with_agent - base) / n * 1e9
    cpu_per_cancel_us = statistics.median(agent_cpu) / n * 1e6
    rate = n / with_agent
    core_share = statistics.median(agent_cpu) / with_agent
    idle_ns, noop_ns = _idle_probe_cost()
    print(f"cancels per round: {n}, rounds: {args.rounds} (medians); counted: {counted}")
    print(f"  Go program without agent: {base / n * 1e9:8.0f} ns per cancel")
    print(
        f"  Go program with agent:    {with_agent / n * 1e9:8.0f} ns per cancel "
        f"(probe overhead {per_cancel_ns:.0f} ns, x{with_agent / base:.2f})"
    )
    print(
        f"  agent CPU: {cpu_per_cancel_us:.1f} us per cancel at {rate:,.0f} cancels/s "
        f"= {100 * core_share:.0f}% of a core"
    )
    print(
        f"  Python probe points, nobody tracing: {idle_ns:.0f} ns per event "
        f"(a no-op observer: {noop_ns:.0f} ns)"
    )
    write_fragment(
        "agent_overhead",
        title=f"Node agent cost ({n} Go cancels x {args.rounds} rounds, medians)",
        header=["measure", "value", "peer", "ratio"],
        rows=[
            [
                "Go cancel, traced",
                f"{with_agent / n * 1e9:.0f} ns",
                f"untraced {base / n * 1e9:.0f} ns",
                f"x{with_agent / base:.2f}",
            ],
            ["probe overhead per cancel", f"{per_cancel_ns:.0f} ns", "", ""],
            [
                "agent CPU per cancel",
                f"{cpu_per_cancel_us:.1f} us",
                f"at {rate:,.0f} cancels/s",
                f"{100 * core_share:.0f}% of a core",
            ],
            [
                "Python probe point, untraced",
                f"{idle_ns:.0f} ns/event",
                f"no-op observer {noop_ns:.0f} ns",
                f"x{idle_ns / noop_ns:.2f}",
            ],
        ],
        notes=["Every cancel counted: " + ", ".join(str(c) for c in counted) + f" of {n}."],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
