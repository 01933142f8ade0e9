"""Loads go_probe.c onto one Go process and turns its events into cancellations.

The loader reads `context.Canceled` and `context.DeadlineExceeded` (two-word
interface values) from the process's memory, PIE bias applied, and gives them
to the BPF program. They are set by the context package's initialisation, so
a process caught before that is retried on the next scan.
"""

from collections.abc import Callable
from pathlib import Path

from wukong.ebpf.discovery import Target
from wukong.ebpf.elf import CANCEL_SYMBOL, CANCELED_SYMBOL, DEADLINE_SYMBOL, load_bias, read_memory
from wukong.ebpf.preflight import StageFailed
from wukong.ebpf.records import Cancellation

# BCC wants bytes for every name and text it is given.
SOURCE = (Path(__file__).parent / "go_probe.c").read_bytes()
KINDS = {1: "deadline_exceeded", 2: "canceled", 0: "other"}
# Go's canceled contexts map onto the cancel-reason contract: a deadline is a
# deadline; an explicit cancel() (or a parent's) has no reason of its own.
REASONS = {"deadline_exceeded": "deadline_exceeded", "canceled": "parent_cancelled"}
_PROPAGATION = ("context.(*cancelCtx).cancel", "context.(*cancelCtx).propagateCancel")
_INTERNAL = ("context.", "runtime.", "time.", "sync.", "internal/")
# A uprobe can fire twice for one call: when a signal (Go preempts goroutines
# with SIGURG) lands while the kernel single-steps the probed instruction, the
# instruction restarts and the probe fires again. Same thread, same receiver,
# microseconds apart: one call. A new context at the same address needs a GC
# cycle in between, far longer than this.
_REFIRE_WINDOW_NS = 200_000


class NotReady(Exception):
    """The process has not initialised the context package yet."""


class GoProbe:
    def __init__(self, target: Target, *, on_cancel: Callable[[Cancellation], None]) -> None:
        from bcc import BPF

        assert target.binary is not None
        self.target = target
        self.binary = target.binary
        self._on_cancel = on_cancel
        self._last_fire: dict[int, tuple[int, int]] = {}  # tid -> (receiver, ktime)
        self._bias = load_bias(target.pid, self.binary)
        known = self._known_values()
        try:
            self.bpf = BPF(text=SOURCE)
            key = self.bpf[b"known"].Key(target.pid)
            value = self.bpf[b"known"].Leaf(*known)
            self.bpf[b"known"][key] = value
        except Exception as exc:
            raise StageFailed("load", exc) from exc
        address, _ = self.binary.symbols[CANCEL_SYMBOL]
        try:
            self.bpf.attach_uprobe(
                name=f"/proc/{target.pid}/exe".encode(),
                addr=address,
                fn_name=b"on_cancel",
                pid=target.pid,
            )
        except Exception as exc:
            raise StageFailed("attach", exc) from exc
        self.bpf[b"go_events"].open_perf_buffer(self._event, page_cnt=64)

    def _global(self, symbol: str) -> tuple[int, int]:
        address, _ = self.binary.symbols[symbol]
        raw = read_memory(self.target.pid, address + self._bias, 16)
        return int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little")

    def _known_values(self) -> tuple[int, int, int]:
        canceled_itab, canceled_data = self._global(CANCELED_SYMBOL)
        deadline_itab, _ = self._global(DEADLINE_SYMBOL)
        if not canceled_data or not deadline_itab:
            raise NotReady(f"pid {self.target.pid}: context globals not initialised yet")
        return canceled_data, canceled_itab, deadline_itab

    def _event(self, cpu: int, data: object, size: int) -> None:
        event = self.bpf[b"go_events"].event(data)
        if event.already_cancelled:
            return  # cancel() after the context had ended: not a cancellation
        last = self._last_fire.get(event.tid)
        self._last_fire[event.tid] = (event.receiver, event.ktime_ns)
        if last and last[0] == event.receiver and event.ktime_ns - last[1] < _REFIRE_WINDOW_NS:
            return
        stack = self._symbolize(event.stack_id, event.return_address)
        error = KINDS.get(event.kind, "other")
        self._on_cancel(
            Cancellation(
                pid=self.target.pid,
                comm=self.target.comm,
                runtime="go",
                reason=REASONS.get(error, "parent_cancelled"),
                error=error,
                root=not any(frame.startswith(_PROPAGATION) for frame in stack[1:]),
                cause=event.cause.decode(errors="replace"),
                caller=_caller(stack),
                stack=stack,
            )
        )

    def _symbolize(self, stack_id: int, return_address: int) -> list[str]:
        addresses = list(self.bpf[b"stacks"].walk(stack_id)) if stack_id >= 0 else []
        # The walk from the probed function's entry skips its immediate caller.
        addresses[1:1] = [return_address - 1]  # -1: inside the call, not after it
        return [self.binary.symbolize(address - self._bias) for address in addresses]

    def poll(self) -> None:
        self.bpf.perf_buffer_poll(timeout=0)

    def close(self) -> None:
        self.bpf.cleanup()


def _caller(stack: list[str]) -> str:
    """The function that cancelled: the first outside Go's runtime and context
    machinery; for a deadline (a timer goroutine) the context package's timer."""
    callers = stack[1:]
    outside = next((frame for frame in callers if not frame.startswith(_INTERNAL)), None)
    if outside is not None:
        return outside
    machinery = ("context.(*timerCtx).cancel", "context.(*cancelCtx).cancel")
    return next((frame for frame in callers if not frame.startswith(machinery)), "")
