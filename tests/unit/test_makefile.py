"""The Makefile: `make help` lists every target; Ctrl-C ends `make run` quietly.

Ctrl-C is driven through a real pseudo-terminal, as a person at a shell would
press it (the terminal sends SIGINT to its foreground process group): the demo
shuts down cleanly and make adds nothing.
"""

import fcntl
import os
import re
import select
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOREGROUND = ROOT / "scripts" / "foreground.py"
# Stands in for `wukong demo`: says it is up, then ends like it on Ctrl-C (status 130).
DEMO = (
    "import sys, time\n"
    "try:\n"
    "    print('demo up', flush=True)\n"
    "    time.sleep(60)\n"
    "except KeyboardInterrupt:\n"
    "    print('demo stopped cleanly', flush=True)\n"
    "    sys.exit(130)\n"
)


def _ctrl_c_under_make(recipe: str, tmp_path: Path) -> tuple[int, str]:
    (tmp_path / "demo.py").write_text(DEMO)
    (tmp_path / "Makefile").write_text(f"run:\n\t{recipe}\n")
    terminal, other_end = os.openpty()
    pid = os.fork()
    if pid == 0:  # the child: a session of its own with the pty as its terminal
        try:
            os.close(terminal)
            os.setsid()
            fcntl.ioctl(other_end, termios.TIOCSCTTY, 0)
            for fd in (0, 1, 2):
                os.dup2(other_end, fd)
            os.close(other_end)
            os.chdir(tmp_path)
            # As a shell starts a job in the foreground: Ctrl-C interrupts it, even
            # when the tests run where SIGINT is ignored (started in the background
            # by a non-interactive shell, whose children inherit that).
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.execvp("make", ["make", "--no-print-directory", "run"])
        finally:
            os._exit(127)  # only if make could not be started
    # The test keeps the terminal's other end open as well, so that reading never fails
    # (EIO) once every process on it has ended: it reads until make has ended and
    # nothing more comes, within a deadline (a Ctrl-C that stops nothing fails).
    output = b""
    deadline = time.monotonic() + 30
    while b"demo up" not in output and time.monotonic() < deadline:
        output += _read_some(terminal, timeout=1.0)
    os.write(terminal, b"\x03")  # Ctrl-C
    ended: int | None = None
    while time.monotonic() < deadline:
        chunk = _read_some(terminal, timeout=0.2)
        output += chunk
        if ended is None:
            waited, status = os.waitpid(pid, os.WNOHANG)
            if waited:
                ended = status
        elif not chunk:
            break  # make has ended and nothing more came for a while
    os.close(terminal)
    os.close(other_end)
    assert ended is not None, f"make did not end: {output!r}"
    return os.waitstatus_to_exitcode(ended), output.decode(errors="replace")


def _read_some(terminal: int, *, timeout: float) -> bytes:
    """What the terminal has to read within `timeout` seconds (b"" if nothing)."""
    ready, _, _ = select.select([terminal], [], [], timeout)
    return os.read(terminal, 1024) if ready else b""


def test_ctrl_c_ends_make_run_quietly(tmp_path: Path) -> None:
    code, output = _ctrl_c_under_make(
        f"@{sys.executable} {FOREGROUND} {sys.executable} demo.py", tmp_path
    )
    assert "demo stopped cleanly" in output
    assert "***" not in output, output  # make's "*** [run] Interrupt" / "Error 130"
    assert code == 0


def test_without_it_make_reports_the_interrupted_demo(tmp_path: Path) -> None:
    code, output = _ctrl_c_under_make(f"@{sys.executable} demo.py", tmp_path)
    assert "demo stopped cleanly" in output
    assert "*** [Makefile:2: run]" in output  # "Error 130" (or "Interrupt")
    assert code != 0


def test_make_run_starts_the_demo_through_it() -> None:
    dry_run = subprocess.run(
        ["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "scripts/foreground.py .venv/bin/wukong demo" in dry_run


@pytest.mark.parametrize("status", [0, 3])
def test_other_exit_statuses_pass_through(status: int) -> None:
    ran = subprocess.run(
        [sys.executable, str(FOREGROUND), sys.executable, "-c", f"raise SystemExit({status})"]
    )
    assert ran.returncode == status


def test_make_help_lists_every_target() -> None:
    makefile = (ROOT / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.M)
    assert phony is not None
    targets = phony.group(1).split()
    listed = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = [line.split()[0] for line in listed.splitlines()]
    assert sorted(names) == sorted(targets)
    assert {"run", "test"} <= set(names)
