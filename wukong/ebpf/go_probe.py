"""Loads go_probe.c onto one Go binary and turns its counts into cancellations.

The probe is on the binary (its inode), so every process that runs it is
covered from its start, whenever it starts. The loader gives the program the
ELF addresses of the probed instruction and of `context.Canceled` and
`context.DeadlineExceeded`; the program reads each process's values of those
errors itself at its first cancellation (by then the context package has set
them), PIE's placement worked out from where the probe fired.

The kernel counts; `poll()` reads the counts map and reports what grew since
the last read, one `Cancellation` per key with its `count`. Each key is
symbolized once (its stack names the caller and tells a root cancel from a
propagated one) from the whole stack its first cancellation carried through
the ring buffer, so the agent's work per poll grows with the number of
distinct call sites, not with the rate of cancellations.

Naming a cancellation costs the kernel more than counting it, so each CPU
names at most `named_per_window` of them every 10 ms (NAMED_PER_WINDOW by
default: more than ordinary work makes); past that, in a storm, cancellations
are counted by process and kind only and reported with the reason `unnamed`
(their `error` still says the kind). A process's total, and its total per
kind, stay exact; what needs the stack (the caller, a root cancel told from a
parent's) is known for the named ones only.
"""

import ctypes
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wukong.ebpf.discovery import GO
from wukong.ebpf.elf import CANCEL_SYMBOL, CANCELED_SYMBOL, DEADLINE_SYMBOL, Binary, read_code
from wukong.ebpf.go_cancel_site import ProbeSite, find_site
from wukong.ebpf.preflight import StageFailed
from wukong.ebpf.records import Cancellation

# BCC wants bytes for every name and text it is given.
SOURCE = (Path(__file__).parent / "go_probe.c").read_bytes()
KINDS = {1: "deadline_exceeded", 2: "canceled", 0: "other"}
# Go's canceled contexts map onto the cancel-reason contract: a deadline that
# fires is `deadline_exceeded` (WithTimeoutCause/WithDeadlineCause too: their
# cause is kept as text); an explicit cancel() at its root (WithCancelCause too)
# is `canceled`, a reason only the agent reports, since it cannot tell why the
# program cancelled; a context cancelled because its parent was is
# `parent_cancelled`, whatever error it inherits (its `error` still says): one
# reconcile timeout is one deadline however many contexts were derived from it
# (net/http's transport derives one for every request in flight), as the
# controller's own timeout count has it.
_PROPAGATION = ("context.(*cancelCtx).cancel", "context.(*cancelCtx).propagateCancel")
_INTERNAL = ("context.", "runtime.", "time.", "sync.", "internal/")
# go_probe.c's `lost`, by index: cancellations the counts map had no room for,
# first occurrences the ring buffer had no room for (their time and whole stack),
# processes the processes map had no room for (counted, but not filtered).
LOST_REASONS = ("counts_map_full", "ring_buffer_full", "processes_map_full")
#: Cancellations each CPU names (caller, cause, root or propagated) per 10 ms;
#: the rest are counted by process and kind only.
NAMED_PER_WINDOW = 64
#: The reason of cancellations counted past the naming budget: the caller and
#: whether the cancel was a root's or a parent's were not read.
UNNAMED = "unnamed"

_Key = tuple[int, int, tuple[int, ...], bytes]  # pid, kind, return addresses, cause


