"""Loads go_probe.c onto one Go process and turns its counts into cancellations.

The loader reads `context.Canceled` and `context.DeadlineExceeded` (two-word
interface values) from the process's memory, PIE bias applied, and gives them
to the BPF program. They are set by the context package's initialisation, so
a process caught before that is retried on the next scan.

The kernel counts; `poll()` reads the counts map and reports what grew since
the last read, one `Cancellation` per key with its `count`. Each key is
symbolized once (its stack names the caller and tells a root cancel from a
propagated one) from the whole stack its first cancellation carried through
the ring buffer, so the agent's work per poll grows with the number of
distinct call sites, not with the rate of cancellations.
"""

import ctypes
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wukong.ebpf.discovery import Target
from wukong.ebpf.elf import (
    CANCEL_SYMBOL,
    CANCELED_SYMBOL,
    DEADLINE_SYMBOL,
    Binary,
    load_bias,
    read_code,
    read_memory,
)
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
_LOST_UNCOUNTED = 0  # index in go_probe.c's `lost`: cancellations the map had no room for

_Key = tuple[int, int, tuple[int, ...], bytes]  # pid, kind, return addresses, cause


class NotReady(Exception):
    """The process has not initialised the context package yet."""


class GoProbe:
    def __init__(
        self,
        target: Target,
        *,
        on_cancel: Callable[[Cancellation], None],
        on_lost: Callable[[int], None],
    ) -> None:
        from bcc import BPF

        assert target.binary is not None
        self.target = target
        self.binary = target.binary
        self._on_cancel = on_cancel
        self._on_lost = on_lost
        self._bias = load_bias(target.pid, self.binary)
        known = known_values(target.pid, self.binary, self._bias)
        self.site = self._site()
        try:
            self.bpf = BPF(text=SOURCE)
            table = self.bpf[b"known"]
            table[table.Key(0)] = table.Leaf(*known, target.pid)
        except Exception as exc:
            raise StageFailed("load", exc) from exc
        try:
            self.bpf.attach_uprobe(
                name=f"/proc/{target.pid}/exe".encode(),
                addr=self.site.address,
                fn_name=self.site.function.encode(),
                pid=target.pid,
            )
        except Exception as exc:
            raise StageFailed("attach", exc) from exc
        self._reported: dict[_Key, int] = {}  # key -> count already reported
        self._first_seen: dict[_Key, float] = {}  # key -> wall time of its first cancel
        self._stack_ids: dict[_Key, int] = {}  # key -> its first cancel's whole stack
        self._described: dict[_Key, tuple[str, bool, str, list[str]]] = {}
        self._lost_reported = 0

        class Detail(ctypes.Structure):  # go_probe.c's detail_t (BCC cannot nest structs)
            _fields_ = [
                ("key", self.bpf[b"counts"].Key),
                ("ktime_ns", ctypes.c_uint64),
                ("receiver", ctypes.c_uint64),
                ("stack_id", ctypes.c_int64),
                ("tid", ctypes.c_uint32),
                ("pad", ctypes.c_uint32),
            ]

        self._detail_type = ctypes.POINTER(Detail)
        self.bpf[b"details"].open_ring_buffer(self._detail)

    def _site(self) -> ProbeSite:
        start, size = self.binary.symbols[CANCEL_SYMBOL]
        return find_site(self.binary, read_code(f"/proc/{self.target.pid}/exe", start, size))

    def _detail(self, ctx: Any, data: Any, size: int) -> None:
        """A key's first cancellation, with its time (the ring buffer's only traffic)."""
        detail = ctypes.cast(data, self._detail_type).contents
        ago = (time.monotonic_ns() - detail.ktime_ns) / 1e9
        key = _key(detail.key)
        self._first_seen.setdefault(key, time.time() - ago)
        self._stack_ids.setdefault(key, detail.stack_id)

    def poll(self) -> None:
        self.bpf.ring_buffer_consume()
        for raw_key, value in self.bpf[b"counts"].items():
            key = _key(raw_key)
            new = value.value - self._reported.get(key, 0)
            if new <= 0:
                continue
            self._reported[key] = value.value
            error, root, caller, stack = self._describe(key)
            self._on_cancel(
                Cancellation(
                    pid=self.target.pid,
                    comm=self.target.comm,
                    runtime="go",
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
        lost = self.bpf[b"lost"][self.bpf[b"lost"].Key(_LOST_UNCOUNTED)].value
        if lost > self._lost_reported:
            self._on_lost(lost - self._lost_reported)
            self._lost_reported = lost

    def _describe(self, key: _Key) -> tuple[str, bool, str, list[str]]:
        """(error, root, caller, stack) of a key, symbolized once."""
        if key not in self._described:
            _, kind, frames, _ = key
            stack = self._symbolize(self._stack_ids.pop(key, -1), frames)
            root = not any(frame.startswith(_PROPAGATION) for frame in stack[1:])
            self._described[key] = (KINDS.get(kind, "other"), root, _caller(stack), stack)
        return self._described[key]

    def _symbolize(self, stack_id: int, frames: tuple[int, ...]) -> list[str]:
        """The whole stack when its first cancel's walk is there, else the key's frames."""
        if stack_id < 0:  # its detail was lost, or the stack map had no room
            start, _ = self.binary.symbols[CANCEL_SYMBOL]
            addresses = [start + self._bias, *(frame for frame in frames if frame)]
        else:
            addresses = list(self.bpf[b"stacks"].walk(stack_id))
            if self.site.function == "on_entry":
                # At entry the walk skips the immediate caller.
                addresses[1:1] = [frames[0] - 1]  # -1: inside the call, not after it
        return [self.binary.symbolize(address - self._bias) for address in addresses]

    def close(self) -> None:
        self.bpf.cleanup()


def known_values(pid: int, binary: Binary, bias: int) -> tuple[int, int, int, int]:
    """go_probe.c's known_t for a process: its context errors' words."""

    def global_words(symbol: str) -> tuple[int, int]:
        address, _ = binary.symbols[symbol]
        raw = read_memory(pid, address + bias, 16)
        return int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little")

    canceled_itab, canceled_data = global_words(CANCELED_SYMBOL)
    deadline_itab, _ = global_words(DEADLINE_SYMBOL)
    if not canceled_data or not deadline_itab:
        raise NotReady(f"pid {pid}: context globals not initialised yet")
    # An itab's second word is the dynamic type, what an `any` carries.
    deadline_type = int.from_bytes(read_memory(pid, deadline_itab + 8, 8), "little")
    return canceled_data, canceled_itab, deadline_itab, deadline_type


def _key(raw: Any) -> _Key:
    return (raw.pid, raw.kind, tuple(raw.frames), bytes(raw.cause).rstrip(b"\0"))


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
