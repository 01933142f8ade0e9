"""Running the agent in tests as `wukong agent` runs it: stepping in a thread."""

import threading
import time
from pathlib import Path

from wukong.devcluster import binaries
from wukong.ebpf.agent import Agent
from wukong.runtime.probes import audit_semaphore

PROGRAM = Path(__file__).parent / "programs/cancels"


def cancels_program(*flags: str) -> Path:
    """The scripted Go program (programs/cancels) built with `flags` (cached per set)."""
    return binaries.go_program(PROGRAM, name="test-cancels", progress=print, build_flags=flags)


class Running:
    """An agent stepping in a thread until the `with` block ends."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.agent.step()
            time.sleep(0.05)

    def __enter__(self) -> "Running":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.agent.step()
        self.agent.close()


def usdt_semaphore(pid: int) -> int:
    """The current value of a Python process's python:audit USDT semaphore."""
    address = audit_semaphore(pid)
    assert address is not None
    with open(f"/proc/{pid}/mem", "rb") as mem:
        mem.seek(address)
        return int.from_bytes(mem.read(2), "little")
