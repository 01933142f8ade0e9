"""The `/metrics` endpoint: one registry, served by the runtime's `HttpServer`.

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

from wukong.runtime.httpserver import HttpServer


class MetricsServer(HttpServer):
    """Serves `registry` at `/metrics`. `await start(bind)`, then `await stop()`."""

    def __init__(self, *, registry: CollectorRegistry) -> None:
        self._registry = registry
        super().__init__(routes={"/metrics": self._metrics})

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(self._registry)
        # content_type carries its own charset/version parameters: set the header raw.
        return web.Response(body=body, headers={"Content-Type": content_type})
