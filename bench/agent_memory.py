"""The node agent's memory: what an idle agent holds, and what each target adds.

The agent runs in a child process (as `wukong agent` would) and reports, after
each step, its resident memory (VmRSS) and the kernel memory of its BPF maps
(the `memlock` of every map it holds, from /proc/PID/fdinfo: charged to the
agent's cgroup on kernels >= 5.11, so to the pod's memory limit). Measured:

1. the floor: the agent with nothing to trace (its exec/exit events and the
   Go program it compiles ahead);
2. with 1, then MAX_BINARIES Go binaries traced (copies of the test program at
   paths of their own: a binary each), and 4 processes of one binary;
3. with 1, then 8 Python operators traced (Debian's interpreter: its USDT probe).

Per-target costs are the increments over the floor divided by the number of
targets; the total bound is the floor plus the agent's caps times those costs.
The README ("The agent's memory") and the chart's memory limit quote this.

Needs root (BPF). `.venv/bin/python bench/agent_memory.py`
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from results import print_table, write_fragment

from wukong.devcluster import binaries
from wukong.ebpf.agent import MAX_BINARIES, MAX_PYTHON_PROCESSES

PROGRAM = Path(__file__).resolve().parents[1] / "tests/ebpf/programs/cancels"
MIB = 1024 * 1024

# The agent's side: steps until the targets it was told of are traced, then says
# what it holds. One JSON line per request on stdin ("pid pid ...").
_AGENT = """
import json, os, sys, time
from pathlib import Path
from wukong.ebpf.agent import Agent
from wukong.ebpf.discovery import Discovery

wanted = set()
discovery = Discovery(pids=wanted)
agent = Agent(node="bench", discovery=discovery, on_notice=lambda _: None)

def bpf_bytes():
    total = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            text = Path(f"/proc/self/fdinfo/{fd}").read_text()
        except OSError:
            continue
        if "map_type:" in text:
            total += int(next(l.split()[1] for l in text.splitlines() if l.startswith("memlock:")))
    return total

def status(field):
    lines = Path("/proc/self/status").read_text().splitlines()
    return int(next(l for l in lines if l.startswith(field)).split()[1]) * 1024

agent.step()
agent._spare.result()  # the program compiled ahead is part of the floor
for line in sys.stdin:
    wanted.update(int(pid) for pid in line.split())
    deadline = time.monotonic() + 120
    while not wanted <= set(agent.probes) and time.monotonic() < deadline:
        agent.step()
        time.sleep(0.05)
    if agent._spare is not None:
        agent._spare.result()
    held = {"rss": status("VmRSS"), "bpf": bpf_bytes(), "peak": status("VmHWM")}
    print(json.dumps(held | {"traced": len(agent.probes)}), flush=True)
agent.close()
"""

_PYTHON_OPERATOR = "import sys\nprint('ready', flush=True)\nsys.stdin.readline()\n"


def _start(argv: list[str]) -> "subprocess.Popen[bytes]":
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


def main() -> int:
    if os.geteuid() != 0:
        print("agent_memory: needs root for BPF; skipped", file=sys.stderr)
        return 0
    built = binaries.go_program(
        PROGRAM, name="test-cancels", progress=lambda line: print(line, file=sys.stderr)
    )
    work = Path(tempfile.mkdtemp(prefix="wukong-agent-memory-"))
    targets: list[subprocess.Popen[bytes]] = []
    agent = subprocess.Popen(
        [sys.executable, "-c", _AGENT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )

    def measure(*procs: "subprocess.Popen[bytes]") -> dict[str, int]:
        assert agent.stdin is not None and agent.stdout is not None
        agent.stdin.write(" ".join(str(proc.pid) for proc in procs) + "\n")
        agent.stdin.flush()
        return dict(json.loads(agent.stdout.readline()))

    try:
        floor = measure()
        steps: list[tuple[str, int, dict[str, int]]] = []  # label, targets, held
        copies = []
        for index in range(MAX_BINARIES):
            copy = work / f"controller-{index}"
            shutil.copy2(built, copy)
            copies.append(copy)
        for count in (1, MAX_BINARIES):
            started = [_start([str(copy)]) for copy in copies[len(targets) : count]]
            targets += started
            steps.append((f"{count} Go binaries", count, measure(*started)))
        same = [_start([str(copies[0])]) for _ in range(4)]
        targets += same
        steps.append((f"{MAX_BINARIES} Go binaries, +4 processes of one", 0, measure(*same)))
        script = work / "wukong_operator_stand_in.py"
        script.write_text(_PYTHON_OPERATOR)
        python: list[subprocess.Popen[bytes]] = []
        go_total = steps[-1][2]
        for count in (1, 8):
            started = [
                _start(["/usr/bin/python3", str(script)]) for _ in range(count - len(python))
            ]
            python += started
            targets += started
            steps.append((f"+{count} Python operators", count, measure(*started)))
    finally:
        if agent.stdin is not None:
            agent.stdin.close()
        agent.wait(60)
        for proc in targets:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)

    def mib(value: float) -> str:
        return f"{value / MIB:.1f}"

    header = ["agent tracing", "processes traced", "resident MiB", "BPF maps MiB", "total MiB"]

    def total(held: dict[str, int]) -> int:
        return held["rss"] + held["bpf"]

    last = steps[-1][2]

    rows = [
        [label, str(held["traced"]), mib(held["rss"]), mib(held["bpf"]), mib(total(held))]
        for label, held in [("nothing (the floor)", floor), *((name, h) for name, _, h in steps)]
    ]
    print_table(header, rows)

    per_binary = (total(steps[1][2]) - total(floor)) / MAX_BINARIES
    per_process = (total(steps[2][2]) - total(steps[1][2])) / 4
    per_python = (total(steps[-1][2]) - total(go_total)) / 8
    bound = total(floor) + MAX_BINARIES * per_binary + MAX_PYTHON_PROCESSES * per_python
    maps_per_binary = (steps[1][2]["bpf"] - floor["bpf"]) / MAX_BINARIES
    notes = [
        f"Per Go binary: {mib(per_binary)} MiB ({mib(maps_per_binary)} of it kernel memory, "
        f"its maps); per further process of a traced binary: {mib(per_process)} MiB; "
        f"per Python operator: {mib(per_python)} MiB.",
        f"Bound with the agent's caps ({MAX_BINARIES} Go binaries, {MAX_PYTHON_PROCESSES} Python "
        f"operators): {mib(bound)} MiB, x{bound / total(floor):.2f} the floor, before the "
        "compiler's peaks while it compiles.",
        f"Peak resident memory over the whole run (VmHWM, the compiles included): "
        f"{mib(last['peak'])} MiB, with {mib(last['bpf'])} MiB of maps beside it.",
    ]
    for note in notes:
        print(note)
    write_fragment(
        "agent_memory",
        title="Node agent memory: the floor and what each target adds",
        header=header,
        rows=rows,
        notes=notes,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
