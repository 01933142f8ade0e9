"""Run a command so that Ctrl-C ends it, and only it: `make run` ends quietly.

    python scripts/foreground.py COMMAND [ARGS...]

Ctrl-C sends SIGINT to the terminal's foreground process group. Under make that
group holds make too, which then reports the interrupted target ("*** [run]
Interrupt", or "Error 130" when the command's exit status reaches it first) after
the demo's own clean shutdown. So the command runs in a process group of its own
made the terminal's foreground one, as a shell's job control does; the terminal is
given back when it ends. An end by Ctrl-C (status 130, or killed by SIGINT) is a
normal end: exit status 0. Without a terminal (CI, a pipe) the command just runs.
"""

import os
import signal
import subprocess
import sys


def _terminal() -> int | None:
    """The controlling terminal, if this process is in its foreground group."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR)
    except OSError:
        return None
    if os.tcgetpgrp(fd) != os.getpgrp():
        os.close(fd)
        return None
    return fd


def _give_terminal(fd: int, group: int) -> None:
    # A process not in the foreground group that sets it gets SIGTTOU unless ignored.
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(fd, group)
    except OSError:
        pass  # the group already ended
    finally:
        signal.signal(signal.SIGTTOU, previous)


def main(command: list[str]) -> int:
    if not command:
        print("usage: foreground.py COMMAND [ARGS...]", file=sys.stderr)
        return 2
    terminal = _terminal()
    # Until the command owns the terminal, a Ctrl-C here must not end this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    process = subprocess.Popen(
        command,
        process_group=0 if terminal is not None else None,
        # The command handles Ctrl-C as it would in a shell.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    if terminal is not None:
        _give_terminal(terminal, process.pid)
    try:
        code = process.wait()
    finally:
        if terminal is not None:
            _give_terminal(terminal, os.getpgrp())
    return 0 if code in (130, -signal.SIGINT) else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
