"""Exec and exit of every process on the node, from two scheduler tracepoints.

The agent waits on them between its polls: an exec wakes it, so a process that
starts a program is classified a moment after its exec, while it still runs;
one that exits is detached at the next poll. A full ring buffer is counted (`lost`);
the agent's periodic scan of /proc then finds what the events missed.
"""

import ctypes
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wukong.ebpf.preflight import StageFailed

SOURCE = (Path(__file__).parent / "process_events.c").read_bytes()


class ProcessEvents:
    def __init__(
        self,
        *,
        on_exec: Callable[[int, str, int], None],  # pid, comm, when (monotonic ns)
        on_exit: Callable[[int], None],
    ):
        from bcc import BPF

        self._on_exec = on_exec
        self._on_exit = on_exit
        try:
            self.bpf = BPF(text=SOURCE)
        except Exception as exc:
            raise StageFailed("load", exc) from exc

        class Event(ctypes.Structure):  # process_events.c's process_event_t
            _fields_ = [
                ("ktime_ns", ctypes.c_uint64),
                ("pid", ctypes.c_uint32),
                ("exited", ctypes.c_uint32),
                ("comm", ctypes.c_char * 16),
            ]

        self._event_type = ctypes.POINTER(Event)
        self.bpf[b"process_events"].open_ring_buffer(self._event)
        self._lost_reported = 0

    def _event(self, ctx: Any, data: Any, size: int) -> None:
        event = ctypes.cast(data, self._event_type).contents
        if event.exited:
            self._on_exit(event.pid)
        else:
            self._on_exec(event.pid, event.comm.decode(errors="replace"), event.ktime_ns)

    def wait(self, seconds: float) -> None:
        """Sleep up to `seconds`, handling each exec as it comes (the program wakes us)."""
        self.bpf.ring_buffer_poll(max(1, int(seconds * 1000)))

    def poll(self) -> int:
        """Deliver the events since the last poll; how many were lost since then."""
        self.bpf.ring_buffer_consume()
        table = self.bpf[b"lost"]
        lost = int(table[table.Key(0)].value)
        new, self._lost_reported = lost - self._lost_reported, lost
        return new

    def close(self) -> None:
        self.bpf.cleanup()
