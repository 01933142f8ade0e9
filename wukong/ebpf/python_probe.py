"""Loads python_probe.c onto one Python operator and parses its audit events."""

import atexit
import logging
from collections.abc import Callable
from pathlib import Path

from wukong.ebpf.discovery import Target
from wukong.ebpf.preflight import AgentError, StageFailed
from wukong.ebpf.records import Cancellation
from wukong.ebpf.semaphores import SemaphoreLedger, start_time
from wukong.runtime.probes import audit_semaphore

# Bytes, as BCC takes a program's text: it prepends the USDT argument readers
# (bytes too) to it, and a str only gets converted with a DeprecationWarning.
SOURCE = (Path(__file__).parent / "python_probe.c").read_bytes()

log = logging.getLogger(__name__)

SEMAPHORE_RAISE = 1  # what enabling the probe adds to its semaphore


def record_semaphores(state_dir: Path) -> SemaphoreLedger:
    """Put back the semaphores that agents killed before detaching left raised, then
    have every probe of this process write down in `state_dir` those it raises (until
    the process exits)."""
    try:
        ledger = SemaphoreLedger(state_dir)
        ledger.open()
    except OSError as exc:
        raise AgentError(
            f"cannot keep the semaphore ledger in {state_dir} (--state-dir): {exc}"
        ) from exc
    PythonProbe.ledger = ledger
    atexit.register(ledger.close)
    return ledger


def parse_event(text: str) -> tuple[str, dict[str, str]]:
    """ "wukong.cancel|c=x|r=y" -> ("cancel", {"c": "x", "r": "y"})."""
    head, *pairs = text.split("|")
    fields = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
    return head.removeprefix("wukong."), fields


class PythonProbe:
    """python:audit on one process; calls `on_cancel` for each cancellation it
    reports and `on_lost` with how many events the perf buffer dropped."""

    # Where probes write down the semaphores they raise, so that an agent killed
    # before it detaches leaves them for its successor to put back (set by
    # `wukong agent` and `wukong trace`; None: not written down).
    ledger: SemaphoreLedger | None = None

    def __init__(
        self,
        target: Target,
        *,
        on_cancel: Callable[[Cancellation], None],
        on_lost: Callable[[int], None],
    ) -> None:
        from bcc import BPF, USDT

        self.target = target
        self.reconciles = 0
        self._on_cancel = on_cancel
        # Read before the probe is enabled: the process raised is surely the one recorded.
        started, address = start_time(target.pid), audit_semaphore(target.pid)
        # Kept for the probe's lifetime: enabling a USDT probe increments its semaphore
        # in the target, and the USDT object's destructor decrements it again.
        try:
            self._usdt = USDT(pid=target.pid)
            self._usdt.enable_probe(probe="python:audit", fn_name="on_audit")  # str: bcc splits
        except Exception as exc:
            raise StageFailed("usdt", exc) from exc
        if self.ledger is not None and address is not None:
            # Written once raised (BCC adds one per enabled probe) and forgotten before it
            # is lowered: a successor never takes back more than this agent added.
            try:
                self.ledger.raised(target.pid, address, SEMAPHORE_RAISE, started=started)
            except OSError as exc:  # traced all the same, only not put back after a kill
                log.warning("pid %d: its semaphore is not written down (%s)", target.pid, exc)
        try:
            self.bpf = BPF(text=SOURCE, usdt_contexts=[self._usdt])
        except Exception as exc:
            # The semaphore is up already: put it back now. Left to the USDT object's
            # destructor, it would wait for the traceback to go, and an agent that
            # exits on this error (a missing capability) would leave the operator
            # paying for audit events nobody reads.
            self._release_usdt()
            raise StageFailed("load", exc) from exc
        # Per event (a reconcile's start, end or cancel: low rates), but a
        # full buffer is counted, never silent.
        self.bpf[b"audit_events"].open_perf_buffer(self._event, page_cnt=64, lost_cb=on_lost)

    def _event(self, cpu: int, data: object, size: int) -> None:
        event = self.bpf[b"audit_events"].event(data)
        what, fields = parse_event(event.text.decode(errors="replace"))
        if what == "start":
            self.reconciles += 1
        elif what == "cancel":
            self._on_cancel(
                Cancellation(
                    pid=self.target.pid,
                    comm=self.target.comm,
                    runtime="python",
                    reason=fields.get("r", "parent_cancelled"),
                    controller=fields.get("c", ""),
                    object_key=fields.get("k", ""),
                    object_namespace=fields.get("n", ""),
                    elapsed_ms=int(fields["e"]) if fields.get("e", "").isdigit() else None,
                    budget_ms=int(fields["b"]) if fields.get("b", "").isdigit() else None,
                    trace_id=fields.get("t", ""),
                    span_id=fields.get("s", ""),
                )
            )

    def poll(self) -> None:
        self.bpf.perf_buffer_poll(timeout=0)

    def close(self) -> None:
        self.bpf.cleanup()
        self._release_usdt()

    def _release_usdt(self) -> None:
        """Close the USDT context (decrementing the probe's semaphore) exactly once."""
        from bcc import lib

        context, self._usdt.context = self._usdt.context, None
        if context:
            if self.ledger is not None:
                self.ledger.lowered(self.target.pid)
            lib.bcc_usdt_close(context)  # the destructor then closes None: a no-op
