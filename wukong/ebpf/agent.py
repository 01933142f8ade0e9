"""The agent: keeps probes on the node's targets and counts what they see.

New processes are found from their exec (`process_events`), the moment they
start, and a periodic `rescan()` of /proc is the safety net. A Go binary is
probed once, on its file: every process that runs it, the ones started later
included, is counted by the kernel from its first cancellation, before the
agent has even looked at it; the agent then attributes it to its pod, or marks
it in the kernel as filtered out (`--pid`, `--pods-only`). A Go binary seen for
the first time is attached without a compile: one program is compiled ahead.
A Python operator gets its own USDT probe.

`poll()` reads every probe (Go: counts read from the kernel; Python: events
from a perf buffer). Cancellations are attributed to their pod, counted in
`wukong_node_cancellations_total{node,namespace,pod,container,runtime,reason}`
(bounded: `reason` takes only the contract's values, and a pod's series are
capped) and handed to `on_cancel` (the live view, `--json`, OTLP).
Nothing goes missing silently: what a probe could not deliver is in
`wukong_node_events_lost_total{node,runtime,reason}` (and `lost`, when it
leaves the counts short), a process that cannot be traced in
`wukong_node_untraced_processes_total{node,runtime,reason}`.
`wukong_node_traced_processes{node,namespace,pod,container,runtime}` says which
processes are traced right now (a count that stays 0 is then a quiet process,
not an untraced one).
"""

import dataclasses
import logging
import os
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as PromCounter

from wukong.ebpf.attribution import Owner, PodAttribution
from wukong.ebpf.discovery import GO, PYTHON, BinaryKey, Discovery, Target, binary_key
from wukong.ebpf.go_probe import (
    LOST_REASONS,
    NAMED_PER_WINDOW,
    UNNAMED,
    GoProbe,
    compile_program,
)
from wukong.ebpf.preflight import KernelRefused, MissingCapability, StageFailed, bpf_failure
from wukong.ebpf.process_events import ProcessEvents
from wukong.ebpf.python_probe import PythonProbe
from wukong.ebpf.records import Cancellation
from wukong.runtime import CancelReason

log = logging.getLogger(__name__)

Probe = PythonProbe | GoProbe

#: The values `reason` may take: the contract's cancel reasons, `canceled`
#: (a Go context cancelled at its root, for a reason only its program knows)
#: and `unnamed` (Go cancellations of a storm counted past the naming budget).
#: Anything else a traced process reports counts as OVERFLOW_REASON; its text
#: goes only to the event stream (`Cancellation.reported_reason`).
NODE_REASONS = frozenset(CancelReason) | {"canceled", UNNAMED}
OVERFLOW_REASON = "other"
#: Label sets of wukong_node_cancellations_total one pod may have; beyond, its
#: cancellations are counted in wukong_node_series_overflow_total only.
MAX_SERIES_PER_POD = 64
#: Go binaries probed at once: each holds its maps (see README, "The agent's memory").
MAX_BINARIES = 16
#: Python operators traced at once: each holds its program and perf buffer.
MAX_PYTHON_PROCESSES = 32
#: A binary no process has run for this long is detached (its maps freed).
IDLE_BINARY_SECONDS = 300.0
#: The `runtime` of what the agent itself loses (its process events): no traced runtime's.
AGENT_RUNTIME = "agent"
#: What a probe can fail to deliver, by runtime ("agent": the agent's own exec and exit events).
LOSS_REASONS = {
    GO: LOST_REASONS,
    PYTHON: ("perf_buffer",),
    AGENT_RUNTIME: ("process_events",),
}
#: Why a process the agent found is not traced, by runtime.
UNTRACED_REASONS = {
    GO: (
        "unsupported_go_version",
        "unreadable_symbols",
        "probe_failed",
        "permission",
        "too_many_binaries",
    ),
    PYTHON: ("no_usdt_probes", "probe_failed", "permission", "too_many_processes"),
}
# Recent execs remembered for processes that end before the agent looks at them.
_RECENT_EXECS = 4096
# Losses that leave the cancellation counts short (the others lose detail only).
_COUNTS_SHORT = ("perf_buffer", "counts_map_full")


