"""The webhook server on bad input, over plain HTTP with no API server: malformed
reviews, validators that fail or run out of time, the body limit, the caller's timeout.
The Wukong validator's own checks are `test_wukong_admission_values`'s."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s_client

from tests.unit.wukong_reviews import review
from wukong.runtime import (
    Admission,
    AdmissionRequest,
    AdmitOnError,
    Client,
    RuntimeObserver,
)
from wukong.runtime._webhook import MAX_BODY_BYTES, Malformed, read_review, review_timeout
from wukong.runtime.observe import WebhookReview
from wukong.runtime.serving import WebhookServer


class ReviewObserver(RuntimeObserver):
    def __init__(self) -> None:
        self.reviews: list[WebhookReview] = []

    def admission_reviewed(self, review: WebhookReview) -> None:
        self.reviews.append(review)


class Raises:
    async def validate(self, request: AdmissionRequest) -> Admission:
        raise RuntimeError("the validator broke")


class Hangs:
    async def validate(self, request: AdmissionRequest) -> Admission:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


class Allows:
    async def validate(self, request: AdmissionRequest) -> Admission:
        return Admission.allow()


class Served:
    def __init__(self, session: aiohttp.ClientSession, port: int, recorder: ReviewObserver) -> None:
        self.session, self.port, self.recorder = session, port, recorder

    async def post(
        self, path: str, body: bytes | object, *, query: str = "", content_type: str = ""
    ) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": content_type or "application/json"}
        url = f"http://127.0.0.1:{self.port}{path}{query}"
        async with self.session.post(url, data=data, headers=headers) as response:
            text = await response.text()
            if response.content_type == "application/json":
                return response.status, json.loads(text)
            return response.status, text


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    recorder = ReviewObserver()
    async with Client(k8s_client.ApiClient(configuration=k8s_client.Configuration())) as api:
        server = WebhookServer(
            client=api,
            validators={
                "/raises": Raises(),
                "/hangs": Hangs(),
                "/allows": Allows(),
                "/raises-admitted": AdmitOnError(Raises()),
                "/hangs-admitted": AdmitOnError(Hangs()),
            },
            observer=recorder,
        )
        port = await server.start("127.0.0.1:0", ssl_context=None)
        try:
            async with aiohttp.ClientSession() as session:
                yield Served(session, port, recorder)
        finally:
            await server.stop()


MALFORMED: list[tuple[str, bytes | object, str]] = [
    ("not JSON", b"{not json", "the body is not JSON"),
    ("not UTF-8", b"\xff\xfe\xfa", "the body is not JSON"),
    ("nested past recursion", b"[" * 100_000, "the body is not JSON"),
    ("an array", [review()], "an AdmissionReview is a JSON object"),
    ("a string", "AdmissionReview", "an AdmissionReview is a JSON object"),
    ("no request", {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}, "request"),
    ("request null", {**review(), "request": None}, "request: must be an object"),
    ("request a string", {**review(), "request": "x"}, "request: must be an object"),
    ("another kind", {**review(), "kind": "Pod"}, "expected kind AdmissionReview"),
    ("v1beta1", {**review(), "apiVersion": "admission.k8s.io/v1beta1"}, "apiVersion"),
    ("no uid", review(uid=None), "request.uid"),
    ("uid a number", review(uid=7), "request.uid"),
    ("kind a string", review(kind="Wukong", object="x"), "request.kind"),
    ("kind of numbers", review(kind={"kind": 1}), "request.kind"),
    ("unknown operation", review(operation="PATCH"), "request.operation"),
    ("object a string", review(object="a Wukong"), "request.object: must be an object"),
    ("oldObject a list", review(oldObject=[]), "request.oldObject: must be an object"),
    ("namespace a list", review(namespace=["ns"]), "request.namespace: must be a string"),
    ("dryRun a string", review(dryRun="yes"), "request.dryRun: must be a boolean"),
    ("metadata a string", review(object={"metadata": "m"}), "request.object.metadata"),
]


@pytest.mark.parametrize(
    ("body", "message"), [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED]
)
async def test_a_malformed_review_is_a_400_counted_and_never_admitted(
    served: Served, body: bytes | object, message: str
) -> None:
    status, text = await served.post("/allows", body)
    assert status == 400
    assert isinstance(text, str) and text.startswith("not an AdmissionReview: ")
    assert message in text
    (reported,) = served.recorder.reviews
    assert (reported.code, reported.allowed, reported.reason) == (400, None, "Malformed")
    assert message in reported.message


async def test_a_body_that_is_not_json_by_its_content_type_is_a_400(served: Served) -> None:
    status, text = await served.post("/allows", review(), content_type="text/plain")
    assert status == 400 and "expected application/json" in text


async def test_read_review_returns_the_review_and_its_request() -> None:
    body = review(object={"metadata": {"name": "a"}})
    assert read_review(json.dumps(body).encode()) == (body, body["request"])
    with pytest.raises(Malformed, match=r"request\.uid"):
        read_review(json.dumps(review(uid="")).encode())


async def test_a_validator_that_raises_answers_errored_for_the_failure_policy(
    served: Served,
) -> None:
    status, answer = await served.post("/raises", review(object={"metadata": {"name": "a"}}))
    assert status == 200
    response = answer["response"]
    assert (response["uid"], response["allowed"]) == ("u-1", False)
    assert response["status"]["code"] == 500
    assert "the validator broke" in response["status"]["message"]
    (reported,) = served.recorder.reviews
    assert (reported.code, reported.allowed, reported.reason) == (200, False, "Errored")


async def test_a_validator_out_of_time_answers_errored_before_the_caller_gives_up(
    served: Served,
) -> None:
    status, answer = await served.post("/hangs", review(), query="?timeout=1s")
    assert status == 200
    response = answer["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 500
    assert "not decided within the review's 1s deadline" in response["status"]["message"]
    (reported,) = served.recorder.reviews
    assert reported.reason == "Errored"
    assert reported.duration < 1.0


@pytest.mark.parametrize("path", ["/raises-admitted", "/hangs-admitted"])
async def test_admitting_on_error_is_an_opt_in_that_warns(served: Served, path: str) -> None:
    status, answer = await served.post(path, review(), query="?timeout=1s")
    assert status == 200
    response = answer["response"]
    assert response["allowed"] is True
    (warning,) = response["warnings"]
    assert warning.startswith("not verified: ")
    assert served.recorder.reviews[0].reason == "Unverified"


async def test_a_body_over_the_limit_is_a_413_and_one_under_it_is_reviewed(
    served: Served,
) -> None:
    padding = "x" * (MAX_BODY_BYTES - 1024)
    status, answer = await served.post("/allows", review(object={"metadata": {"p": padding}}))
    assert status == 200 and answer["response"]["allowed"] is True
    status, text = await served.post(
        "/allows", b" " * MAX_BODY_BYTES + json.dumps(review()).encode()
    )
    assert status == 413
    assert text == f"the body is larger than {MAX_BODY_BYTES} bytes"
    assert [(r.code, r.reason) for r in served.recorder.reviews] == [
        (200, "Allowed"),
        (413, "Malformed"),
    ]


@pytest.mark.parametrize(
    ("timeout", "seconds"),
    [
        (None, 10.0),
        ("5s", 5.0),
        ("30s", 30.0),
        ("31s", 30.0),
        ("1h", 30.0),
        ("9" * 400 + "h", 30.0),
        ("0s", 10.0),
        ("-1s", 10.0),
        ("soon", 10.0),
        ("", 10.0),
    ],
)
def test_the_callers_timeout_is_capped_and_a_bad_one_is_the_default(
    timeout: str | None, seconds: float
) -> None:
    assert review_timeout({} if timeout is None else {"timeout": timeout}) == seconds


async def test_the_capped_timeout_is_the_one_reported(served: Served) -> None:
    await served.post("/allows", review(), query="?timeout=10m")
    assert served.recorder.reviews[0].timeout == 30.0


async def test_a_caller_that_goes_away_mid_body_is_counted_as_malformed(served: Served) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(
        b"POST /allows HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"apiVersion":'
    )
    await writer.drain()
    writer.close()
    for _ in range(100):
        if served.recorder.reviews:
            break
        await asyncio.sleep(0.02)
    (reported,) = served.recorder.reviews
    assert (reported.code, reported.reason) == (400, "Malformed")
    assert reported.message.startswith("the body could not be read")
