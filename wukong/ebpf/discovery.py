"""Finding the processes to trace on this node, and saying why others are not.

A target is either a Wukong operator (a Python process whose command line
names wukong) or a Go binary that contains `context.(*cancelCtx).cancel`.
Binaries are read once per file (`BinaryKey`) through `/proc/PID/exe`, so a
hundred replicas of one controller cost one ELF parse.
"""

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path

from wukong.ebpf.attribution import cgroup_ids
from wukong.ebpf.elf import CANCEL_SYMBOL, Binary, read_binary
from wukong.ebpf.preflight import unreadable_process
from wukong.runtime.probes import audit_semaphore

PYTHON = "python"
GO = "go"


# One binary, however many processes (and containers) run it: (inode, size, mtime).
# Not the device: overlayfs gives every container a device of its own, though
# its processes run the image's one file, which is what a uprobe is put on (a
# probe attached through one container fires in all of them).
BinaryKey = tuple[int, int, int]


def binary_key(pid: int) -> BinaryKey:
    """Which file the process runs (through /proc/PID/exe, into its mount namespace)."""
    return _file_key(Path(f"/proc/{pid}/exe"))


def _file_key(path: Path) -> BinaryKey:
    stat = os.stat(path)
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


@dataclass(frozen=True)
class Target:
    pid: int
    comm: str
    runtime: str  # "python" or "go"
    binary: Binary | None  # Go targets
    problem: str | None = None  # why it cannot be traced, in words for the engineer
    untraced_reason: str = ""  # that, as a metric label
    key: BinaryKey | None = None  # Go targets: the binary's file

    @property
    def traceable(self) -> bool:
        return self.problem is None


class Discovery:
    def __init__(
        self,
        *,
        pids: set[int] | None = None,
        executables: set[Path] | None = None,
        controller_runtime_only: bool = False,
        pods_only: bool = False,
    ):
        self._pids = pids
        # Files, by BinaryKey: a container's is reached through /proc/PID/exe.
        self._executables = (
            None if executables is None else {_file_key(path) for path in executables}
        )
        self._controller_runtime_only = controller_runtime_only
        self._pods_only = pods_only
        self._binaries: dict[BinaryKey, Binary | None] = {}
        self._self = os.getpid()

    def scan(self) -> dict[int, Target]:
        """Every target among the node's processes (the agent's safety net: it
        learns of new processes from their exec)."""
        found = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                target = self.classify(int(entry.name))
                if target is not None:
                    found[target.pid] = target
        return found

    def classify(self, pid: int) -> Target | None:
        """The process as a target, or None: not one, filtered out, or gone."""
        if pid == self._self or (self._pids is not None and pid not in self._pids):
            return None
        try:
            if self._executables is not None and binary_key(pid) not in self._executables:
                return None
            if self._pods_only and cgroup_ids(pid)[0] is None:
                return None
            target = self._classify(pid)
            if target is not None and target.runtime == GO:
                target = dataclasses.replace(target, key=binary_key(pid))
            return target
        except (FileNotFoundError, ProcessLookupError):
            return None  # exited while we looked, or a kernel thread
        except PermissionError:
            error = unreadable_process(pid)
            if error is not None:
                raise error from None
            return None  # another user's process, and we are not root

    def _classify(self, pid: int) -> Target | None:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        cmdline = (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
        exe = Path(f"/proc/{pid}/exe")
        if re.match(r"python", os.path.basename(str(exe.readlink()))) or comm.startswith("python"):
            if "wukong" not in cmdline:
                return None
            if audit_semaphore(pid) is None:
                return Target(
                    pid,
                    comm,
                    PYTHON,
                    None,
                    untraced_reason="no_usdt_probes",
                    problem="its interpreter has no USDT probes (pyenv or the official python "
                    "images); run the operator on Debian's python3 to trace it",
                )
            return Target(pid, comm, PYTHON, None)
        binary = self._binary(pid, exe)
        if binary is None or not binary.is_go:
            return None
        if binary.symbols_problem is not None:  # stripped, and its pclntab unreadable
            return Target(
                pid,
                comm,
                GO,
                binary,
                untraced_reason="unreadable_symbols",
                problem=binary.symbols_problem,
            )
        if CANCEL_SYMBOL not in binary.symbols:
            return None
        if self._controller_runtime_only and not binary.uses_controller_runtime:
            return None
        if not binary.go_supported:
            return Target(
                pid,
                comm,
                GO,
                binary,
                untraced_reason="unsupported_go_version",
                problem=f"unknown Go version {binary.go_version} (supported: go1.21 and later)",
            )
        return Target(pid, comm, GO, binary)

    def _binary(self, pid: int, exe: Path) -> Binary | None:
        key = binary_key(pid)
        if key not in self._binaries:
            try:
                with exe.open("rb") as stream:
                    if stream.read(4) != b"\x7fELF":
                        self._binaries[key] = None
                        return None
                probe = read_binary(exe, want_symbols=False)
                self._binaries[key] = read_binary(exe) if probe.is_go else None
            except (OSError, ValueError):
                self._binaries[key] = None
        return self._binaries[key]
