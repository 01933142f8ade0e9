"""The `/metrics` endpoint: one registry, served over HTTP by aiohttp.

Content negotiation follows Prometheus: a scraper that sends
`Accept: application/openmetrics-text` gets OpenMetrics, the only format that
carries exemplars (the trace ids on histogram buckets); everyone else
(curl, promtool, older scrapers) gets the classic text format.

The registry is collected on the event loop, not in a thread: the scrape-time
collectors read the work queues' state, which only the loop may touch. A
scrape is a few hundred lines of formatting, well below a millisecond's worth
of blocking per controller.
"""

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder


class MetricsServer:
    """Serves `registry` at `/metrics`. `await start(bind)`, then `await stop()`."""

    def __init__(self, *, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._runner: web.AppRunner | None = None

    async def start(self, bind: str) -> int:
        """Listen on `bind` ("host:port"; port 0 picks a free one); return the port."""
        if self._runner is not None:
            raise RuntimeError("metrics server already started")
        host, _, port = bind.rpartition(":")
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host or "0.0.0.0", int(port))
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

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(self._registry)
        # content_type carries its own charset/version parameters: set the header raw.
        return web.Response(body=body, headers={"Content-Type": content_type})
