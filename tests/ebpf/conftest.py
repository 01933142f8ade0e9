"""What the eBPF tests share: the scripted Go program, started (built: agent_helpers)."""

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

StartProgram = Callable[..., "subprocess.Popen[str]"]


@pytest.fixture
def program() -> Iterator[StartProgram]:
    """Starts a built program with its arguments, once it printed "ready"; kills it after."""
    procs: list[subprocess.Popen[str]] = []

    def start(binary: Path, *args: str) -> "subprocess.Popen[str]":
        proc = subprocess.Popen(
            [str(binary), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
