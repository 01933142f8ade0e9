"""A TCP proxy that makes the API server slow on demand.

It sits between a client and kube-apiserver (TLS passes through untouched) and
holds every chunk the server sends for `delay` seconds, which can be changed
while connections are open. It is how tests and the cancel-storm drill create a
slow API server without touching the real one.

It also counts what a client did to it: connections opened, and connections the
*client* closed while a response was still being held back, which is what an
aborted in-flight API call looks like on the wire.
"""

import asyncio
import contextlib
import logging

log = logging.getLogger(__name__)


class LatencyProxy:
    def __init__(self, *, target_host: str, target_port: int, listen_host: str = "127.0.0.1"):
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self.delay = 0.0
        self.connections_opened = 0
        self.client_aborts = 0  # client hung up while a response was held back
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None, "proxy not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.listen_host, 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        self.connections_opened += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                self.target_host, self.target_port
            )
        except OSError as exc:
            log.debug("latency proxy: upstream unreachable: %s", exc)
            client_writer.close()
            return
        holding = asyncio.Event()  # set while a server chunk is being held back
        upstream = asyncio.create_task(
            self._pump(upstream_reader, client_writer, delay=True, holding=holding)
        )
        downstream = asyncio.create_task(
            self._pump(client_reader, upstream_writer, delay=False, holding=None)
        )
        for task in (upstream, downstream):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        done, _ = await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
        if downstream in done and holding.is_set():
            self.client_aborts += 1
        for task in (upstream, downstream):
            task.cancel()
        for writer in (client_writer, upstream_writer):
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        delay: bool,
        holding: asyncio.Event | None,
    ) -> None:
        try:
            while chunk := await reader.read(65536):
                if delay and self.delay > 0:
                    assert holding is not None
                    holding.set()
                    await asyncio.sleep(self.delay)
                    holding.clear()
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
