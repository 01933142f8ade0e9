"""Bad input sent straight to the Wukong webhook over HTTPS, as anyone who can reach its
port could: every malformed review is a 400 with a short plain message, counted
in the webhook's metrics and spanned, and admits nothing; a body over the 7 MiB
limit is a 413; the caller's `?timeout=` counts up to 30 s."""

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.trace import StatusCode

from tests.integration.hostile.webhook_server import ServedWebhook, webhook_in_thread
from wukong.devcluster import ControlPlane
from wukong.runtime._webhook import MAX_BODY_BYTES


@pytest.fixture(scope="module")
def webhook(control_plane: ControlPlane) -> Iterator[ServedWebhook]:
    with webhook_in_thread(control_plane) as served:
        yield served


def review(**request: Any) -> dict[str, Any]:
    body = {
        "uid": "4b1f-uid",
        "kind": {"group": "vm.novasphere.dev", "version": "v1alpha1", "kind": "Wukong"},
        "resource": {"group": "vm.novasphere.dev", "version": "v1alpha1", "resource": "wukongs"},
        "operation": "CREATE",
        "namespace": "default",
        "name": "vm",
        "object": {
            "apiVersion": "vm.novasphere.dev/v1alpha1",
            "kind": "Wukong",
            "metadata": {"name": "vm", "namespace": "default", "uid": "vm-uid"},
            "spec": {"cpu": 1, "memory": "1Gi", "disks": [{"name": "root", "size": "1Gi"}]},
        },
        **request,
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": body}


MALFORMED: list[tuple[str, bytes | object]] = [
    ("object and kind strings", review(object="a Wukong", kind="Wukong")),
    ("not JSON", b"<AdmissionReview/>"),
    ("empty object", {}),
    ("request null", {**review(), "request": None}),
    ("no request", {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
    ("no uid", review(uid=None)),
    ("unknown kind", {**review(), "kind": "AdmissionRequest"}),
    ("unknown version", {**review(), "apiVersion": "admission.k8s.io/v2"}),
    ("unknown resource kind", review(kind={"group": "", "version": "v1", "kind": "Pod"})),
    ("a number", 42),
]


def test_malformed_reviews_are_400_counted_spanned_and_never_admitted(
    webhook: ServedWebhook,
) -> None:
    before = len(webhook.reviews)
    counted = webhook.sample("controller_runtime_webhook_requests_total", {"code": "400"})
    decided = webhook.sample(
        "wukong_webhook_decisions_total", {"allowed": "false", "reason": "Malformed"}
    )
    for case, body in MALFORMED:
        status, answer = webhook.post(body)
        assert status == 400, case
        assert isinstance(answer, str), case  # plain text, no AdmissionReview, no decision
        assert len(answer) < 200 and "\n" not in answer, case
    assert webhook.sample(
        "controller_runtime_webhook_requests_total", {"code": "400"}
    ) - counted == len(MALFORMED)
    assert webhook.sample(
        "wukong_webhook_decisions_total", {"allowed": "false", "reason": "Malformed"}
    ) - decided == len(MALFORMED)
    reported = webhook.reviews[before:]
    assert [(r.code, r.allowed, r.reason) for r in reported] == [(400, None, "Malformed")] * len(
        MALFORMED
    )
    malformed_spans = [
        s
        for s in webhook.spans.get_finished_spans()
        if (s.attributes or {}).get("wukong.admission.reason") == "Malformed"
    ]
    assert len(malformed_spans) >= len(MALFORMED)
    assert all(s.status.status_code is StatusCode.ERROR for s in malformed_spans)
    # The case: `object` and `kind` as strings was a 500.
    assert "request.kind" in reported[0].message
    # A well-formed review is still answered.
    status, answer = webhook.post(review())
    assert status == 200
    assert answer["response"] == {"uid": "4b1f-uid", "allowed": True}


def test_a_body_over_7_mib_is_a_413_and_one_just_under_is_reviewed(
    webhook: ServedWebhook,
) -> None:
    wukong = review()
    wukong["request"]["object"]["metadata"]["annotations"] = {"pad": "x" * (MAX_BODY_BYTES - 2048)}
    status, answer = webhook.post(wukong)
    assert status == 200 and answer["response"]["allowed"] is True
    wukong["request"]["object"]["metadata"]["annotations"] = {"pad": "x" * MAX_BODY_BYTES}
    status, answer = webhook.post(wukong)
    assert status == 413
    assert answer == f"the body is larger than {MAX_BODY_BYTES} bytes"
    assert webhook.reviews[-1].code == 413
    assert webhook.sample("controller_runtime_webhook_requests_total", {"code": "413"}) >= 1


@pytest.mark.parametrize(
    ("query", "seconds"),
    [("?timeout=10m", 30.0), ("?timeout=5s", 5.0), ("?timeout=never", 10.0), ("", 10.0)],
)
def test_the_callers_timeout_is_capped_at_30s(
    webhook: ServedWebhook, query: str, seconds: float
) -> None:
    status, _ = webhook.post(review(), query=query)
    assert status == 200
    assert webhook.reviews[-1].timeout == seconds
