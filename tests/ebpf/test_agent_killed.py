"""However an agent ends, the operator's semaphore goes back.

Enabling the python:audit probe raises a semaphore in the traced process, and
the process calls sys.audit while it is non-zero. `wukong agent` runs as a
separate process here, as on a node. Killed with SIGKILL, nothing of it
detaches, so the semaphore stays raised, until the next agent reads what the
first wrote down in the state directory and puts it back before attaching.
Asked to detach by `wukong detach` (the DaemonSet's preStop hook), it lowers
the semaphore itself and exits before the hook returns.
"""

import json
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ebpf.agent_helpers import usdt_semaphore
from tests.polling import wait_until


@pytest.fixture
def python_operator() -> Iterator[int]:
    """A process the agent takes for a Wukong operator ("wukong" on its command line),
    on Debian's python3, whose interpreter has the python:audit probe."""
    process = subprocess.Popen(
        [
            "/usr/bin/python3",
            "-c",
            "import time; print('up', flush=True); time.sleep(600)",
            "wukong-operator",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        # Running its own code: before its exec, the child is still this interpreter.
        assert process.stdout is not None and process.stdout.readline() == "up\n"
        assert usdt_semaphore(process.pid) == 0
        yield process.pid
    finally:
        process.kill()
        process.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class AgentProcess:
    """`wukong agent` on one pid, in a process of its own, ready (its /readyz) on entry."""

    def __init__(self, pid: int, state_dir: Path, log: Path) -> None:
        self.health_port = _free_port()
        self.log = log
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "wukong.cli",
                "agent",
                f"--pid={pid}",
                "--no-pods",
                "--no-metrics-secure",
                "--metrics-bind-address=127.0.0.1:0",
                f"--health-probe-bind-address=127.0.0.1:{self.health_port}",
                f"--state-dir={state_dir}",
                "--scan-interval=0.5",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log.open("w"),
        )

    def __enter__(self) -> "AgentProcess":
        wait_until(
            lambda: self.process.poll() is None and _ready(self.health_port),
            f"the agent ready ({self.log.read_text() if self.process.poll() is not None else ''})",
            timeout=60,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:  # not killed: stops as in a pod's deletion
            self.process.send_signal(signal.SIGTERM)
            assert self.process.wait(timeout=30) == 0, self.log.read_text()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def test_a_killed_agents_semaphore_is_put_back_by_the_next(
    python_operator: int, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    with AgentProcess(python_operator, state, tmp_path / "first.log") as first:
        assert usdt_semaphore(python_operator) == 1
        first.kill()
    assert first.process.returncode == -signal.SIGKILL
    assert usdt_semaphore(python_operator) == 1  # nobody took it back

    with AgentProcess(python_operator, state, tmp_path / "second.log") as second:
        assert usdt_semaphore(python_operator) == 1  # its own only, not 2
        said = second.log.read_text()
        assert f"put back the python:audit semaphore of pid {python_operator}" in said
        assert "(-1, now 0)" in said
    assert usdt_semaphore(python_operator) == 0
    assert list(state.iterdir()) == []  # each agent's ledger went with it


def test_a_record_of_another_process_with_that_pid_is_not_applied(
    python_operator: int, tmp_path: Path
) -> None:
    """A record whose start time is not the running process's is of a process that
    exited, its pid reused since: that semaphore is not this process's to lower."""
    state = tmp_path / "state"
    with AgentProcess(python_operator, state, tmp_path / "first.log") as first:
        first.kill()
    (ledger,) = state.glob("*.json")
    records = json.loads(ledger.read_text())
    assert [record["pid"] for record in records] == [python_operator]
    records[0]["start_time"] -= 1
    ledger.write_text(json.dumps(records))

    with AgentProcess(python_operator, state, tmp_path / "second.log") as second:
        assert usdt_semaphore(python_operator) == 2  # the killed agent's and its own
        assert "put back" not in second.log.read_text()
    assert usdt_semaphore(python_operator) == 1  # the killed agent's, never taken back
    assert list(state.iterdir()) == []  # the record is dropped all the same


def test_wukong_detach_makes_the_agent_detach_and_waits_for_it(
    python_operator: int, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    with AgentProcess(python_operator, state, tmp_path / "agent.log") as agent:
        assert usdt_semaphore(python_operator) == 1
        hook = subprocess.run(
            [sys.executable, "-m", "wukong.cli", "detach", f"--state-dir={state}", "--timeout=20"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert hook.returncode == 0, hook.stderr
        assert f"agent pid {agent.process.pid}: detached and exited" in hook.stderr
        # By the time the hook returns, the agent is gone and its probe with it.
        assert agent.process.poll() == 0, agent.log.read_text()
        assert usdt_semaphore(python_operator) == 0
    assert list(state.iterdir()) == []
    again = subprocess.run(
        [sys.executable, "-m", "wukong.cli", "detach", f"--state-dir={state}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0 and "no agent running here" in again.stderr
