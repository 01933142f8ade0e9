"""The manager: shared informers, controllers, leader election, health, shutdown.

Lifecycle of `run()`:

The manager is configured by one frozen `ManagerOptions` (controller-runtime's
`manager.Options`, kopf's `OperatorSettings`): every field says what it does
and its default.

1. Serve `/healthz` and `/readyz` (if `health_bind` is set) and the admission
   webhooks added with `add_webhook` (if `webhook_bind` is set; see
   `webhook`); start the watchdog that reports blocking code (see `_loopwatch`).
2. Start one shared informer per watched resource and wait until all have
   listed once (`/readyz` turns ok). The first manager of the process then
   freezes the start-up heap out of the garbage collector's full collections
   (`_heap`; `freeze_startup_heap=False` leaves the collector alone).
3. With leader election: wait to acquire the Lease. Only the leader reconciles
   (informers run either way, so a new leader starts with a warm cache).
4. Start every controller's workers; run until `stop()` (SIGTERM/SIGINT when
   `handle_signals()` was called) or until leadership is lost.
5. Stop: every controller stops taking work and cancels its reconciles in
   flight with reason `shutdown`, waiting up to `shutdown_grace` seconds for
   them to unwind; then the Lease is released, informers and the health
   server stop.

Leadership lost is not a graceful stop: another replica may already lead. The
write fence (`_fence`) closes first, so no reconcile of this process writes
again, whatever it does with its cancellation; then reconciles are cancelled
with `leader_lost` and given only `LEADER_LOST_GRACE` to unwind (as
controller-runtime skips its graceful shutdown on lease loss). Then, with
`on_lease_loss="exit"` (the default), `run()` returns `leader_lost`; with
"standby" the replica stays up without writing (informers, /metrics and the
health endpoints go on), says so (an Event on the Lease, `standing_by` to
observers), campaigns again and, once it wins, opens the fence and restarts
its controllers, which requeue every cached object.

Shards (`shards` set, with `leader_election` naming the Leases' prefix,
namespace and timings): every replica reconciles, each the shards it holds
(`_shards`): its namespaced informers list and watch only those, and its
write fence refuses writes to a namespace of any other shard. When a shard
goes (lost, or released to a replica that joined) the fence refuses it first,
then its reconciles in flight are cancelled with `leader_lost` and the
informers list again; a shard taken arrives as adds. Only namespaced
resources are sharded, by their namespace: a Wukong's children share it, so
they land in the same replica.

`run()` returns the reason it stopped. After `leader_lost` the process should
exit (as controller-runtime does): another replica now leads, and a process
that lost the lease cannot know what it missed.

Namespaces are tenants. Each controller's queue serves namespaces round-robin
(`ControllerOptions.fair_namespaces`), and every reconcile runs in its
namespace's scope (`_scopes`): when a namespace is deleted, the manager
cancels the reconciles in flight there, with reason `deleted`, and no others.
It learns of deletions from a watch on Namespaces: every Namespace, or with
`namespace` set only that one (`fieldSelector=metadata.name=<namespace>`,
which RBAC grants by `resourceNames`), so a namespaced manager never lists or
watches outside its namespace. That watch is an optimisation, not a need: an
identity that may not make it (`cancel_on_namespace_deletion=False`, or a 403)
leaves a deleted namespace's reconciles to end by their deadline, with one
WARNING, and the manager runs on.

Observers. `Manager(observers=[...])` registers `RuntimeObserver`s once; the
manager fans every event out to them: its clients' API calls (`self.client`
shares the caller's client's connections, its calls through the call layer,
`_calls`, which reports them), each controller's queue and
reconciles (whenever the controller is added), leader election and the
watchdog. The node agent's probe points (`probes.AuditProbes`) are always one
of them.
"""

import asyncio
import contextlib
import logging
import signal
import ssl
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from wukong.runtime._calls import layered
from wukong.runtime._cancellation import CancelReason
from wukong.runtime._client import Client, Object
from wukong.runtime._context import DEFAULT_RECONCILE_TIMEOUT, Request, outside_reconcile
from wukong.runtime._controller import Controller
from wukong.runtime._errors import ApiError, ApiTimeout
from wukong.runtime._events import EventRecorder
from wukong.runtime._fanout import ObserverFanout
from wukong.runtime._fence import WriteFence
from wukong.runtime._heap import STARTUP
from wukong.runtime._httpserver import HttpServer
from wukong.runtime._informer import EventHandler, Informer
from wukong.runtime._leader import LeaderElectionConfig, LeaderElector
from wukong.runtime._loopwatch import LoopBlockDetector
from wukong.runtime._observer import ControllerView, RuntimeObserver
from wukong.runtime._running import RunningController
from wukong.runtime._scopes import NamespaceScopes
from wukong.runtime._shards import ShardHolder, ShardLeaseCheck, ShardSpace, ShardSpans
from wukong.runtime._webhook import Validator, WebhookServer
from wukong.runtime.probes import AuditProbes
from wukong.runtime.resources import LEASES, NAMESPACES, Resource