class Agent:
    def __init__(
        self,
        *,
        node: str,
        discovery: Discovery,
        attribution: PodAttribution | None = None,
        on_cancel: Callable[[Cancellation], None] | None = None,
        on_notice: Callable[[str], None] | None = None,
        process_events: bool = True,
        named_per_window: int | None = NAMED_PER_WINDOW,
    ) -> None:
        """`named_per_window`: Go cancellations each CPU names per 10 ms (None: all)."""
        self.node = node
        self._named_per_window = named_per_window
        self.discovery = discovery
        self.attribution = attribution
        self.registry = CollectorRegistry()
        self.cancellations = PromCounter(
            "wukong_node_cancellations",
            "Context cancellations traced in controller processes on this node, by pod, "
            "runtime and cancel reason.",
            ["node", "namespace", "pod", "container", "runtime", "reason"],
            registry=self.registry,
        )
        self.events_lost = PromCounter(
            "wukong_node_events_lost",
            "What the node agent's probes could not deliver, by reason: perf_buffer and "
            "counts_map_full are cancellations missing from wukong_node_cancellations_total; "
            "ring_buffer_full a call site's first time and whole stack (counts exact); "
            "processes_map_full a process counted but not filtered; process_events "
            "new processes found by the next scan instead of at their exec.",
            ["node", "runtime", "reason"],
            registry=self.registry,
        )
        self.untraced = PromCounter(
            "wukong_node_untraced_processes",
            "Controller processes on this node the agent found but could not trace, by reason.",
            ["node", "runtime", "reason"],
            registry=self.registry,
        )
        self.series_overflow = PromCounter(
            "wukong_node_series_overflow",
            f"Cancellations of pods that already had {MAX_SERIES_PER_POD} series of "
            "wukong_node_cancellations_total: counted here instead.",
            ["node"],
            registry=self.registry,
        )
        self.series_overflow.labels(node=node)
        self.traced = Gauge(
            "wukong_node_traced_processes",
            "Controller processes on this node with the agent's probes attached, by pod.",
            ["node", "namespace", "pod", "container", "runtime"],
            registry=self.registry,
        )
        self.counts: Counter[tuple[int, str]] = Counter()  # (pid, reason) -> n
        self.lost = 0  # cancellations missing from the counts
        self.lost_by_reason: Counter[str] = Counter()
        self.untraced_by_reason: Counter[str] = Counter()
        self.probes: dict[int, Probe] = {}  # traced pid -> its probe (a Go binary's is shared)
        self.targets: dict[int, Target] = {}
        self.binaries: dict[BinaryKey, GoProbe] = {}
        self.untraceable: dict[int, Target] = {}
        self._binary_problems: dict[BinaryKey, str] = {}
        self._idle_since: dict[BinaryKey, float] = {}
        self._denied: set[int] = set()
        self._admitted_ns: dict[int, int] = {}  # traced pid -> when the agent took it on
        self._owners: dict[int, Owner] = {}
        self._series: dict[tuple[str, str], set[tuple[str, ...]]] = {}
        self._execs: OrderedDict[int, str] = OrderedDict()  # pid -> comm, recent execs
        # Go processes that ended before the agent knew them: counted unattributed.
        self._ended_unknown: list[Cancellation] = []
        self._on_cancel = on_cancel or (lambda _: None)
        self._notice = on_notice or (lambda message: log.info("%s", message))
        self._want_events = process_events
        self._events: ProcessEvents | None = None
        self._started = False
        # BCC compiles one program at a time: the spare's thread and the Python probes.
        self._compiling = threading.Lock()
        self._compiler: ThreadPoolExecutor | None = None
        self._spare: Future[Any] | None = None
        # Every loss and every reason not to trace is there from the start, at 0.
        for runtime, reasons in LOSS_REASONS.items():
            for reason in reasons:
                self.events_lost.labels(node=node, runtime=runtime, reason=reason)
        for runtime, reasons in UNTRACED_REASONS.items():
            for reason in reasons:
                self.untraced.labels(node=node, runtime=runtime, reason=reason)

    # --- the loop -------------------------------------------------------------

    def step(self) -> None:
        """One poll and one scan: what `wukong agent` does between its sleeps."""
        self.poll()
        self.rescan()

    def poll(self) -> None:
        """Process starts and exits first (so a new process is known before its
        counts are read), then every probe."""
        self._start()
        self._poll_process_events()
        for probe in self._distinct_probes():
            probe.poll()
        if self._ended_unknown:
            # Processes that started and ended since the events were read: their
            # exec is in the buffer now, with the name they ran under.
            self._poll_process_events()
            ended, self._ended_unknown = self._ended_unknown, []
            for cancellation in ended:
                self._count(cancellation)

    def wait(self, seconds: float) -> None:
        """Sleep until the next poll, taking on processes as they start meanwhile."""
        if self._events is None:
            time.sleep(seconds)
        else:
            self._events.wait(seconds)

    def _poll_process_events(self) -> None:
        if self._events is not None:
            lost = self._events.poll()
            if lost:
                self._lost(AGENT_RUNTIME, "process_events", lost)

    def rescan(self) -> None:
        """The safety net: targets the events missed, processes gone unnoticed."""
        self._start()
        targets = self.discovery.scan()
        for pid in [pid for pid in self.probes if pid not in targets]:
            self._detach(pid, why="exited")
        for pid in [pid for pid in self.untraceable if pid not in targets]:
            del self.untraceable[pid]
        self._denied = {pid for pid in self._denied if os.path.exists(f"/proc/{pid}")}
        for target in targets.values():
            if target.pid not in self.probes and target.pid not in self.untraceable:
                self._admit(target)
        self._close_idle_binaries()

    def _distinct_probes(self) -> list[Probe]:
        python = [probe for probe in self.probes.values() if isinstance(probe, PythonProbe)]
        return [*python, *self.binaries.values()]

    def _start(self) -> None:
        """The BPF parts, on first use (a registry alone needs no root)."""
        if self._started:
            return
        self._started = True
        if self._want_events:
            try:
                self._events = ProcessEvents(on_exec=self._on_exec, on_exit=self._on_exit)
            except StageFailed as exc:  # a missing capability, named
                raise bpf_failure(exc.cause, stage=exc.stage, pid=None) from exc
        self._compiler = ThreadPoolExecutor(1, thread_name_prefix="wukong-bpf-compile")
        self._spare = self._compiler.submit(self._compile)

    def _compile(self) -> Any:
        with self._compiling:
            return compile_program()

    # --- process events -------------------------------------------------------

    def _on_exec(self, pid: int, comm: str, when_ns: int) -> None:
        self._execs[pid] = comm
        if len(self._execs) > _RECENT_EXECS:
            self._execs.popitem(last=False)
        if self._admitted_ns.get(pid, 0) > when_ns:
            return  # a scan found it after this exec: nothing new
        if pid in self.probes:  # the process replaced its program
            self._detach(pid, why="ran another program", exited=False)
        self.untraceable.pop(pid, None)
        # A new program: what the kernel knew of this pid before the exec (denied,
        # placed elsewhere) goes. What it learnt since stays, counts included: a
        # process of a traced binary may have been cancelling since its exec.
        self._denied.discard(pid)
        for probe in self.binaries.values():
            probe.reset(pid, before_ns=when_ns)
        target = self.discovery.classify(pid)
        if target is not None:
            self._admit(target)
        else:
            self._deny_if_probed(pid)

    def _on_exit(self, pid: int) -> None:
        if pid in self.probes:
            self._detach(pid, why="exited")
            return
        self.untraceable.pop(pid, None)
        self._forget_elsewhere(pid)

    def _forget_elsewhere(self, pid: int) -> None:
        """The kernel state of an ended pid the agent did not trace (denied, or one
        that ended before the agent looked at it: counted all the same), so that a
        reused pid starts clean."""
        self._denied.discard(pid)
        for probe in list(self.binaries.values()):  # a poll may probe a new binary
            if probe.ran(pid):
                probe.poll()
                probe.forget(pid)

    def _deny_if_probed(self, pid: int) -> None:
        """A process of a probed binary that is not a target: filtered in the kernel."""
        try:
            probe = self.binaries.get(binary_key(pid))
        except OSError:
            return  # gone, or a kernel thread
        if probe is not None:
            probe.deny(pid)
            self._denied.add(pid)

    # --- attaching ------------------------------------------------------------

    def _admit(self, target: Target) -> None:
        if not target.traceable:
            self._untraceable(target, target.untraced_reason, target.problem)
            return
        try:
            probe = self._go_probe(target) if target.runtime == GO else self._python_probe(target)
        except FileNotFoundError:
            log.debug("pid %d (%s) exited while attaching", target.pid, target.comm)
            return
        except _Untraceable as exc:
            self._untraceable(target, exc.reason, str(exc))
            return
        self.probes[target.pid] = probe
        self.targets[target.pid] = target
        self._admitted_ns[target.pid] = time.monotonic_ns()
        owner = self.attribution.owner(target.pid) if self.attribution else Owner()
        self._owners[target.pid] = owner
        self._count_traced(owner, target.runtime)
        self._notice(f"tracing pid {target.pid} ({target.comm}, {target.runtime})")

    def _python_probe(self, target: Target) -> PythonProbe:
        traced = sum(1 for probe in self.probes.values() if isinstance(probe, PythonProbe))
        if traced >= MAX_PYTHON_PROCESSES:
            raise _Untraceable(
                "too_many_processes",
                f"{MAX_PYTHON_PROCESSES} Python operators traced already (each holds its "
                "own program and buffer)",
            )
        on_lost = partial(self._lost, PYTHON, "perf_buffer")
        try:
            with self._compiling:
                return PythonProbe(target, on_cancel=self._record, on_lost=on_lost)
        except StageFailed as exc:
            raise self._failure(target, exc) from exc

    def _go_probe(self, target: Target) -> GoProbe:
        assert target.binary is not None and target.key is not None
        probe = self.binaries.get(target.key)
        if probe is not None:
            self._idle_since.pop(target.key, None)
            return probe
        if target.key in self._binary_problems:
            raise _Untraceable("probe_failed", self._binary_problems[target.key])
        if len(self.binaries) >= MAX_BINARIES:
            raise _Untraceable(
                "too_many_binaries",
                f"{MAX_BINARIES} Go binaries traced already (each holds its own maps)",
            )
        assert self._spare is not None and self._compiler is not None
        spare, self._spare = self._spare, self._compiler.submit(self._compile)
        try:
            bpf = spare.result()
        except Exception as exc:  # BCC makes its maps as it compiles: CAP_BPF, say
            raise self._failure(target, StageFailed("load", exc)) from exc
        try:
            probe = GoProbe(
                target.binary,
                exe=f"/proc/{target.pid}/exe",
                on_cancel=self._record,
                on_lost=partial(self._lost, GO),
                bpf=bpf,
                named_per_window=self._named_per_window,
            )
        except StageFailed as exc:
            bpf.cleanup()
            error = self._failure(target, exc)
            self._binary_problems[target.key] = str(error)
            raise error from exc
        self.binaries[target.key] = probe
        self._notice(f"probing {target.binary.path} ({target.comm}): every process that runs it")
        if probe.site.why:
            self._notice(f"{target.comm}: {probe.site.why}")
        return probe

    def _failure(self, target: Target, exc: StageFailed) -> "_Untraceable":
        if not os.path.exists(f"/proc/{target.pid}"):
            raise FileNotFoundError(target.pid) from exc
        error = bpf_failure(exc.cause, stage=exc.stage, pid=target.pid)
        if isinstance(error, MissingCapability):
            raise error from exc
        # This process (or binary) only, say another tracer's uprobe on it
        # conflicts: the others can still be traced.
        reason = "permission" if isinstance(error, KernelRefused) else "probe_failed"
        return _Untraceable(reason, str(error))

    def _untraceable(self, target: Target, reason: str, problem: str | None) -> None:
        self.untraceable[target.pid] = dataclasses.replace(target, problem=problem)
        self.untraced.labels(node=self.node, runtime=target.runtime, reason=reason).inc()
        self.untraced_by_reason[reason] += 1
        self._notice(f"pid {target.pid} ({target.comm}, {target.runtime}): {problem}")

    # --- detaching ------------------------------------------------------------

    def _detach(self, pid: int, *, why: str, exited: bool = True) -> None:
        probe = self.probes[pid]
        try:
            probe.poll()  # what it reported before it went still counts, as its pod's
        except Exception as exc:  # the process is gone: its probes went with it
            log.debug("pid %d: its last poll found its probes gone (%s)", pid, exc)
        del self.probes[pid]
        target = self.targets.pop(pid)
        self._admitted_ns.pop(pid, None)
        try:
            if isinstance(probe, GoProbe):
                # A process still running (it replaced its program) keeps its
                # counts: it may be cancelling right now.
                probe.forget(pid) if exited else probe.reset(pid)
                if target.key is not None and not self._runs(probe):
                    self._idle_since[target.key] = time.monotonic()
            else:
                probe.close()
        except Exception as exc:  # the process is gone: its probes went with it
            log.debug("pid %d: detaching found its probes already gone (%s)", pid, exc)
        owner = self._owners.pop(pid, Owner())
        self._count_traced(owner, target.runtime)
        self._notice(f"pid {pid} {why}; detached")

    def _runs(self, probe: GoProbe) -> bool:
        return any(other is probe for other in self.probes.values())

    def _close_idle_binaries(self) -> None:
        now = time.monotonic()
        for key, since in list(self._idle_since.items()):
            probe = self.binaries.get(key)
            if probe is None or self._runs(probe):
                del self._idle_since[key]
            elif now - since > IDLE_BINARY_SECONDS:
                probe.poll()
                probe.close()
                del self.binaries[key], self._idle_since[key]
                self._notice(f"{probe.binary.path}: no process ran it for a while; detached")

    def _count_traced(self, owner: Owner, runtime: str) -> None:
        labels = (self.node, owner.namespace, owner.pod, owner.container, runtime)
        traced = sum(
            1
            for pid in self.probes
            if self._owners.get(pid) == owner and self.targets[pid].runtime == runtime
        )
        if traced:
            self.traced.labels(*labels).set(traced)
        else:  # a pod that is gone leaves no series behind
            self.traced.remove(*labels)

    # --- counting -------------------------------------------------------------

    def _record(self, cancellation: Cancellation) -> None:
        pid = cancellation.pid
        if pid in self._denied:
            return
        if pid not in self.targets and cancellation.runtime == GO:
            if not os.path.exists(f"/proc/{pid}"):
                self._ended_unknown.append(cancellation)  # counted at the end of the poll
                return
            if not self._adopt(pid):
                return  # filtered out: not a target
        self._count(cancellation)

    def _count(self, cancellation: Cancellation) -> None:
        pid = cancellation.pid
        target = self.targets.get(pid)
        cancellation.comm = target.comm if target else self._execs.get(pid, "?")
        owner = self._owners.get(pid, Owner())
        if owner.unresolved and self.attribution is not None:
            owner = self._resolve_owner(pid, owner, cancellation.runtime)
        cancellation.node = self.node
        cancellation.namespace, cancellation.pod = owner.namespace, owner.pod
        cancellation.container = owner.container
        if cancellation.reason not in NODE_REASONS:
            cancellation.reported_reason = cancellation.reason
            cancellation.reason = OVERFLOW_REASON
        self.counts[(pid, cancellation.reason)] += cancellation.count
        labels = (
            self.node,
            owner.namespace,
            owner.pod,
            owner.container,
            cancellation.runtime,
            cancellation.reason,
        )
        series = self._series.setdefault((owner.namespace, owner.pod), set())
        if labels in series or len(series) < MAX_SERIES_PER_POD:
            series.add(labels)
            self.cancellations.labels(*labels).inc(cancellation.count)
        else:
            self.series_overflow.labels(node=self.node).inc(cancellation.count)
        self._on_cancel(cancellation)

    def _resolve_owner(self, pid: int, owner: Owner, runtime: str) -> Owner:
        """The pod of a process whose pod was not listed yet when it was taken on."""
        assert self.attribution is not None
        resolved = self.attribution.resolve(owner)
        if resolved != owner and pid in self._owners:
            self._owners[pid] = resolved
            self._count_traced(owner, runtime)  # its series by pod UID goes
            self._count_traced(resolved, runtime)
        return resolved

    def _adopt(self, pid: int) -> bool:
        """A running Go process counted before the agent knew it (it started a
        moment ago, or before the agent and the scan has not reached it): a
        target now, or filtered out from now on."""
        target = self.discovery.classify(pid)
        if target is not None and target.traceable:
            self._admit(target)
            return pid in self.targets
        self._deny_if_probed(pid)
        return False

    def _lost(self, runtime: str, reason: str, count: int) -> None:
        if reason in _COUNTS_SHORT:
            self.lost += count
        self.lost_by_reason[reason] += count
        self.events_lost.labels(node=self.node, runtime=runtime, reason=reason).inc(count)

    def close(self) -> None:
        for pid in list(self.probes):
            self._detach(pid, why="agent stopping")
        for probe in self.binaries.values():
            probe.close()
        self.binaries.clear()
        if self._events is not None:
            self._events.close()
        if self._compiler is not None:
            self._compiler.shutdown(wait=True)
            if self._spare is not None and self._spare.done() and not self._spare.exception():
                self._spare.result().cleanup()


class _Untraceable(Exception):
    def __init__(self, reason: str, problem: str) -> None:
        super().__init__(problem)
        self.reason = reason
