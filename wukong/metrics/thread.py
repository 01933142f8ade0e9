"""A `MetricsServer` on its own event loop in a thread, for a program that is not asyncio.

The node agent's main loop is synchronous (it polls BPF perf buffers); its
/metrics is the operator's endpoint all the same, secure serving included,
run on an event loop of its own in a daemon thread. The registry is written
by the main thread and read by this one: prometheus_client's metrics lock.

    thread = MetricsThread(registry=registry, connect=Client.from_environment)
    port = thread.start(":9464")   # returns once it listens, or raises why not
    ...
    thread.stop()
"""

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

from prometheus_client import CollectorRegistry

from wukong.metrics.server import MetricsServer, SecureServing
from wukong.runtime import Client


class MetricsThread:
    """Serves `registry`; with `connect` (makes the API client), securely (see `SecureServing`)."""

    def __init__(
        self,
        *,
        registry: CollectorRegistry,
        connect: Callable[[], Awaitable[Client]] | None = None,
        cert_dir: Path | None = None,
    ) -> None:
        self._registry = registry
        self._connect = connect
        self._cert_dir = cert_dir
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def scheme(self) -> str:
        return "https" if self._connect is not None else "http"

    def start(self, bind: str) -> int:
        """Listen on `bind`; the port. Raises what kept the server from starting."""
        if self._thread is not None:
            raise RuntimeError("metrics thread already started")
        started: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._serve(bind, started)),
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

    async def _serve(self, bind: str, started: "concurrent.futures.Future[int]") -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        client: Client | None = None
        server: MetricsServer | None = None
        try:
            secure = None
            if self._connect is not None:
                client = await self._connect()
                secure = SecureServing(client=client, cert_dir=self._cert_dir)
            server = MetricsServer(registry=self._registry, secure=secure)
            port = await server.start(bind)
        except BaseException as exc:
            started.set_exception(exc)
            if client is not None:
                await client.close()
            return
        started.set_result(port)
        try:
            await self._stopping.wait()
        finally:
            await server.stop()
            if client is not None:
                await client.close()
