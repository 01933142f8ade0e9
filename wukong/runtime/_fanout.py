"""Fans runtime events out to the registered observers, isolating the runtime from them.

The runtime's parts each hold one `RuntimeObserver`: this fan-out, made by the
manager from `Manager(observers=[...])`. For each method it keeps only the
observers that override it, and makes once the call that reports to them: an
event nobody watches costs one empty call, an event one observer watches a call
to it with its failures contained, no loop; the hot paths (the work queue, a
reconcile's lifecycle) resolve each report once with `listener` and skip what
nobody watches altogether.
An observer that raises is logged once per (observer, method) with its
traceback, then only counted, and the other observers hear of it through
`observer_failed` (metrics turn that into a counter): a broken observer must
never break the reconcile, the API call or the election that reported to it.
"""

import logging
from collections.abc import Callable, Iterable
from typing import Any

from wukong.runtime._observer import (
    ApiCall,
    ControllerView,
    LifecycleEvent,
    QueueMetrics,
    RuntimeObserver,
    WebhookReview,
)

log = logging.getLogger("wukong.runtime.observer")

# What the runtime asks observers for, once, rather than reports to them.
_QUESTIONS = frozenset({"reconcile_gate", "queue_metrics"})
_METHODS = tuple(
    name
    for name, value in vars(RuntimeObserver).items()
    if callable(value) and not name.startswith("_") and name not in _QUESTIONS
)

# (observer's name, its bound method, its gate: None for a call always made)
_Call = tuple[str, Callable[..., None], Callable[[], bool] | None]


def _overrides(observer: object, method: str) -> bool:
    own = getattr(type(observer), method, None)
    return own is not None and own is not getattr(RuntimeObserver, method)


class ObserverFanout(RuntimeObserver):
    """A `RuntimeObserver` that calls every observer's overridden method, failures contained."""

    def __init__(self, observers: Iterable[RuntimeObserver] = ()) -> None:
        self.observers = tuple(observers)
        # A gate is asked once: only `reconcile` has them (the node agent's probe
        # points act only while it traces).
        self._calls: dict[str, tuple[_Call, ...]] = {
            method: tuple(
                (
                    _name(observer),
                    getattr(observer, method),
                    observer.reconcile_gate() if method == "reconcile" else None,
                )
                for observer in self.observers
                if _overrides(observer, method)
            )
            for method in _METHODS
        }
        self._logged: set[tuple[str, str]] = set()
        self.failures = 0
        # Each report's call made once, on the instance (the class's methods below
        # make it anew): a report is one call to its listeners, no lookup by name.
        for method in _METHODS:
            setattr(self, method, self._reporter(method))

    def _reporter(self, method: str) -> Callable[..., None]:
        """What `method` does on this fan-out: call each observer that overrides it
        (a gated one only while its gate is open), each failure contained."""
        calls = self._calls[method]
        failed = self._failed
        if not calls:
            return _nobody
        if len(calls) == 1 and calls[0][2] is None:
            ((name, call, _),) = calls

            def one(*args: Any) -> None:
                try:
                    call(*args)
                except Exception:
                    failed(name, method)

            return one

        def each(*args: Any) -> None:
            for name, call, gate in calls:
                if gate is None or gate():
                    try:
                        call(*args)
                    except Exception:
                        failed(name, method)

        return each

    def _failed(self, observer: str, method: str) -> None:
        self.failures += 1
        if (observer, method) not in self._logged:
            self._logged.add((observer, method))
            log.exception(
                "observer %s failed in %s; the runtime goes on (further failures are only counted)",
                observer,
                method,
            )
        for other, call, _ in self._calls["observer_failed"]:
            if other == observer:
                continue  # it is the one failing: do not ask it again
            try:
                call(observer, method)
            except Exception:
                self.failures += 1

    def controller_added(self, controller: ControllerView) -> None:
        self._reporter("controller_added")(controller)

    def queue_added(self, queue: str) -> None:
        self._reporter("queue_added")(queue)

    def queue_got(self, queue: str, waited: float) -> None:
        self._reporter("queue_got")(queue, waited)

    def queue_done(self, queue: str, worked: float) -> None:
        self._reporter("queue_done")(queue, worked)

    def queue_retried(self, queue: str) -> None:
        self._reporter("queue_retried")(queue)

    def reconcile(self, event: LifecycleEvent) -> None:
        self._reporter("reconcile")(event)

    def reconcile_gate(self) -> Callable[[], bool] | None:
        """Open while any observer of reconciles would act; None if one always would."""
        gates = []
        for _, _, gate in self._calls["reconcile"]:
            if gate is None:
                return None
            gates.append(gate)
        if len(gates) == 1:
            return gates[0]
        return lambda: any(gate() for gate in gates)

    def queue_metrics(self, queue: str) -> QueueMetrics | None:
        """The first series an observer gives for `queue`; one that raises gives none."""
        for observer in self.observers:
            if not _overrides(observer, "queue_metrics"):
                continue
            try:
                series = observer.queue_metrics(queue)
            except Exception:
                self._failed(_name(observer), "queue_metrics")
                continue
            if series is not None:
                return series
        return None

    def api_call(self, call: ApiCall) -> None:
        self._reporter("api_call")(call)

    def watch_restarted(self, resource: str, cause: str) -> None:
        self._reporter("watch_restarted")(resource, cause)

    def relisted(self, resource: str, cause: str) -> None:
        self._reporter("relisted")(resource, cause)

    def leadership_changed(self, lease: str, leading: bool) -> None:
        self._reporter("leadership_changed")(lease, leading)

    def standing_by(self, lease: str) -> None:
        self._reporter("standing_by")(lease)

    def shards_changed(self, held: frozenset[int], moved: int, reason: str) -> None:
        self._reporter("shards_changed")(held, moved, reason)

    def space_conflict(self, conflict: bool) -> None:
        self._reporter("space_conflict")(conflict)

    def shard_filtering(self, resource: str, where: str) -> None:
        self._reporter("shard_filtering")(resource, where)

    def loop_blocked(self, seconds: float, task: str | None) -> None:
        self._reporter("loop_blocked")(seconds, task)

    def webhook_added(self, webhook: str) -> None:
        self._reporter("webhook_added")(webhook)

    def admission_started(self, webhook: str) -> None:
        self._reporter("admission_started")(webhook)

    def admission_reviewed(self, review: WebhookReview) -> None:
        self._reporter("admission_reviewed")(review)

    def observer_failed(self, observer: str, method: str) -> None:
        self._reporter("observer_failed")(observer, method)


def _name(observer: object) -> str:
    return getattr(observer, "name", None) or type(observer).__name__


def listener(observer: RuntimeObserver, method: str) -> Callable[..., None] | None:
    """How a hot path reports `method` to `observer`, resolved once: None when that
    reaches nobody (a fan-out whose observers all leave `method` alone, an observer
    that does), so the caller skips the call and building its arguments; else a
    fan-out's own call of its listeners, their failures contained."""
    if not isinstance(observer, ObserverFanout):
        bound: Callable[..., None] = getattr(observer, method)
        inherited = getattr(bound, "__func__", None) is getattr(RuntimeObserver, method)
        return None if inherited else bound
    if not observer._calls[method]:
        return None
    reporter: Callable[..., None] = getattr(observer, method)  # made in its __init__
    return reporter


def _nobody(*args: Any) -> None:
    """A report that no observer listens to."""


NO_OBSERVER = ObserverFanout()