class GoProbe:
    """go_probe.c on one Go binary: every process that runs it, from its first cancellation.

    `bpf` may be a module compiled ahead (`compile_program`), so attaching to a
    binary seen for the first time costs no compile."""

    runtime = GO

    def __init__(
        self,
        binary: Binary,
        *,
        exe: str,
        on_cancel: Callable[[Cancellation], None],
        on_lost: Callable[[str, int], None],  # (reason, how many)
        bpf: Any = None,
        named_per_window: int | None = NAMED_PER_WINDOW,  # None: every cancellation named
    ) -> None:
        self.binary = binary
        self._on_cancel = on_cancel
        self._on_lost = on_lost
        self.site = self._site(exe)
        try:
            self.bpf = bpf if bpf is not None else compile_program()
            table = self.bpf[b"binary"]
            table[table.Key(0)] = table.Leaf(
                self.site.address,
                binary.symbols[CANCELED_SYMBOL][0],
                binary.symbols[DEADLINE_SYMBOL][0],
            )
            limit = self.bpf[b"named_per_window"]
            limit[limit.Key(0)] = limit.Leaf(
                2**64 - 1 if named_per_window is None else named_per_window
            )
        except Exception as exc:
            raise StageFailed("load", exc) from exc
        try:
            # On the file, not a process: the kernel puts the probe in every
            # process that maps it, the ones started later included.
            self.bpf.attach_uprobe(
                name=exe.encode(), addr=self.site.address, fn_name=self.site.function.encode()
            )
        except Exception as exc:
            self.bpf.cleanup()
            raise StageFailed("attach", exc) from exc
        self._reported: dict[_Key, int] = {}  # key -> count already reported
        self._unnamed_reported: dict[tuple[int, int], int] = {}  # (pid, kind) -> reported
        self._first_seen: dict[_Key, float] = {}  # key -> wall time of its first cancel
        self._stack_ids: dict[_Key, int] = {}  # key -> its first cancel's whole stack
        self._described: dict[_Key, tuple[str, bool, str, list[str]]] = {}
        self._biases: dict[int, int] = {}  # pid -> where PIE placed the binary
        self._lost_reported = [0] * len(LOST_REASONS)

        class Detail(ctypes.Structure):  # go_probe.c's detail_t (BCC cannot nest structs)
            _fields_ = [
                ("cancel", self.bpf[b"counts"].Leaf),
                ("ktime_ns", ctypes.c_uint64),
                ("receiver", ctypes.c_uint64),
                ("stack_id", ctypes.c_int64),
                ("tid", ctypes.c_uint32),
                ("pad", ctypes.c_uint32),
            ]

        self._detail_type = ctypes.POINTER(Detail)
        self.bpf[b"details"].open_ring_buffer(self._detail)

    def _site(self, exe: str) -> ProbeSite:
        start, size = self.binary.symbols[CANCEL_SYMBOL]
        return find_site(self.binary, read_code(exe, start, size))

    def _detail(self, ctx: Any, data: Any, size: int) -> None:
        """A key's first cancellation, with its time (the ring buffer's only traffic)."""
        detail = ctypes.cast(data, self._detail_type).contents
        ago = (time.monotonic_ns() - detail.ktime_ns) / 1e9
        key = _key(detail.cancel)
        self._first_seen.setdefault(key, time.time() - ago)
        self._stack_ids.setdefault(key, detail.stack_id)

    def poll(self) -> None:
        """Report what each key grew by since the last poll, and what was lost."""
        self.bpf.ring_buffer_consume()
        for value in self.bpf[b"counts"].values():
            key = _key(value)
            new = value.n - self._reported.get(key, 0)
            if new <= 0:
                continue
            self._reported[key] = value.n
            error, root, caller, stack = self._describe(key)
            self._on_cancel(
                Cancellation(
                    pid=key[0],
                    comm="",  # the agent knows the process
                    runtime=GO,
                    reason=go_reason(error, root=root),
                    time=self._first_seen.pop(key, time.time()),
                    count=new,
                    error=error,
                    root=root,
                    cause=key[3].decode(errors="replace"),
                    caller=caller,
                    stack=stack,
                )
            )
        self._poll_unnamed()
        table = self.bpf[b"lost"]
        for index, reason in enumerate(LOST_REASONS):
            lost = table[table.Key(index)].value
            if lost > self._lost_reported[index]:
                self._on_lost(reason, lost - self._lost_reported[index])
                self._lost_reported[index] = lost

    def _poll_unnamed(self) -> None:
        """What each process counted past the naming budget since the last poll."""
        for raw, n in self.bpf[b"unnamed"].items():
            key = (raw.pid, raw.kind)
            new = n.value - self._unnamed_reported.get(key, 0)
            if new <= 0:
                continue
            self._unnamed_reported[key] = n.value
            self._on_cancel(
                Cancellation(
                    pid=raw.pid,
                    comm="",
                    runtime=GO,
                    reason=UNNAMED,
                    count=new,
                    error=KINDS.get(raw.kind, "other"),
                )
            )

    def deny(self, pid: int) -> None:
        """Not a target (the agent's filter): the kernel skips it from now on, and
        what it counted before the agent knew is dropped."""
        table = self.bpf[b"processes"]
        table[ctypes.c_uint32(pid)] = table.Leaf(0, 0, 0, 0, 1, 0, time.monotonic_ns())
        self._changed_processes()
        self._drop(pid)

    def forget(self, pid: int) -> None:
        """A process that exited: its kernel state goes (after a last `poll`)."""
        self.reset(pid)
        self._drop(pid)

    def reset(self, pid: int, *, before_ns: int | None = None) -> None:
        """The process's values are read again at its next cancellation (it runs
        a new program: a new placement, new addresses); its counts stay. With
        `before_ns` (CLOCK_MONOTONIC), only values made before then: those of
        the program it ran before an exec at that time."""
        key = ctypes.c_uint32(pid)
        table = self.bpf[b"processes"]
        try:
            if before_ns is None or table[key].since < before_ns:
                del table[key]
                self._changed_processes()
        except KeyError:
            pass  # it never cancelled
        self._biases.pop(pid, None)

    def _changed_processes(self) -> None:
        """The CPUs' copies of processes' values are stale: the kernel reads them anew."""
        table = self.bpf[b"generation"]
        key = table.Key(0)
        table[key] = table.Leaf(table[key].value + 1)

    def ran(self, pid: int) -> bool:
        """Whether this process has cancelled (or been denied) under this probe."""
        return ctypes.c_uint32(pid) in self.bpf[b"processes"]

    def _drop(self, pid: int) -> None:
        for name in (b"counts", b"unnamed"):
            counts = self.bpf[name]
            for raw_key in [raw for raw in counts.keys() if raw.pid == pid]:
                try:
                    del counts[raw_key]
                except KeyError:
                    pass
        for table in (self._reported, self._first_seen, self._stack_ids, self._described):
            for key in [key for key in table if key[0] == pid]:
                del table[key]
        for unnamed in [key for key in self._unnamed_reported if key[0] == pid]:
            del self._unnamed_reported[unnamed]
        self._biases.pop(pid, None)

    def _describe(self, key: _Key) -> tuple[str, bool, str, list[str]]:
        """(error, root, caller, stack) of a key, symbolized once."""
        if key not in self._described:
            pid, kind, frames, _ = key
            stack = self._symbolize(pid, self._stack_ids.pop(key, -1), frames)
            root = not any(frame.startswith(_PROPAGATION) for frame in stack[1:])
            self._described[key] = (KINDS.get(kind, "other"), root, _caller(stack), stack)
        return self._described[key]

    def _symbolize(self, pid: int, stack_id: int, frames: tuple[int, ...]) -> list[str]:
        """The whole stack when its first cancel's walk is there, else the key's frames."""
        bias = self._bias(pid)
        if stack_id < 0:  # its detail was lost, or the stack map had no room
            start, _ = self.binary.symbols[CANCEL_SYMBOL]
            addresses = [start + bias, *(frame for frame in frames if frame)]
        else:
            addresses = list(self.bpf[b"stacks"].walk(stack_id))
            if self.site.function == "on_entry":
                # At entry the walk skips the immediate caller.
                addresses[1:1] = [frames[0] - 1]  # -1: inside the call, not after it
        return [self.binary.symbolize(address - bias) for address in addresses]

    def _bias(self, pid: int) -> int:
        """Where PIE placed the binary in `pid`: the kernel worked it out at its first cancel."""
        if pid not in self._biases:
            known = self.bpf[b"processes"].get(ctypes.c_uint32(pid))
            self._biases[pid] = known.bias if known is not None else 0
        return self._biases[pid]

    def close(self) -> None:
        self.bpf.cleanup()


def compile_program() -> Any:
    """go_probe.c compiled and its maps made: the costly part of tracing a new
    binary (most of a second), which the agent does ahead of need."""
    from bcc import BPF

    return BPF(text=SOURCE)


def _key(cancel: Any) -> _Key:
    """What names a count (go_probe.c's cancel_t, the counts map's value)."""
    return (cancel.pid, cancel.kind, tuple(cancel.frames), bytes(cancel.cause).rstrip(b"\0"))


def go_reason(error: str, *, root: bool) -> str:
    """The contract's cancel reason for a Go context ended with `error`."""
    if not root:
        return "parent_cancelled"
    return "deadline_exceeded" if error == "deadline_exceeded" else "canceled"


def _caller(stack: list[str]) -> str:
    """The function that cancelled: the first outside Go's runtime and context
    machinery; for a deadline (a timer goroutine) the context package's timer."""
    callers = stack[1:]
    outside = next((frame for frame in callers if not frame.startswith(_INTERNAL)), None)
    if outside is not None:
        return outside
    machinery = ("context.(*timerCtx).cancel", "context.(*cancelCtx).cancel")
    return next((frame for frame in callers if not frame.startswith(machinery)), "")
