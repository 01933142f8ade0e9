"""One small HTTP server component for every endpoint a manager serves.

Health (`/healthz`, `/readyz`), metrics (`/metrics`) and admission webhooks
each listen on their own address, as in controller-runtime (`--health-bind`,
`--metrics-bind`, `--webhook-bind`), but all are this one component: routes
of GET (and POST) handlers on aiohttp, started on a "host:port" bind (port 0
picks a free port, which is returned), over TLS when given an SSL context
(webhooks: the API server only calls HTTPS), stopped once.
Handlers run on the event loop, so they may read the runtime's state (queues,
informers) without locks.
"""

import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server log, where a request the client framed wrong (bad chunk size,
    bad header) is the client's mistake, answered 400 and logged at DEBUG: anyone who
    reaches the port can send one. A handler's own exception stays an ERROR."""

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self.debug(msg, *args, exc_info=exc_info, **kwargs)
        else:
            self.error(msg, *args, exc_info=exc_info, **kwargs)


_SERVER_LOG = _ServerLog(logging.getLogger("wukong.runtime.http"), {})


class HttpServer:
    """Serves `routes` (path -> GET handler) and `post_routes` (path -> POST handler).

    `await start(bind)`, then `await stop()`.
    """

    def __init__(
        self,
        *,
        routes: Mapping[str, Handler],
        post_routes: Mapping[str, Handler] | None = None,
        client_max_size: int = 1024**2,
    ) -> None:
        self._routes = dict(routes)
        self._post_routes = dict(post_routes or {})
        # The largest body a handler may read (aiohttp's default: 1 MiB); more is 413.
        self._client_max_size = client_max_size
        self._runner: web.AppRunner | None = None

    async def start(self, bind: str, *, ssl_context: ssl.SSLContext | None = None) -> int:
        """Listen on `bind` ("host:port"; an empty host means every address), over TLS with
        `ssl_context`; return the port."""
        if self._runner is not None:
            raise RuntimeError("HTTP server already started")
        host, _, port = bind.rpartition(":")
        app = web.Application(client_max_size=self._client_max_size)
        for path, handler in self._routes.items():
            app.router.add_get(path, handler)
        for path, handler in self._post_routes.items():
            app.router.add_post(path, handler)
        runner = web.AppRunner(app, access_log=None, logger=_SERVER_LOG)
        await runner.setup()
        site = web.TCPSite(runner, host or "0.0.0.0", int(port), ssl_context=ssl_context)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        # The first listening socket's port: the one asked for, or the free one chosen.
        for address in runner.addresses:
            if isinstance(address, tuple):
                return int(address[1])
        return int(port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
