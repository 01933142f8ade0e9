"""A `MetricsServer` on its own event loop in a thread, for a program that is not asyncio.

The node agent's main loop is synchronous (it polls BPF perf buffers); its
/metrics is the operator's endpoint all the same, secure serving included,
run on an event loop of its own in a daemon thread. The registry is written
by the main thread and read by this one: prometheus_client's metrics lock.

    thread = MetricsThread(registry=registry, connect=Client.from_environment)
    port = thread.start(":9464")   # returns once it listens, or raises why not
    ...
    thread.stop()

With a `LoopHealth`, it also serves `/healthz` and `/readyz` on a bind of their
own, plain HTTP even when /metrics is secure: the kubelet's probes present no
token (as the operator's --health-probe-bind-address).
"""

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from wukong.metrics.server import MetricsServer, SecureServing
from wukong.runtime import Client
from wukong.runtime.serving import HttpServer


class LoopHealth:
    """How a synchronous main loop is doing, from its `beat()` each time round: ready
    once it went round once (its first pass done), alive while it goes round at least
    every `stall` seconds (counted from its start until the first beat)."""

    def __init__(self, *, stall: float) -> None:
        self._stall = stall
        self._last = time.monotonic()  # a float, written and read whole across threads
        self.ready = False

    def beat(self) -> None:
        self._last = time.monotonic()
        self.ready = True

    def stalled(self) -> float | None:
        """Seconds since the loop last went round, when that is more than `stall`."""
        since = time.monotonic() - self._last
        return since if since > self._stall else None

    async def healthz(self, request: web.Request) -> web.Response:
        since = self.stalled()
        if since is None:
            return web.Response(text="ok")
        return web.Response(status=500, text=f"main loop stalled for {since:.0f}s")

    async def readyz(self, request: web.Request) -> web.Response:
        if self.ready:
            return web.Response(text="ok")
        return web.Response(status=503, text="first scan not finished")


class MetricsThread:
    """Serves `registry`; with `connect` (makes the API client), securely (see `SecureServing`)."""

    def __init__(
        self,
        *,
        registry: CollectorRegistry,
        connect: Callable[[], Awaitable[Client]] | None = None,
        cert_dir: Path | None = None,
        health: LoopHealth | None = None,
    ) -> None:
        self._registry = registry
        self._connect = connect
        self._cert_dir = cert_dir
        self._health = health
        self.health_port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def scheme(self) -> str:
        return "https" if self._connect is not None else "http"

    def start(self, bind: str, *, health_bind: str | None = None) -> int:
        """Listen on `bind` (and the health endpoints on `health_bind`); the metrics port.
        Raises what kept a server from starting."""
        if self._thread is not None:
            raise RuntimeError("metrics thread already started")
        if health_bind is not None and self._health is None:
            raise ValueError("health_bind without a LoopHealth to answer from")
        started: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._serve(bind, health_bind, started)),
            name="metrics",
            daemon=True,  # never keeps the process alive
        )
        self._thread.start()
        return started.result()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        thread.join(timeout=10)

    async def _serve(
        self, bind: str, health_bind: str | None, started: "concurrent.futures.Future[int]"
    ) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        client: Client | None = None
        server: MetricsServer | None = None
        health: HttpServer | None = None
        try:
            if health_bind is not None and self._health is not None:
                health = HttpServer(
                    routes={"/healthz": self._health.healthz, "/readyz": self._health.readyz}
                )
                self.health_port = await health.start(health_bind)
            secure = None
            if self._connect is not None:
                client = await self._connect()
                secure = SecureServing(client=client, cert_dir=self._cert_dir)
            server = MetricsServer(registry=self._registry, secure=secure)
            port = await server.start(bind)
        except BaseException as exc:
            started.set_exception(exc)
            if health is not None:
                await health.stop()
            if client is not None:
                await client.close()
            return
        started.set_result(port)
        try:
            await self._stopping.wait()
        finally:
            await server.stop()
            if health is not None:
                await health.stop()
            if client is not None:
                await client.close()
