"""USDT probe points for the node agent: reconcile start, end and cancellation.

Why `sys.audit`: Debian's CPython (and any CPython built `--with-dtrace`) fires
its `python:audit` USDT probe for every audit event, so an eBPF agent attached
to a running operator sees them with no extension module, no restart and no
cooperation beyond these calls. The event *name* carries the payload,
`wukong.<what>|k=v|...`, because the name is a plain C string the BPF program
can copy, while the arguments are Python objects it cannot read.

Cost when nobody traces: nothing is formatted and nothing is called. The
probe has a USDT semaphore, a counter the kernel increments while a tracer is
attached; this module finds its address once (from the interpreter's
`.note.stapsdt`, adjusted for where the binary is mapped) and reads it before
each event, a single memory load. An interpreter without the probe (pyenv's,
the official Docker images) has no semaphore: events are never emitted and the
agent reports that interpreter as untraceable.
"""

import ctypes
import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wukong.runtime._observer import LifecycleEvent, Outcome, RuntimeObserver, Step

log = logging.getLogger(__name__)

EVENT_PREFIX = "wukong."


def audit_semaphore(pid: int | str = "self") -> int | None:
    """Address of a process's `python:audit` semaphore, or None if it has no such probe."""
    exe = Path(f"/proc/{pid}/exe")
    try:
        from elftools.elf.elffile import ELFFile
    except ImportError:
        return None
    try:
        with open(exe, "rb") as stream:
            elf = ELFFile(stream)
            section = elf.get_section_by_name(".note.stapsdt")
            base_section = elf.get_section_by_name(".stapsdt.base")
            if section is None:
                return None
            pie = elf.header["e_type"] == "ET_DYN"
            for note in section.iter_notes():  # type: ignore[attr-defined]
                # pyelftools names type 3 after GNU notes; the owner tells a stapsdt note.
                if note["n_name"] != "stapsdt":
                    continue
                desc = note["n_descdata"]
                semaphore = int.from_bytes(desc[16:24], "little")
                provider, name = desc[24:].split(b"\0")[:2]
                if (provider, name) != (b"python", b"audit") or semaphore == 0:
                    continue
                if base_section is not None:
                    # Prelink-style adjustment: the note records the link-time .stapsdt.base.
                    semaphore += base_section["sh_addr"] - int.from_bytes(desc[8:16], "little")
                return semaphore + (_load_bias(pid) if pie else 0)
    except OSError:
        return None
    return None


def _load_bias(pid: int | str) -> int:
    target = str(Path(f"/proc/{pid}/exe").readlink())
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[5] == target and int(fields[2], 16) == 0:
            return int(fields[0].split("-")[0], 16)
    return 0


class AuditProbes(RuntimeObserver):
    """The observer emitting `wukong.reconcile.*` audit events while traced.

    The manager always registers it (it costs one memory load per event while
    no tracer is attached).
    """

    def __init__(self) -> None:
        address = audit_semaphore()
        self._semaphore = ctypes.c_ushort.from_address(address) if address else None

    def reconcile_gate(self) -> Callable[[], bool]:
        """Open while the agent's tracer is attached (it raises the semaphore)."""
        semaphore = self._semaphore
        if semaphore is None:
            return _never
        # The semaphore's value read in C, no Python frame: the fan-out asks it on
        # every reconcile event while another observer has them built (tracing).
        return functools.partial(getattr, semaphore, "value")  # an int: truthy while traced

    def reconcile(self, event: LifecycleEvent) -> None:
        if self._semaphore is None or not self._semaphore.value:
            return
        ctx = event.context
        key = str(event.request)
        budget_ms = round(ctx.timeout * 1000)
        if event.step is Step.STARTED:
            sys.audit(f"{EVENT_PREFIX}start|c={event.controller}|k={key}|b={budget_ms}")
        elif event.step is Step.FINISHED:
            elapsed_ms = round((event.duration or 0.0) * 1000)
            if event.outcome is Outcome.CANCELLED:
                assert event.reason is not None  # decided for every cancellation
                reason = event.reason.value
                # The key last: the agent copies 200 bytes, so a long name is what
                # gets cut, never the trace and span ids that link to the span.
                # The object's namespace on its own (n=): the agent attributes
                # cancellations to a tenant even when a long key is cut.
                sys.audit(
                    f"{EVENT_PREFIX}cancel|c={event.controller}|r={reason}{_span_ids(ctx.span)}"
                    f"|e={elapsed_ms}|b={budget_ms}|n={event.request.namespace}|k={key}"
                )
            assert event.outcome is not None  # FINISHED always carries one
            outcome = event.outcome.value
            sys.audit(
                f"{EVENT_PREFIX}end|c={event.controller}|k={key}|o={outcome}"
                f"|e={elapsed_ms}|b={budget_ms}"
            )


def _never() -> bool:
    return False


def _span_ids(span: Any) -> str:
    """`|t=<trace id>|s=<span id>` of a traced reconcile, else nothing."""
    if span is None:
        return ""
    ids = span.get_span_context()
    return f"|t={ids.trace_id:032x}|s={ids.span_id:016x}"
