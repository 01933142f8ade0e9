"""The `/metrics` endpoint: one registry, served by the runtime's `HttpServer`.

Secure serving (`SecureServing`, `--metrics-secure`, the chart's default) is
what kubebuilder scaffolds do: HTTPS, and only callers the API server
authenticates and authorizes for `get` on `/metrics` are answered (see
`wukong.runtime.serving.DelegatedAuth`: one TokenReview for concurrent requests
with the same token, reviews of unknown tokens rate-limited, generic bodies),
counted in `wukong_metrics_auth_requests_total{code,via}`. The certificate
comes from `cert_dir` (tls.crt, tls.key), else controller-runtime's default
directory if it holds one, and is reloaded when those files change (a
cert-manager rotation needs no restart); else a self-signed one made at start.
Plain serving answers anyone who reaches the port over HTTP: for a loopback
address on a developer's machine.

Content negotiation follows Prometheus: a scraper that sends
`Accept: application/openmetrics-text` gets OpenMetrics, the only format that
carries exemplars (the trace ids on histogram buckets); everyone else
(curl, promtool, older scrapers) gets the classic text format.

The registry is collected on the event loop, not in a thread: the scrape-time
collectors read the work queues' state, which only the loop may touch. A
scrape is a few hundred lines of formatting, well below a millisecond's worth
of blocking per controller.
"""

import logging
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from wukong.metrics.definitions import metrics_auth_requests
from wukong.runtime import Client
from wukong.runtime.serving import (
    DelegatedAuth,
    Handler,
    HttpServer,
    certificate_dir,
    load_serving_certificate,
    self_signed_context,
)

log = logging.getLogger(__name__)

PATH = "/metrics"
# controller-runtime's default metrics CertDir.
DEFAULT_CERT_DIR = Path(tempfile.gettempdir()) / "k8s-metrics-server" / "serving-certs"


@dataclass(frozen=True, kw_only=True)
class SecureServing:
    """HTTPS, answering only callers `client`'s API server lets `get` /metrics."""

    client: Client  # makes the TokenReviews and SubjectAccessReviews
    cert_dir: Path | None = None  # tls.crt and tls.key; None: see the module's docstring


class MetricsServer:
    """Serves `registry` at `/metrics`. `await start(bind)`, then `await stop()`."""

    def __init__(self, *, registry: CollectorRegistry, secure: SecureServing | None = None) -> None:
        self._registry = registry
        self._secure = secure
        handler: Handler = self._metrics
        if secure is not None:
            requests = metrics_auth_requests(registry)
            auth = DelegatedAuth(
                client=secure.client,
                on_request=lambda code, via: requests.labels(str(code), via).inc(),
            )
            handler = auth.protect(handler)
        self._server = HttpServer(routes={PATH: handler})

    @property
    def scheme(self) -> str:
        return "https" if self._secure is not None else "http"

    async def start(self, bind: str) -> int:
        """Listen on `bind` ("host:port"); return the port. `CertificateError` when the
        certificate directory cannot be loaded."""
        context = None if self._secure is None else _serving_context(self._secure.cert_dir)
        return await self._server.start(bind, ssl_context=context)

    async def stop(self) -> None:
        await self._server.stop()

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(self._registry)
        # content_type carries its own charset/version parameters: set the header raw.
        return web.Response(body=body, headers={"Content-Type": content_type})


def _serving_context(cert_dir: Path | None) -> ssl.SSLContext:
    found = certificate_dir(cert_dir, default=DEFAULT_CERT_DIR)
    if found is None:
        log.info("serving metrics with a self-signed certificate")
        return self_signed_context("wukong-metrics")
    return load_serving_certificate(found)
