"""Background processes of the local control plane, tracked by pid files.

`wukong dev up` returns while etcd and kube-apiserver keep running, so each
component is found again through `<state>/<name>.pid`. A pid file is only
trusted while its process is alive *and* still runs the expected binary: after
a reboot or a crash the pid may belong to an unrelated process, and signalling
that would be a bug. Such a file is "stale" and is removed with a message.
"""

import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wukong.devcluster.errors import DevClusterError


@dataclass(frozen=True, kw_only=True)
class Component:
    """One background process: its name, pid file and log file."""

    name: str
    state_dir: Path
    # The program's file name when it is not `name` (e.g. "python" for a module).
    program: str | None = None

    @property
    def binary_name(self) -> str:
        return self.program or self.name

    @property
    def pid_file(self) -> Path:
        return self.state_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / f"{self.name}.log"


def _recorded_pid(component: Component) -> int | None:
    """The pid written in the component's pid file (-1 if unreadable), None without a file."""
    try:
        text = component.pid_file.read_text().strip()
    except FileNotFoundError:
        return None
    try:
        return int(text)
    except ValueError:
        return -1


def read_pid(component: Component) -> int | None:
    """The pid of the component if it is running, else None (stale files stay)."""
    pid = _recorded_pid(component)
    return pid if pid is not None and pid > 0 and is_running(pid, component.binary_name) else None


def stale_pid(component: Component) -> int | None:
    """The pid recorded in a pid file whose process is gone (or is another program)."""
    pid = _recorded_pid(component)
    if pid is None:
        return None
    return None if pid > 0 and is_running(pid, component.binary_name) else pid


def is_running(pid: int, binary_name: str) -> bool:
    """True if `pid` is alive, not a zombie, and runs a binary named like `binary_name`."""
    _reap(pid)
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The state follows the parenthesised command name, which may contain spaces.
            state = f.read().rsplit(")", 1)[1].split()[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z" and binary_name in os.path.basename(cmdline)


def _reap(pid: int) -> None:
    # When the caller started the process (e.g. the pytest session), a dead
    # child stays a zombie until waited for, and looks alive to kill(pid, 0).
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def ensure_port_free(host: str, port: int, *, what: str) -> None:
    """Fail with a clear message if `host:port` cannot be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise DevClusterError(
                    f"port {host}:{port} for {what} is already in use; stop whatever listens "
                    "there or pick other ports (see `wukong dev up --help`)"
                ) from None
            raise DevClusterError(f"cannot bind {host}:{port} for {what}: {exc.strerror}") from None


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free right now (for tests that run their own cluster)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def start(component: Component, argv: list[str]) -> subprocess.Popen[bytes]:
    """Start `argv` detached from the terminal, logging to the component's log file."""
    component.state_dir.mkdir(parents=True, exist_ok=True)
    with component.log_file.open("ab") as log:
        # A new session: Ctrl-C in the shell that ran `dev up` must not kill it.
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    component.pid_file.write_text(f"{proc.pid}\n")
    return proc


def stop(component: Component, *, grace_seconds: float = 10.0) -> bool:
    """Stop the component (SIGTERM, then SIGKILL); True if one was running."""
    pid = read_pid(component)
    component.pid_file.unlink(missing_ok=True)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if not is_running(pid, component.binary_name):
            return True
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while is_running(pid, component.binary_name):
        time.sleep(0.05)
    return True


def log_tail(path: Path, *, lines: int = 5) -> list[str]:
    """The last non-empty lines of a log, for error messages."""
    try:
        content = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    return [line for line in content if line.strip()][-lines:]


def wait_started(
    component: Component,
    proc: "subprocess.Popen[bytes]",
    check: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    interval: float = 0.2,
) -> None:
    """Wait until `check()` holds for a component just started as `proc`.

    One-line errors naming the log: the component exited (with its code and last
    log line), or `what` did not happen within `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        # The Popen handle, not the pid file: we started it, so poll() is
        # authoritative and gives the exit code.
        code = proc.poll()
        if code is not None:
            tail = log_tail(component.log_file, lines=1)
            last = f": {tail[-1][:300]}" if tail else ""
            raise DevClusterError(
                f"{component.name} exited with code {code} during start-up{last}; "
                f"log: {component.log_file}"
            )
        if check():
            return
        if time.monotonic() > deadline:
            raise DevClusterError(
                f"timed out after {timeout:.0f}s waiting for {what}; log: {component.log_file}"
            )
        time.sleep(interval)
