"""The agent: keeps probes attached to the node's targets and counts what they see.

Each `step()` rescans /proc (attaching to new targets, detaching from exited
ones, reporting once per process why one cannot be traced) and polls every
probe (Go: counts read from the kernel; Python: events from a perf buffer).
Cancellations are attributed to their pod, counted in
`wukong_node_cancellations_total{node,namespace,pod,container,runtime,reason}`
(bounded: no object names, no pids) and handed to `on_cancel` (the live view,
`--json`, OTLP). Whatever a probe could not deliver is counted in
`wukong_node_events_lost_total{node,runtime}` and `lost`: the other counts are
then short by that much, and everything that shows them says so.
`wukong_node_traced_processes{node,namespace,pod,container,runtime}` says which
processes the probes are on right now (a count that stays 0 is then a quiet
process, not an untraced one).
"""

import dataclasses
import logging
import os
from collections import Counter
from collections.abc import Callable
from functools import partial

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as PromCounter

from wukong.ebpf.attribution import Owner, PodAttribution
from wukong.ebpf.discovery import GO, Discovery, Target
from wukong.ebpf.go_probe import GoProbe, NotReady
from wukong.ebpf.preflight import MissingCapability, StageFailed, bpf_failure
from wukong.ebpf.python_probe import PythonProbe
from wukong.ebpf.records import Cancellation

log = logging.getLogger(__name__)

Probe = PythonProbe | GoProbe


class Agent:
    def __init__(
        self,
        *,
        node: str,
        discovery: Discovery,
        attribution: PodAttribution | None = None,
        on_cancel: Callable[[Cancellation], None] | None = None,
        on_notice: Callable[[str], None] | None = None,
    ) -> None:
        self.node = node
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
            "Events the node agent's probes could not deliver (a full buffer or map): "
            "cancellations missing from wukong_node_cancellations_total.",
            ["node", "runtime"],
            registry=self.registry,
        )
        self.traced = Gauge(
            "wukong_node_traced_processes",
            "Controller processes on this node with the agent's probes attached, by pod.",
            ["node", "namespace", "pod", "container", "runtime"],
            registry=self.registry,
        )
        self.counts: Counter[tuple[int, str]] = Counter()  # (pid, reason) -> n
        self.lost = 0
        self.probes: dict[int, Probe] = {}
        self.untraceable: dict[int, Target] = {}
        self._owners: dict[int, Owner] = {}
        self._on_cancel = on_cancel or (lambda _: None)
        self._notice = on_notice or (lambda message: log.info("%s", message))

    def step(self) -> None:
        for probe in list(self.probes.values()):
            probe.poll()
        self.rescan()

    def rescan(self) -> None:
        targets = self.discovery.scan()
        for pid in [pid for pid in self.probes if pid not in targets]:
            self._detach(pid, why="exited")
        for pid in [pid for pid in self.untraceable if pid not in targets]:
            del self.untraceable[pid]
        for pid, target in targets.items():
            if pid in self.probes or pid in self.untraceable:
                continue
            if not target.traceable:
                self.untraceable[pid] = target
                self._notice(f"pid {pid} ({target.comm}, {target.runtime}): {target.problem}")
                continue
            self._attach(target)

    def _attach(self, target: Target) -> None:
        try:
            on_lost = partial(self._lost, target.runtime)
            probe: Probe = (
                GoProbe(target, on_cancel=self._record, on_lost=on_lost)
                if target.runtime == GO
                else PythonProbe(target, on_cancel=self._record, on_lost=on_lost)
            )
        except NotReady as exc:
            log.debug(
                "pid %d (%s) not ready to trace (%s); next scan", target.pid, target.comm, exc
            )
            return
        except FileNotFoundError:
            log.debug("pid %d (%s) exited while attaching", target.pid, target.comm)
            return
        except Exception as exc:
            if not os.path.exists(f"/proc/{target.pid}"):
                self._notice(f"pid {target.pid} ({target.comm}) exited while attaching")
                return
            stage, cause = (exc.stage, exc.cause) if isinstance(exc, StageFailed) else ("load", exc)
            error = bpf_failure(cause, stage=stage, pid=target.pid)
            if isinstance(error, MissingCapability):
                raise error from exc
            # This process only (say, another tracer's uprobe on its binary
            # conflicts): the others can still be traced.
            self.untraceable[target.pid] = dataclasses.replace(target, problem=str(error))
            self._notice(f"pid {target.pid} ({target.comm}, {target.runtime}): {error}")
            return
        self.probes[target.pid] = probe
        self.events_lost.labels(node=self.node, runtime=target.runtime)  # 0 until a loss
        owner = self.attribution.owner(target.pid) if self.attribution else Owner()
        self._owners[target.pid] = owner
        self._count_traced(owner, target.runtime)
        self._notice(f"tracing pid {target.pid} ({target.comm}, {target.runtime})")
        if isinstance(probe, GoProbe) and probe.site.why:
            self._notice(f"pid {target.pid} ({target.comm}): {probe.site.why}")

    def _detach(self, pid: int, *, why: str) -> None:
        probe = self.probes.pop(pid)
        try:
            probe.poll()  # what it reported before it went still counts
            probe.close()
        except Exception as exc:  # the process is gone: its probes went with it
            log.debug("pid %d: detaching found its probes already gone (%s)", pid, exc)
        owner = self._owners.pop(pid, Owner())
        self._count_traced(owner, probe.target.runtime)
        self._notice(f"pid {pid} {why}; detached")

    def _count_traced(self, owner: Owner, runtime: str) -> None:
        labels = (self.node, owner.namespace, owner.pod, owner.container, runtime)
        traced = sum(
            1
            for pid, probe in self.probes.items()
            if self._owners.get(pid) == owner and probe.target.runtime == runtime
        )
        if traced:
            self.traced.labels(*labels).set(traced)
        else:  # a pod that is gone leaves no series behind
            self.traced.remove(*labels)

    def _record(self, cancellation: Cancellation) -> None:
        owner = self._owners.get(cancellation.pid, Owner())
        cancellation.node = self.node
        cancellation.namespace, cancellation.pod = owner.namespace, owner.pod
        cancellation.container = owner.container
        self.counts[(cancellation.pid, cancellation.reason)] += cancellation.count
        self.cancellations.labels(
            node=self.node,
            namespace=owner.namespace,
            pod=owner.pod,
            container=owner.container,
            runtime=cancellation.runtime,
            reason=cancellation.reason,
        ).inc(cancellation.count)
        self._on_cancel(cancellation)

    def _lost(self, runtime: str, count: int) -> None:
        self.lost += count
        self.events_lost.labels(node=self.node, runtime=runtime).inc(count)

    def close(self) -> None:
        for pid in list(self.probes):
            self._detach(pid, why="agent stopping")
