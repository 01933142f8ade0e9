"""The manager: shared informers, controllers, leader election, health, shutdown.

Lifecycle of `run()`:

1. Serve `/healthz` and `/readyz` (if `health_bind` is set); start the
   watchdog that reports blocking code (see `loopwatch`).
2. Start one shared informer per watched resource and wait until all have
   listed once (`/readyz` turns ok).
3. With leader election: wait to acquire the Lease. Only the leader reconciles
   (informers run either way, so a new leader starts with a warm cache).
4. Start every controller's workers; run until `stop()` (SIGTERM/SIGINT when
   `handle_signals()` was called) or until leadership is lost.
5. Stop: every controller stops taking work and cancels its reconciles in
   flight with reason `shutdown` (or `leader_lost`), waiting up to
   `shutdown_grace` seconds for them to unwind; then the Lease is released
   (not after a loss: it is no longer ours), informers and the health server stop.

`run()` returns the reason it stopped. After `leader_lost` the process should
exit (as controller-runtime does): another replica now leads, and a process
that lost the lease cannot know what it missed.
"""

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine, Sequence
from typing import Any

from aiohttp import web

from wukong.runtime.client import Client
from wukong.runtime.context import CancelReason
from wukong.runtime.controller import DEFAULT_RECONCILE_TIMEOUT, Controller
from wukong.runtime.informer import Informer
from wukong.runtime.leader import LeaderElectionConfig, LeaderElector
from wukong.runtime.lifecycle import LifecycleObserver
from wukong.runtime.loopwatch import LoopBlockDetector
from wukong.runtime.probes import AuditProbes
from wukong.runtime.resources import Resource
from wukong.runtime.workqueue import QueueObserver

log = logging.getLogger(__name__)

# controller-runtime's default SyncPeriod: every cached object is handed to the
# handlers again this often, so a missed event cannot leave a status stale forever.
DEFAULT_SYNC_PERIOD = 10 * 60 * 60.0


class Manager:
    def __init__(
        self,
        *,
        client: Client,
        namespace: str | None = None,
        leader_election: LeaderElectionConfig | None = None,
        health_bind: str | None = None,
        shutdown_grace: float = 30.0,
        block_warning_seconds: float | None = 1.0,
        reconcile_timeout: float = DEFAULT_RECONCILE_TIMEOUT,
        lifecycle_observers: Sequence[LifecycleObserver] = (),
        queue_observer: QueueObserver | None = None,
        sync_period: float | None = DEFAULT_SYNC_PERIOD,
    ) -> None:
        if reconcile_timeout <= 0:
            raise ValueError("reconcile_timeout must be positive")
        self.client = client
        self.namespace = namespace
        self.shutdown_grace = shutdown_grace
        self.elector = (
            LeaderElector(client=client, config=leader_election) if leader_election else None
        )
        self._health_bind = health_bind
        self.block_detector = (
            LoopBlockDetector(threshold=block_warning_seconds) if block_warning_seconds else None
        )
        self.reconcile_timeout = reconcile_timeout
        self.sync_period = sync_period
        # USDT probe points for the node agent: on by default because they cost
        # one memory read per event while no tracer is attached (see probes).
        self._lifecycle_observers: list[LifecycleObserver] = [AuditProbes(), *lifecycle_observers]
        self._queue_observer = queue_observer
        self._informers: dict[Resource, Informer] = {}
        self._controllers: list[Controller] = []
        self._stop = asyncio.Event()
        self._stopping = False
        self.health_port: int | None = None

    # -- building ---------------------------------------------------------------------

    def informer(self, resource: Resource) -> Informer:
        """The shared informer for `resource` (created on first use); add indexes here."""
        informer = self._informers.get(resource)
        if informer is None:
            namespace = self.namespace if resource.namespaced else None
            informer = Informer(
                client=self.client,
                resource=resource,
                namespace=namespace,
                resync_period=self.sync_period,
            )
            self._informers[resource] = informer
        return informer

    def add(self, controller: Controller) -> None:
        if controller.options.reconcile_timeout is None:
            controller.reconcile_timeout = self.reconcile_timeout
        if self._queue_observer is not None:
            controller.queue.observer = self._queue_observer
        controller.bind(informer_for=self.informer)
        for observer in self._lifecycle_observers:
            controller.lifecycle.subscribe(observer)
        self._controllers.append(controller)

    @property
    def controllers(self) -> list[Controller]:
        return list(self._controllers)

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
        runner = await self._start_health()
        if self.block_detector is not None:
            self.block_detector.start()
        informer_tasks = [
            asyncio.create_task(informer.run(), name=f"informer {resource.plural}")
            for resource, informer in self._informers.items()
        ]
        lost: asyncio.Task[None] | None = None
        reason = CancelReason.SHUTDOWN
        try:
            if not await self._until_stopped(self._wait_synced(informer_tasks)):
                return reason
            if self.elector is not None:
                if not await self._until_stopped(self.elector.acquire()):
                    return reason
                lost = asyncio.create_task(self.elector.keep(), name="leader election")
            for controller in self._controllers:
                controller.start(client=self.client)
            stop_wait = asyncio.create_task(self._stop.wait())
            waiters: set[asyncio.Future[object]] = {stop_wait}  # type: ignore[arg-type]
            if lost is not None:
                waiters.add(lost)  # type: ignore[arg-type]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            if lost is not None and lost.done() and not self._stop.is_set():
                reason = CancelReason.LEADER_LOST
            return reason
        finally:
            self._stopping = True
            await self._shutdown(reason, informer_tasks, lost, runner)

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

    async def _shutdown(
        self,
        reason: CancelReason,
        informer_tasks: list["asyncio.Task[None]"],
        lost: "asyncio.Task[None] | None",
        runner: web.AppRunner | None,
    ) -> None:
        log.info("stopping controllers (reason: %s)", reason)
        await asyncio.gather(
            *(c.stop(reason=reason, grace=self.shutdown_grace) for c in self._controllers)
        )
        if lost is not None:
            lost.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lost
        if self.elector is not None and reason is not CancelReason.LEADER_LOST:
            await self.elector.release()
        for task in informer_tasks:
            task.cancel()
        await asyncio.gather(*informer_tasks, return_exceptions=True)
        if runner is not None:
            await runner.cleanup()
        if self.block_detector is not None:
            self.block_detector.stop()

    # -- health -------------------------------------------------------------------------

    async def _start_health(self) -> web.AppRunner | None:
        if not self._health_bind:
            return None
        host, _, port = self._health_bind.rpartition(":")
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host or "0.0.0.0", int(port))
        await site.start()
        server = site._server
        if server is not None and server.sockets:  # type: ignore[attr-defined]
            self.health_port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return runner

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self.ready:
            return web.Response(text="ok")
        return web.Response(
            status=503, text="informers not synced" if not self._stopping else "shutting down"
        )