log = logging.getLogger("wukong.runtime.manager")

# How long reconciles cancelled on lease loss may take to unwind before the
# manager moves on; they cannot write meanwhile (the fence is closed).
LEADER_LOST_GRACE = 1.0
#: Seconds between resyncs (controller-runtime's default SyncPeriod, ten hours): every
#: cached object is handed to the handlers again this often, so a missed event cannot
#: leave a status stale forever (`ManagerOptions.sync_period`).
DEFAULT_SYNC_PERIOD = 10 * 60 * 60.0


@dataclass(frozen=True)
class ManagerOptions:
    """How a `Manager` runs: controller-runtime's `manager.Options`, as one frozen value.

    `Manager(client=..., options=ManagerOptions(namespace="tenant-a"))`; every
    field has the default shown, so `ManagerOptions()` is a cluster-wide manager
    without leader election, health or webhook servers.
    """

    namespace: str | None = None
    """Watch and reconcile only this namespace (None, the default: the whole cluster)."""
    leader_election: LeaderElectionConfig | None = None
    """Reconcile only while holding this Lease (default None: no election, always lead)."""
    health_bind: str | None = None
    """host:port for `/healthz` and `/readyz` (default None: not served)."""
    shutdown_grace: float = 30.0
    """Seconds reconciles cancelled at shutdown may take to unwind (default 30)."""
    block_warning_seconds: float | None = 1.0
    """Report code that blocks the event loop this long (default 1 s; None: no watchdog)."""
    reconcile_timeout: float = DEFAULT_RECONCILE_TIMEOUT
    """A reconcile's deadline unless its controller sets one (default 15 s; positive)."""
    on_lease_loss: Literal["exit", "standby"] = "exit"
    """After losing the Lease: "exit" (the default) returns from `run()`; "standby"
    stays up without writing and campaigns again."""
    sync_period: float | None = DEFAULT_SYNC_PERIOD
    """Hand every cached object to the handlers again this often (default 10 h, as
    controller-runtime; None: never)."""
    webhook_bind: str | None = None
    """host:port for the admission webhooks of `add_webhook` (default None: not served)."""
    webhook_tls: ssl.SSLContext | None = None
    """TLS for the webhook server (default None: plain HTTP, for tests)."""
    freeze_startup_heap: bool = True
    """Once synced, freeze the start-up heap out of full GC collections (default True)."""
    watch_list: bool = True
    """Sync informers by a streaming list (default True; False: paged LISTs only)."""
    cancel_on_namespace_deletion: bool = True
    """Watch Namespaces and cancel a deleted one's reconciles (default True)."""
    shards: ShardSpace | None = None
    """Split the namespaces into these shards, each held through a Lease named after
    `leader_election`'s (`<name>-shard-<i>`): every replica reconciles its fair share
    (default None: one leader reconciles everything)."""

    def __post_init__(self) -> None:
        if self.reconcile_timeout <= 0:
            raise ValueError("reconcile_timeout must be positive")
        if self.shards is not None:
            if self.leader_election is None:
                raise ValueError("shards need leader_election: their Leases' name and timings")
            if self.shards.key != "namespace":
                raise ValueError("shards are keyed by namespace only, so children follow")


