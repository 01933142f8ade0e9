"""The semaphore ledger: what a dead agent raised is put back, nothing else is touched.

A child process stands for the traced operator: a two-byte counter in its
memory, at an address it prints, plays the USDT semaphore. Other children
stand for agents, whose ledgers are written and then left behind by SIGKILL.
"""

import ctypes
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from wukong.ebpf.preflight import AgentError
from wukong.ebpf.python_probe import PythonProbe, record_semaphores
from wukong.ebpf.semaphores import SemaphoreLedger, read_semaphore, start_time

_HOLDER = """
import ctypes, sys, time
semaphore = ctypes.c_ushort(int(sys.argv[1]))
print(ctypes.addressof(semaphore), flush=True)
time.sleep(600)
"""

_AGENT = """
import sys, time
from pathlib import Path
from wukong.ebpf.semaphores import SemaphoreLedger
ledger = SemaphoreLedger(Path(sys.argv[1]))
ledger.open()
pid, address, started = (int(arg) for arg in sys.argv[2:5])
ledger.raised(pid, address, 1, started=started)
print("raised", flush=True)
time.sleep(600)
"""


class Operator:
    def __init__(self, value: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(value)], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        self.pid = self.process.pid
        self.address = int(self.process.stdout.readline())
        self.started = start_time(self.pid)

    @property
    def semaphore(self) -> int:
        return read_semaphore(self.pid, self.address)


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        process.kill()
        process.wait()


def _operator(children: list[subprocess.Popen[str]], value: int) -> Operator:
    operator = Operator(value)
    children.append(operator.process)
    return operator


def _agent(
    children: list[subprocess.Popen[str]], state: Path, operator: Operator, *, started: int
) -> subprocess.Popen[str]:
    """An agent that raised the operator's semaphore and is still running."""
    agent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _AGENT,
            str(state),
            str(operator.pid),
            str(operator.address),
            str(started),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    children.append(agent)
    assert agent.stdout is not None and agent.stdout.readline() == "raised\n"
    return agent


def _killed_agent(
    children: list[subprocess.Popen[str]], state: Path, operator: Operator, *, started: int
) -> None:
    agent = _agent(children, state, operator, started=started)
    agent.kill()
    agent.wait()


def test_what_a_killed_agent_raised_is_put_back(
    children: list[subprocess.Popen[str]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    operator = _operator(children, 3)  # the killed agent's one, and two other tracers'
    _killed_agent(children, tmp_path, operator, started=operator.started)
    caplog.set_level("INFO", logger="wukong.ebpf.semaphores")
    ledger = SemaphoreLedger(tmp_path)
    taken = ledger.open()
    assert [(raised.pid, raised.amount) for raised in taken] == [(operator.pid, 1)]
    assert operator.semaphore == 2
    assert f"pid {operator.pid} at {operator.address:#x} (-1, now 2)" in caplog.text
    # The dead agent's files are gone; this agent's lock is there.
    assert [path.suffix for path in tmp_path.iterdir()] == [".lock"]
    ledger.close()
    assert list(tmp_path.iterdir()) == []


def test_never_below_zero(children: list[subprocess.Popen[str]], tmp_path: Path) -> None:
    operator = _operator(children, 0)  # lowered already by someone else
    _killed_agent(children, tmp_path, operator, started=operator.started)
    SemaphoreLedger(tmp_path).open()
    assert operator.semaphore == 0


def test_a_running_agents_semaphores_are_its_own(
    children: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    """`wukong trace` started next to the DaemonSet's agent leaves the agent's alone."""
    operator = _operator(children, 1)
    _agent(children, tmp_path, operator, started=operator.started)
    assert SemaphoreLedger(tmp_path).open() == []
    assert operator.semaphore == 1
    assert len(list(tmp_path.glob("*.json"))) == 1


def test_another_process_with_the_pid_is_not_touched(
    children: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    operator = _operator(children, 1)
    _killed_agent(children, tmp_path, operator, started=operator.started - 1)
    assert SemaphoreLedger(tmp_path).open() == []
    assert operator.semaphore == 1
    assert list(tmp_path.glob("*.json")) == []  # dropped all the same


def test_the_ledger_says_what_is_raised_now(tmp_path: Path) -> None:
    semaphore = ctypes.c_ushort(1)
    address = ctypes.addressof(semaphore)
    pid = os.getpid()
    ledger = SemaphoreLedger(tmp_path)
    ledger.open()
    ledger.raised(pid, address, 1, started=start_time(pid))
    (written,) = tmp_path.glob("*.json")
    assert json.loads(written.read_text()) == [
        {"pid": pid, "start_time": start_time(pid), "address": address, "amount": 1}
    ]
    ledger.lowered(pid)
    assert json.loads(written.read_text()) == []
    assert not list(tmp_path.glob("*.tmp"))  # written through a rename
    ledger.close()
    assert list(tmp_path.iterdir()) == []


def test_start_time_survives_a_command_name_with_parentheses() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; open('/proc/self/comm', 'w').write('a) 1 2 (b');"
            "print('up', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == "up\n"
        stat = Path(f"/proc/{process.pid}/stat").read_text()
        assert stat.startswith(f"{process.pid} (a) 1 2 (b) ")
        assert start_time(process.pid) == int(stat.rsplit(")", 1)[1].split()[19])
    finally:
        process.kill()
        process.wait()


def test_a_state_dir_that_cannot_be_written_stops_the_agent_saying_so(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(AgentError, match=rf"semaphore ledger in {blocked}/state \(--state-dir\)"):
        record_semaphores(blocked / "state")
    assert PythonProbe.ledger is None
