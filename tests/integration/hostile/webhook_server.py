"""The Wukong webhook served in a thread of its own, for requests sent straight to it.

The manager (its caches on the test cluster's real API server, the webhook on
a free port with the cluster's webhook certificate) runs on its own event loop
in a thread, so that synchronous code, hypothesis's examples among them, can
call it over HTTPS as the API server would, or as anybody else on the network
could. Its metrics, spans and reviews are kept for assertions.
"""

import asyncio
import http.client
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.integration.helpers import running
from wukong.devcluster import ControlPlane
from wukong.devcluster.apis import install_dev_apis
from wukong.metrics import RuntimeMetrics
from wukong.operator.admission import WEBHOOK_PATH, add_wukong_webhook
from wukong.runtime import Client, Manager, ManagerOptions, RuntimeObserver
from wukong.runtime.observe import WebhookReview
from wukong.runtime.serving import load_serving_certificate
from wukong.tracing.spans import ReconcileTracer


class _Reviews(RuntimeObserver):
    name = "webhook reviews"

    def __init__(self) -> None:
        self.reviews: list[WebhookReview] = []

    def admission_reviewed(self, review: WebhookReview) -> None:
        self.reviews.append(review)


@dataclass
class ServedWebhook:
    port: int
    trust: ssl.SSLContext
    metrics: RuntimeMetrics = field(default_factory=RuntimeMetrics)
    spans: InMemorySpanExporter = field(default_factory=InMemorySpanExporter)
    recorder: _Reviews = field(default_factory=_Reviews)
    thread: threading.Thread | None = None

    @property
    def reviews(self) -> list[WebhookReview]:
        return self.recorder.reviews

    def post(
        self,
        body: bytes | Any,
        *,
        query: str = "",
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> tuple[int, Any]:
        """POST `body` (bytes as they are, anything else as JSON) to the webhook; the status
        and the answer (decoded JSON, else text)."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        connection = http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=self.trust, timeout=timeout
        )
        try:
            connection.request(
                "POST", WEBHOOK_PATH + query, body=data, headers={"Content-Type": content_type}
            )
            response = connection.getresponse()
            raw = response.read()
            if response.getheader("Content-Type", "").startswith("application/json"):
                return response.status, json.loads(raw)
            return response.status, raw.decode()
        finally:
            connection.close()

    def sample(self, name: str, labels: dict[str, str]) -> float:
        """A metric's value (0 when it has none yet)."""
        value = self.metrics.metrics.registry.get_sample_value(
            name, {"webhook": WEBHOOK_PATH, **labels}
        )
        return value or 0.0


async def _tick() -> None:
    await asyncio.sleep(0.02)


@contextmanager
def webhook_in_thread(control_plane: ControlPlane) -> Iterator[ServedWebhook]:
    """The Wukong webhook, served until the block ends (its thread then stopped)."""
    trust = ssl.create_default_context(cafile=str(control_plane.ca_cert))
    served = ServedWebhook(port=0, trust=trust)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(served.spans))
    observers = [served.recorder, served.metrics, ReconcileTracer(provider=provider)]
    started = threading.Event()
    failure: list[BaseException] = []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve() -> None:
        async with await Client.from_kubeconfig(control_plane.kubeconfig) as client:
            await install_dev_apis(client)
            manager = Manager(
                client=client,
                observers=observers,  # type: ignore[arg-type]
                options=ManagerOptions(
                    block_warning_seconds=None,
                    webhook_bind="127.0.0.1:0",
                    webhook_tls=load_serving_certificate(control_plane.webhook_cert_dir),
                ),
            )
            add_wukong_webhook(manager)
            async with running(manager):
                while manager.webhook_port is None or not manager.ready:
                    await _tick()
                served.port = manager.webhook_port
                started.set()
                await stop.wait()

    def main() -> None:
        try:
            loop.run_until_complete(serve())
        except BaseException as exc:  # surfaced by the test's thread
            failure.append(exc)
        finally:
            started.set()
            loop.close()

    served.thread = threading.Thread(target=main, name="webhook under test", daemon=True)
    served.thread.start()
    started.wait(timeout=60)
    if failure or not served.port:
        raise AssertionError(f"the webhook did not start: {failure}")
    try:
        yield served
    finally:
        loop.call_soon_threadsafe(stop.set)
        served.thread.join(timeout=30)
        provider.shutdown()
    if failure:
        raise failure[0]
