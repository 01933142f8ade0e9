"""Running the agent in tests as `wukong agent` runs it: stepping in a thread."""

from pathlib import Path

from tests.background import Repeating
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
        self._stepping = Repeating(agent.step, every=0.05)

    def __enter__(self) -> "Running":
        self._stepping.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stepping.stop(timeout=10)
        self.agent.step()
        self.agent.close()


def usdt_semaphore(pid: int) -> int:
    """The current value of a Python process's python:audit USDT semaphore."""
    address = audit_semaphore(pid)
    assert address is not None
    with open(f"/proc/{pid}/mem", "rb") as mem:
        mem.seek(address)
        return int.from_bytes(mem.read(2), "little")
