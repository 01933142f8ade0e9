"""Processes that start after the agent: counted from their first cancellation.

A Go binary is probed on its file, so a new process of a binary the agent
already traces is counted by the kernel from its start, however short its
life: here each run cancels its 18 contexts in its first ~80 ms and exits,
ten times over, and the agent's count for each run is exactly 18, the ones
that ended before the agent looked at them included. A process of the same
binary that the agent's filter leaves out is counted nowhere, and a Python
operator started after the agent is attached from its exec.
"""

import os
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

from tests.ebpf.agent_helpers import Running, cancels_program
from tests.polling import wait_until
from wukong.ebpf.agent import Agent
from wukong.ebpf.discovery import Discovery
from wukong.ebpf.elf import read_binary
from wukong.ebpf.go_probe import GoProbe
from wukong.ebpf.records import Cancellation

PER_RUN = 18  # the program's default script: 3 deadlines (+3 children), 4, 5, 1 (+2)


def _binary(directory: Path) -> Path:
    """A copy of its own: a file (inode) and command name no other test's process has
    (the agents here trace only it, every process of it)."""
    built = cancels_program()
    copy = directory / "crashloop"
    shutil.copy2(built, copy)
    return copy


def _mine(seen: list[Cancellation]) -> list[Cancellation]:
    return [c for c in seen if c.comm == "crashloop"]


def _per_pid(seen: list[Cancellation]) -> Counter[int]:
    counts: Counter[int] = Counter()
    for cancellation in seen:
        counts[cancellation.pid] += cancellation.count
    return counts


def test_every_run_of_a_traced_binary_is_counted_exactly_from_its_start(tmp_path: Path) -> None:
    binary = _binary(tmp_path)
    seen: list[Cancellation] = []
    resident = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert resident.stdout is not None and resident.stdout.readline().strip() == b"ready"
        agent = Agent(node="n", discovery=Discovery(executables={binary}), on_cancel=seen.append)
        with Running(agent) as running:
            wait_until(
                lambda: resident.pid in running.agent.probes, "the agent to probe the binary"
            )
            probe = running.agent.probes[resident.pid]
            assert isinstance(probe, GoProbe)
            for _ in range(10):  # a crash loop: start, cancel at once, exit
                run = subprocess.run(
                    [str(binary), "-wait=false"], capture_output=True, text=True, check=True
                )
                assert run.stdout.split() == ["ready", "done"]
            pids = _run_pids(running.agent, before=resident.pid, count=10, seen=seen)
            wait_until(
                lambda: all(_per_pid(_mine(seen))[pid] >= PER_RUN for pid in pids),
                "every run's cancellations",
            )
            time.sleep(0.5)  # nothing more may arrive
            # Every run ended: none is left traced, and the kernel forgot them all.
            wait_until(
                lambda: not any(pid in running.agent.probes or probe.ran(pid) for pid in pids),
                "the runs to be forgotten",
            )
        counted = _per_pid(_mine(seen))
        assert [counted[pid] for pid in pids] == [PER_RUN] * 10, counted
        assert agent.lost == 0
    finally:
        resident.kill()
        resident.wait()


def _run_pids(agent: Agent, *, before: int, count: int, seen: list[Cancellation]) -> list[int]:
    """The pids of the short runs, in order: every Go pid the agent counted but the resident."""
    wait_until(
        lambda: len({c.pid for c in _mine(seen)} - {before}) >= count,
        f"{count} runs to be counted",
    )
    pids = {c.pid for c in _mine(seen)} - {before}
    return sorted(pids, key=lambda pid: _first(seen, pid))


def _first(seen: list[Cancellation], pid: int) -> float:
    return min(c.time for c in seen if c.pid == pid)