class Manager:
    """Runs controllers on shared informers, with leader election, health and observers."""

    def __init__(
        self,
        *,
        client: Client,
        options: ManagerOptions = ManagerOptions(),
        observers: Sequence[RuntimeObserver] = (),
    ) -> None:
        """A manager sending its calls over `client`'s connections (closing `client`
        stays the caller's job), configured by `options`, reporting to `observers`."""
        self.options = options
        # USDT probe points for the node agent: always on, because they cost
        # one memory read per event while no tracer is attached (see probes).
        spans = [ShardSpans(options.shards)] if options.shards is not None else []
        self._observer = ObserverFanout([AuditProbes(), *observers, *spans])
        self.client = layered(client, observer=self._observer)
        self.shards = (
            ShardHolder(
                client=self.client,
                space=options.shards,
                election=options.leader_election,
                on_change=self._shards_changed,
                observer=self._observer,
            )
            if options.shards is not None and options.leader_election is not None
            else None
        )
        self._fence = WriteFence(shards=self._shard_refusal if self.shards else None)
        # Reconciles write through the fence; informers and the elector do not.
        self._controller_client = layered(self.client, fence=self._fence)
        self.elector = (
            LeaderElector(
                client=self.client,
                config=options.leader_election,
                observer=self._observer,
                # Not while replicas of a sharded configuration work (see `_shards`).
                guard=ShardLeaseCheck(
                    client=self.client, election=options.leader_election, observer=self._observer
                ),
            )
            if options.leader_election and self.shards is None
            else None
        )
        self.block_detector = (
            LoopBlockDetector(threshold=options.block_warning_seconds, observer=self._observer)
            if options.block_warning_seconds
            else None
        )
        self._informers: dict[Resource, Informer] = {}
        self._controllers: list[RunningController] = []
        self._scopes = NamespaceScopes()
        # Not one of the shared informers: it may be refused without stopping the manager.
        self._namespace_informer: Informer | None = None
        self._stop = asyncio.Event()
        self._started = False  # controllers' workers run
        self._stopping = False
        self._informer_tasks: list[asyncio.Task[None]] | None = None  # set by run()
        self._keeping: asyncio.Task[None] | None = None  # renewing the Lease at shutdown
        self._events = EventRecorder(component="wukong-manager")
        self._health = HttpServer(routes={"/healthz": self._healthz, "/readyz": self._readyz})
        self.health_port: int | None = None
        self._validators: dict[str, Validator] = {}
        self._webhooks: WebhookServer | None = None
        self.webhook_port: int | None = None

    # -- building ---------------------------------------------------------------------

    def informer(self, resource: Resource) -> Informer:
        """The shared informer for `resource` (created on first use); add indexes here."""
        informer = self._informers.get(resource)
        if informer is None:
            namespace = self.options.namespace if resource.namespaced else None
            informer = Informer(
                client=self.client,
                resource=resource,
                namespace=namespace,
                resync_period=self.options.sync_period,
                watch_list=self.options.watch_list,
                observer=self._observer,
                shards=self.shards.filter if self.shards and resource.namespaced else None,
            )
            self._informers[resource] = informer
            if self._informer_tasks is not None:
                self._start_informer(resource, informer)  # for a controller added while running
        return informer

    def _start_informer(self, resource: Resource, informer: Informer) -> None:
        assert self._informer_tasks is not None
        self._informer_tasks.append(
            asyncio.create_task(
                informer.run(), name=f"informer {resource.plural}", context=outside_reconcile()
            )
        )

    def add(self, controller: Controller) -> ControllerView:
        """Run `controller` with this manager; before or after `run()` started."""
        if any(running.name == controller.name for running in self._controllers):
            raise ValueError(f"a controller named {controller.name!r} is already added")
        running = RunningController(
            controller,
            client=self._controller_client,
            observer=self._observer,
            reconcile_timeout=self.options.reconcile_timeout,
            scopes=self._scopes,
        )
        running.bind(informer_for=self.informer)
        if controller.primary.namespaced:
            self._watch_namespaces()
        self._controllers.append(running)
        self._observer.controller_added(running)
        if self._started:
            running.start()
        return running

    def _watch_namespaces(self) -> None:
        """Cancel a namespace's reconciles in flight (reason `deleted`) once it is deleted."""
        if self._namespace_informer is not None or not self.options.cancel_on_namespace_deletion:
            return

        def on_update(old: Object, new: Object) -> None:
            if new["metadata"].get("deletionTimestamp") and not old["metadata"].get(
                "deletionTimestamp"
            ):
                self._namespace_deleted(new)

        namespace = self.options.namespace
        informer = Informer(
            client=self.client,
            resource=NAMESPACES,
            field_selector=f"metadata.name={namespace}" if namespace else None,
            watch_list=self.options.watch_list,
            observer=self._observer,
        )
        informer.add_handler(EventHandler(on_update=on_update, on_delete=self._namespace_deleted))
        self._namespace_informer = informer
        if self._informer_tasks is not None:
            self._start_namespace_informer(informer)

    def _start_namespace_informer(self, informer: Informer) -> None:
        assert self._informer_tasks is not None
        self._informer_tasks.append(
            asyncio.create_task(
                self._run_namespace_informer(informer),
                name="informer namespaces",
                context=outside_reconcile(),
            )
        )

    async def _run_namespace_informer(self, informer: Informer) -> None:
        try:
            await informer.run()
        except ApiError as exc:  # 403 above all: the identity may not watch Namespaces
            namespace = self.options.namespace
            which = f"namespace {namespace}" if namespace else "namespaces"
            log.warning(
                "cannot watch %s (%s): a deleted namespace's reconciles run on until their "
                "deadline",
                which,
                exc.message,
            )

    def _namespace_deleted(self, namespace: Object) -> None:
        name = namespace["metadata"]["name"]
        cancelled = self._scopes.cancel(name, CancelReason.DELETED)
        log.debug("namespace %s deleted: %d reconciles in flight cancelled", name, cancelled)

    def add_webhook(self, path: str, validator: Validator) -> None:
        """Serve `validator` as a validating admission webhook at `path` (on `webhook_bind`).

        Every replica serves webhooks, leader or not; they start before the
        caches are synced, so validators must cope with a cold cache.
        """
        if self._webhooks is not None:
            raise RuntimeError("webhooks are registered before run()")
        if path in self._validators:
            raise ValueError(f"a webhook is already registered at {path!r}")
        self._validators[path] = validator

    @property
    def controllers(self) -> list[ControllerView]:
        return list(self._controllers)

    def enqueue(self, controller: str, request: Request, *, source: str = "code") -> None:
        """Reconcile `request` with the controller named `controller` because code asks
        (a webhook, a command): its trigger is `manual`, by `source`."""
        running = next((c for c in self._controllers if c.name == controller), None)
        if running is None:
            raise KeyError(f"no controller named {controller!r}")
        running.enqueue(request, source=source)

    @property
    def observer_failures(self) -> int:
        """How many times an observer raised (each is contained; see `observer`)."""
        return self._observer.failures

    # -- running ----------------------------------------------------------------------

    def stop(self) -> None:
        """Ask `run()` to shut down gracefully (safe to call more than once)."""
        self._stop.set()

    def handle_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("received %s; shutting down", sig.name)
        self.stop()

    @property
    def ready(self) -> bool:
        return (
            not self._stopping
            and bool(self._informers)
            and all(i.synced.is_set() for i in self._informers.values())
        )

    async def run(self) -> CancelReason:
        if self.options.health_bind:
            self.health_port = await self._health.start(self.options.health_bind)
        if self.options.webhook_bind and self._validators:
            self._webhooks = WebhookServer(
                client=self.client, validators=self._validators, observer=self._observer
            )
            try:
                self.webhook_port = await self._webhooks.start(
                    self.options.webhook_bind, ssl_context=self.options.webhook_tls
                )
            except BaseException:
                self._webhooks = None
                await self._health.stop()
                raise
        if self.block_detector is not None:
            self.block_detector.start()
        informer_tasks: list[asyncio.Task[None]] = []
        self._informer_tasks = informer_tasks
        for resource, informer in self._informers.items():
            self._start_informer(resource, informer)
        if self._namespace_informer is not None:
            self._start_namespace_informer(self._namespace_informer)
        reason = CancelReason.SHUTDOWN
        try:
            if not await self._until_stopped(self._wait_synced(informer_tasks)):
                return reason
            if self.options.freeze_startup_heap:
                STARTUP.freeze_once()
            while True:
                reason = await self._lead()
                if reason is not CancelReason.LEADER_LOST or self.options.on_lease_loss == "exit":
                    return reason
                await self._announce_standby()
        finally:
            self._stopping = True
            await self._shutdown(reason, informer_tasks)

    async def _lead(self) -> CancelReason:
        """Win the Lease (if electing), run the controllers until stopped or the Lease is lost."""
        lost: asyncio.Task[None] | None = None
        if self.shards is not None:
            # Every replica works; the holder takes and hands over shards meanwhile.
            lost = asyncio.create_task(self.shards.run(), name="shards")
        elif self.elector is not None:
            if not await self._until_stopped(self.elector.acquire()):
                return CancelReason.SHUTDOWN
            self._fence.open()
            lost = asyncio.create_task(self.elector.keep(), name="leader election")
        self._started = True
        for controller in self._controllers:
            controller.start()
        stop_wait = asyncio.create_task(self._stop.wait())
        waiters: set[asyncio.Future[object]] = {stop_wait}  # type: ignore[arg-type]
        if lost is not None:
            waiters.add(lost)  # type: ignore[arg-type]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        if self.shards is not None:
            self._keeping = lost
            if lost is not None and lost.done():
                lost.result()  # the holder failed: a bug, not a handoff
            return CancelReason.SHUTDOWN
        if lost is not None and lost.done() and not self._stop.is_set():
            assert self.elector is not None
            self._fence.close(self.elector.config.name)  # before anything else
            self._started = False
            await self._stop_controllers(CancelReason.LEADER_LOST)
            return CancelReason.LEADER_LOST
        self._keeping = lost  # still leading: _shutdown stops renewing, then releases
        return CancelReason.SHUTDOWN

    def _shard_refusal(self, namespace: str | None) -> str | None:
        """The fence's check: the Lease of `namespace`'s shard unless this replica holds it."""
        assert self.shards is not None
        if namespace is None:
            return None  # cluster-scoped: not sharded
        shard = self.shards.filter.shard_of_key(namespace)
        return None if shard in self.shards.held else self.shards.lease_name(shard)

    async def _shards_changed(
        self, gained: frozenset[int], lost: frozenset[int], reason: str
    ) -> None:
        """Told after the holder changed what it holds (the fence already refuses `lost`)."""
        assert self.shards is not None
        shards = self.shards.filter
        cancelled = 0
        for namespace in self._scopes.namespaces():
            if shards.shard_of_key(namespace) in lost:
                cancelled += self._scopes.cancel(namespace, CancelReason.LEADER_LOST)
        if cancelled:
            log.info("shards %s moved: %d reconciles in flight cancelled", sorted(lost), cancelled)
        for informer in self._informers.values():
            informer.reshard()
        self._observer.shards_changed(self.shards.held, len(gained) + len(lost), reason)

    async def _announce_standby(self) -> None:
        """Say, as an Event on the Lease and to observers, that this replica stands by."""
        assert self.elector is not None
        lease_name = self.elector.config.name
        log.warning(
            "lost lease %s: standing by (no writes; cache, metrics and health still served), "
            "campaigning again",
            lease_name,
        )
        self._observer.standing_by(lease_name)
        try:
            lease = await self.client.get(
                LEASES, lease_name, namespace=self.elector.config.namespace, timeout=5
            )
        except (ApiError, ApiTimeout) as exc:
            log.debug("no event for the standby: cannot read lease %s: %s", lease_name, exc)
            return
        await self._events.record(
            self.client,
            lease,
            type="Normal",
            reason="StandingBy",
            message=f"{self.elector.identity} lost the lease; it stands by and campaigns again",
        )

    async def _until_stopped(self, coroutine: Coroutine[Any, Any, None]) -> bool:
        """Run `coroutine` unless stop() comes first; True if it completed."""
        work = asyncio.ensure_future(coroutine)
        stop_wait = asyncio.create_task(self._stop.wait())
        await asyncio.wait({work, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        if work.done():
            work.result()  # re-raise its failure
            return True
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
        return False

    async def _wait_synced(self, informer_tasks: list["asyncio.Task[None]"]) -> None:
        synced = [asyncio.create_task(i.synced.wait()) for i in self._informers.values()]
        try:
            # An informer that fails for good (e.g. 403) must not leave us waiting.
            pending = set(synced) | set(informer_tasks)
            while not all(s.done() for s in synced):
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task in informer_tasks:
                        task.result()  # raises the informer's error
        finally:
            for task in synced:
                task.cancel()

    async def _stop_controllers(self, reason: CancelReason) -> None:
        log.info("stopping controllers (reason: %s)", reason)
        grace = (
            LEADER_LOST_GRACE if reason is CancelReason.LEADER_LOST else self.options.shutdown_grace
        )
        await asyncio.gather(*(c.stop(reason=reason, grace=grace) for c in self._controllers))

    async def _shutdown(
        self, reason: CancelReason, informer_tasks: list["asyncio.Task[None]"]
    ) -> None:
        if reason is not CancelReason.LEADER_LOST:  # after a loss they are stopped already
            await self._stop_controllers(reason)
        keeping, self._keeping = self._keeping, None
        if keeping is not None:
            keeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeping
            if self.shards is not None:
                await self.shards.release()
            else:
                assert self.elector is not None
                await self.elector.release()
        for task in informer_tasks:
            task.cancel()
        await asyncio.gather(*informer_tasks, return_exceptions=True)
        await self._health.stop()
        if self._webhooks is not None:
            await self._webhooks.stop()
        if self.block_detector is not None:
            self.block_detector.stop()

    # -- health -------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self.ready:
            return web.Response(text="ok")
        return web.Response(
            status=503, text="informers not synced" if not self._stopping else "shutting down"
        )
