"""A secure /metrics under a flood of made-up tokens, against the real API server.

The operator's metrics server runs as the chart's operator ServiceAccount (the
`accounts` fixture of test_metrics_auth); its client reports every API call
to a recorder, so the TokenReviews actually made are counted at the call
layer. 1,000 made-up tokens arrive in concurrent batches while the chart's
reader keeps scraping: the reader gets 200 every time, the API server sees at
most the review bucket's budget for the flood's duration, and no answer
carries a token or the API server's words.
"""

import asyncio
import secrets
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import generate_latest

from tests.exposition import metric_samples
from tests.integration.helpers import RecordingObserver, scrape
from tests.integration.test_metrics_auth import Accounts, accounts  # noqa: F401 - fixture
from wukong.metrics import MetricsServer, RuntimeMetrics
from wukong.metrics.server import SecureServing
from wukong.runtime import Client, _delegatedauth
from wukong.runtime._calls import layered
from wukong.runtime._delegatedauth import BODIES, REVIEW_BURST, REVIEW_QPS
from wukong.runtime.serving import DelegatedAuth, HttpServer, self_signed_context

FLOOD = 1000
BATCH = 100
GENERIC = {401: BODIES[401], 429: BODIES[429]}


@pytest.fixture
def short_allow_ttl(monkeypatch: pytest.MonkeyPatch) -> Iterator[float]:
    # The reader's allowed answer expires during the flood: its re-review must
    # still go through while made-up tokens are held back.
    monkeypatch.setattr(_delegatedauth, "ALLOW_TTL", 1.0)
    yield 1.0


def _token_reviews(calls: RecordingObserver) -> int:
    return sum(call.resource == "tokenreviews" for call in calls.calls)


def _made_up_token() -> str:
    # Shaped like a ServiceAccount JWT, so the API server has to parse it.
    return ".".join(secrets.token_urlsafe(n) for n in (24, 180, 256))


async def test_a_flood_of_made_up_tokens_is_bounded_and_the_reader_keeps_its_200(
    accounts: Accounts,  # noqa: F811 - the fixture
    short_allow_ttl: float,
) -> None:
    metrics = RuntimeMetrics()
    calls = RecordingObserver()
    async with await Client.from_kubeconfig(accounts.operator) as as_operator:
        server = MetricsServer(
            registry=metrics.metrics.registry,
            secure=SecureServing(client=layered(as_operator, observer=calls)),
        )
        port = await server.start("127.0.0.1:0")
        url = f"https://127.0.0.1:{port}/metrics"
        connector = aiohttp.TCPConnector(ssl=False, limit=BATCH)
        try:
            async with aiohttp.ClientSession(connector=connector) as session:

                async def get(token: str) -> tuple[int, str]:
                    headers = {"Authorization": f"Bearer {token}"}
                    async with session.get(url, headers=headers) as response:
                        return response.status, await response.text()

                assert (await get(accounts.reader))[0] == 200
                assert _token_reviews(calls) == 1

                # Single-flight: 50 concurrent requests with one unknown token, one review.
                # (Connections opened first, so that the 50 arrive together.)
                await asyncio.gather(*(_unauthenticated(session, url) for _ in range(50)))
                same = _made_up_token()
                answers = await asyncio.gather(*(get(same) for _ in range(50)))
                assert answers == [(401, BODIES[401])] * 50
                assert _token_reviews(calls) == 2

                reader_statuses: list[int] = []
                flooding = asyncio.Event()

                async def reader() -> None:
                    while not flooding.is_set():
                        reader_statuses.append((await get(accounts.reader))[0])
                        await asyncio.sleep(0.05)

                loop = asyncio.get_running_loop()
                before, started = _token_reviews(calls), loop.time()
                scraping = asyncio.create_task(reader())
                tokens = [_made_up_token() for _ in range(FLOOD)]
                flood: list[tuple[int, str]] = []
                for start in range(0, FLOOD, BATCH):
                    batch = tokens[start : start + BATCH]
                    flood += await asyncio.gather(*(get(token) for token in batch))
                # Keep flooding past the reader's allowed TTL: its re-review must get through.
                while loop.time() - started < 2.5 * short_allow_ttl:
                    flood += await asyncio.gather(*(get(_made_up_token()) for _ in range(20)))
                flooding.set()
                await scraping
                elapsed = loop.time() - started
                reviews = _token_reviews(calls) - before
        finally:
            await server.stop()

    assert len(reader_statuses) >= 10
    assert set(reader_statuses) == {200}, reader_statuses
    # Made-up tokens: 401 when reviewed, 429 when the bucket was empty; bodies generic.
    assert {status for status, _ in flood} == {401, 429}
    assert all(GENERIC[status] == body for status, body in flood)
    # The API server saw at most the bucket's budget, plus the reader's re-reviews.
    reader_reviews = elapsed / short_allow_ttl + 1
    budget = REVIEW_BURST + REVIEW_QPS * elapsed + reader_reviews
    assert reviews <= budget, (reviews, budget, elapsed)
    assert reviews >= REVIEW_BURST  # the flood was reviewed until the bucket ran dry
    assert len(flood) > FLOOD

    # What happened, counted on the served registry.
    counted: dict[tuple[str, str], float] = {}
    text = generate_latest(metrics.metrics.registry).decode()
    for labels, value in metric_samples(text, "wukong_metrics_auth_requests_total"):
        counted[labels["code"], labels["via"]] = value
    # The one review answered the requests that came while it ran; the rest got its answer
    # from the cache.
    assert counted[("401", "shared")] >= 1, counted
    assert counted[("401", "shared")] + counted.get(("401", "cache"), 0) == 49, counted
    assert counted[("429", "none")] == sum(status == 429 for status, _ in flood)
    assert counted[("200", "review")] >= 2  # the reader re-reviewed during the flood


async def test_made_up_tokens_cannot_evict_the_readers_allowed_answer(
    accounts: Accounts,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Three times more refusals than the refusal cache holds, all of them reviewed
    # (a bucket big enough): the reader's answer stays cached, it costs no review.
    monkeypatch.setattr(_delegatedauth, "MAX_REFUSED", 50)
    calls = RecordingObserver()

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async with await Client.from_kubeconfig(accounts.operator) as as_operator:
        auth = DelegatedAuth(client=layered(as_operator, observer=calls), review_burst=1000)
        server = HttpServer(routes={"/metrics": auth.protect(metrics)})
        port = await server.start("127.0.0.1:0", ssl_context=self_signed_context("test"))
        url = f"https://127.0.0.1:{port}/metrics"
        try:
            assert await scrape(url, accounts.reader) == (200, "ok")
            connector = aiohttp.TCPConnector(ssl=False, limit=BATCH)
            async with aiohttp.ClientSession(connector=connector) as session:
                tokens = [_made_up_token() for _ in range(150)]
                statuses = await asyncio.gather(*(_status(session, url, t) for t in tokens))
            assert set(statuses) == {401}
            reviews = _token_reviews(calls)
            assert reviews == 1 + 150
            assert await scrape(url, accounts.reader) == (200, "ok")
            assert _token_reviews(calls) == reviews  # answered from the cache
        finally:
            await server.stop()


async def _status(session: aiohttp.ClientSession, url: str, token: str) -> int:
    async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status


async def _unauthenticated(session: aiohttp.ClientSession, url: str) -> None:
    async with session.get(url) as response:
        assert response.status == 401
        await response.read()