def test_a_process_the_filter_leaves_out_is_counted_nowhere(tmp_path: Path) -> None:
    binary = _binary(tmp_path)
    seen: list[Cancellation] = []
    traced = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    procs = [traced]
    try:
        assert traced.stdout is not None and traced.stdout.readline().strip() == b"ready"
        agent = Agent(node="n", discovery=Discovery(pids={traced.pid}), on_cancel=seen.append)
        with Running(agent) as running:
            wait_until(lambda: traced.pid in running.agent.probes, "the agent to probe the binary")
            # Same binary, so the kernel's probe fires in it too: the filter is in the kernel.
            other = subprocess.run(
                [str(binary), "-wait=false"], capture_output=True, text=True, check=True
            )
            assert other.stdout.split() == ["ready", "done"]
            assert traced.stdin is not None and traced.stdout is not None
            traced.stdin.write(b"\n")
            traced.stdin.flush()
            assert traced.stdout.readline().strip() == b"done"
            wait_until(lambda: _per_pid(seen)[traced.pid] >= PER_RUN, "the traced run")
            time.sleep(0.5)  # nothing more may arrive
        assert _per_pid(seen) == {traced.pid: PER_RUN}
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_a_python_operator_started_after_the_agent_is_traced_from_its_exec(
    tmp_path: Path,
) -> None:
    """Found from its exec, not from a scan: the agent here never scans /proc."""
    interpreter = Path("/usr/bin/python3")  # Debian's: it has the USDT probes
    agent = Agent(
        node="n", discovery=Discovery(executables={interpreter}), on_cancel=lambda _: None
    )
    agent.poll()  # the exec events are on; no rescan follows
    script = tmp_path / "wukong_operator_stand_in.py"
    script.write_text("import sys, time\nprint('ready', flush=True)\nsys.stdin.readline()\n")
    # The script's name carries "wukong" as an operator's command line does.
    proc = subprocess.Popen(
        [str(interpreter), str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        wait_until(lambda: (agent.poll(), proc.pid in agent.probes)[1], "the agent to attach")
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    finally:
        proc.kill()
        proc.wait()
        agent.close()


def test_a_run_cancelling_while_the_agent_takes_it_on_loses_nothing(tmp_path: Path) -> None:
    """Each run cancels from its first millisecond for a few hundred: the agent hears of
    its exec and attributes it in the middle of that, and not one count goes missing."""
    binary = _binary(tmp_path)
    per_run = 1_000_000 + 1  # the explicit cancels, and cancelParent's parent
    seen: list[Cancellation] = []
    resident = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert resident.stdout is not None and resident.stdout.readline().strip() == b"ready"
        agent = Agent(node="n", discovery=Discovery(executables={binary}), on_cancel=seen.append)
        with Running(agent) as running:
            wait_until(lambda: resident.pid in running.agent.probes, "the agent to probe it")
            for _ in range(5):
                subprocess.run(
                    [
                        str(binary),
                        "-wait=false",
                        "-deadlines=0",
                        "-cancels=1000000",
                        "-causes=0",
                        "-children=0",
                    ],
                    capture_output=True,
                    check=True,
                )
            pids = _run_pids(running.agent, before=resident.pid, count=5, seen=seen)
            wait_until(
                lambda: all(_per_pid(_mine(seen))[pid] >= per_run for pid in pids),
                "every run's cancellations",
            )
            time.sleep(0.5)  # nothing more may arrive
        counted = _per_pid(_mine(seen))
        assert [counted[pid] for pid in pids] == [per_run] * 5, counted
        assert agent.lost == 0
    finally:
        resident.kill()
        resident.wait()


def test_containers_of_one_image_share_one_probe_and_count_once(tmp_path: Path) -> None:
    """Each container sees the image's file through an overlay mount of its own (a
    device of its own), and a uprobe put through one fires in all of them: the agent
    probes the file once, so each process counts once."""
    lower = tmp_path / "image"
    lower.mkdir()
    shutil.copy2(cancels_program(), lower / "controller")
    mounts = []
    try:
        for index in range(2):
            upper, work, merged = (
                tmp_path / f"{part}{index}" for part in ("upper", "work", "root")
            )
            for directory in (upper, work, merged):
                directory.mkdir()
            options = f"lowerdir={lower},upperdir={upper},workdir={work}"
            subprocess.run(
                ["mount", "-t", "overlay", "overlay", "-o", options, str(merged)], check=True
            )
            mounts.append(merged)
        containers = [
            subprocess.Popen(
                [str(root / "controller")], stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
            for root in mounts
        ]
        seen: list[Cancellation] = []
        try:
            for proc in containers:
                assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
            assert len({os.stat(f"/proc/{proc.pid}/exe").st_dev for proc in containers}) == 2
            pids = {proc.pid for proc in containers}
            agent = Agent(node="n", discovery=Discovery(pids=pids), on_cancel=seen.append)
            with Running(agent) as running:
                wait_until(lambda: pids <= set(running.agent.probes), "the agent to take both on")
                assert len(running.agent.binaries) == 1
                for proc in containers:
                    assert proc.stdin is not None and proc.stdout is not None
                    proc.stdin.write(b"\n")
                    proc.stdin.flush()
                    assert proc.stdout.readline().strip() == b"done"
                wait_until(lambda: sum(c.count for c in seen) >= 2 * PER_RUN, "both runs")
                time.sleep(0.5)  # nothing more may arrive
            assert _per_pid(seen) == {pid: PER_RUN for pid in pids}
        finally:
            for proc in containers:
                proc.kill()
                proc.wait()
    finally:
        for merged in mounts:
            subprocess.run(["umount", str(merged)], check=False)


def test_a_process_denied_after_it_cancelled_counts_nothing_more(tmp_path: Path) -> None:
    """The kernel keeps each CPU's copy of the values of the process that last
    cancelled there (a storm skips the per-pid lookup): the agent's filter marking a
    process it had counted still stops its counts from the next cancellation on."""
    binary = _binary(tmp_path)
    # One CPU for all its threads: its second round finds the copy its first made.
    proc = subprocess.Popen(
        [str(binary), "-rounds=2"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        preexec_fn=lambda: os.sched_setaffinity(0, {0}),
    )
    seen: list[Cancellation] = []
    probe = GoProbe(
        read_binary(binary), exe=str(binary), on_cancel=seen.append, on_lost=lambda *_: None
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        for round_ in range(2):
            proc.stdin.write(b"\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == b"done"
            probe.poll()
            if round_ == 0:
                assert _per_pid(seen) == {proc.pid: PER_RUN}
                probe.deny(proc.pid)
        assert _per_pid(seen) == {proc.pid: PER_RUN}  # nothing after the filter's mark
        assert not [key for key in probe.bpf[b"counts"].keys() if key.pid == proc.pid]
    finally:
        probe.close()
        proc.kill()
        proc.wait()
