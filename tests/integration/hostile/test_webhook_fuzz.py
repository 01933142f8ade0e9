"""Generated malformed AdmissionReviews sent straight to a running Wukong webhook over
HTTPS: random JSON values, valid reviews with one field given a value of another
type (or removed), and random bytes. None may get a 5xx or `allowed: true`, none
may make the webhook log an ERROR, and it keeps serving well-formed reviews.

The examples are derandomized (the same ones on every run); CI runs
`DEFAULT_EXAMPLES` per test, `WUKONG_FUZZ_EXAMPLES=5000` runs more.
"""

import copy
import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.hostile.webhook_server import ServedWebhook, webhook_in_thread
from wukong.devcluster import ControlPlane

DEFAULT_EXAMPLES = 100  # per test: three tests, 300 reviews
EXAMPLES = int(os.environ.get("WUKONG_FUZZ_EXAMPLES", DEFAULT_EXAMPLES))

fuzz = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def webhook(control_plane: ControlPlane) -> Iterator[ServedWebhook]:
    with webhook_in_thread(control_plane) as served:
        yield served


def _valid_review(operation: str) -> dict[str, Any]:
    """A review the webhook admits: nothing in it needs a lookup."""
    wukong = {
        "apiVersion": "vm.novasphere.dev/v1alpha1",
        "kind": "Wukong",
        "metadata": {"name": "fuzz", "namespace": "default", "uid": "fuzz-uid"},
        "spec": {
            "cpu": 2,
            "memory": "2Gi",
            "running": True,
            "networks": [{"name": "data", "config": '{"type": "bridge"}'}],
            "disks": [{"name": "root", "size": "10Gi"}],
        },
    }
    request: dict[str, Any] = {
        "uid": "fuzz-review",
        "kind": {"group": "vm.novasphere.dev", "version": "v1alpha1", "kind": "Wukong"},
        "operation": operation,
        "namespace": "default",
        "name": "fuzz",
        "object": wukong,
        "dryRun": False,
    }
    if operation == "UPDATE":
        request["oldObject"] = copy.deepcopy(wukong)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


# Every field the webhook reads, as a path of keys and list indexes.
FIELDS: list[tuple[str | int, ...]] = [
    ("apiVersion",),
    ("kind",),
    ("request",),
    ("request", "uid"),
    ("request", "kind"),
    ("request", "kind", "group"),
    ("request", "kind", "kind"),
    ("request", "operation"),
    ("request", "namespace"),
    ("request", "name"),
    ("request", "object"),
    ("request", "oldObject"),
    ("request", "dryRun"),
    ("request", "object", "metadata"),
    ("request", "object", "metadata", "name"),
    ("request", "object", "metadata", "namespace"),
    ("request", "object", "spec"),
    ("request", "object", "spec", "cpu"),
    ("request", "object", "spec", "memory"),
    ("request", "object", "spec", "running"),
    ("request", "object", "spec", "networks"),
    ("request", "object", "spec", "networks", 0),
    ("request", "object", "spec", "networks", 0, "name"),
    ("request", "object", "spec", "networks", 0, "config"),
    ("request", "object", "spec", "disks"),
    ("request", "object", "spec", "disks", 0),
    ("request", "object", "spec", "disks", 0, "name"),
    ("request", "object", "spec", "disks", 0, "size"),
]
# Fields whose absence is a malformed review too (the others may be left out).
REQUIRED = {
    ("apiVersion",),
    ("kind",),
    ("request",),
    ("request", "uid"),
    ("request", "kind"),
    ("request", "operation"),
    ("request", "object"),
    ("request", "object", "spec", "networks", 0, "name"),
    ("request", "object", "spec", "disks", 0),
    ("request", "object", "spec", "disks", 0, "name"),
    ("request", "object", "spec", "disks", 0, "size"),
}

_scalars = (
    st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    st.none() | _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


@st.composite
def mistyped_reviews(draw: st.DrawFn) -> dict[str, Any]:
    """A valid review with one field it reads removed (if required) or given a non-null
    value of another JSON type."""
    review = _valid_review(draw(st.sampled_from(["CREATE", "UPDATE"])))
    path = draw(st.sampled_from(FIELDS))
    parent: Any = review
    for key in path[:-1]:
        parent = parent[key]
    # A CREATE has no oldObject: any value but an object is of the wrong type then.
    original = parent[path[-1]] if isinstance(parent, list) else parent.get(path[-1], {})
    if path in REQUIRED and isinstance(parent, dict) and draw(st.booleans()):
        del parent[path[-1]]
        return review
    parent[path[-1]] = draw(
        json_values.filter(lambda v: v is not None and _json_type(v) != _json_type(original))
    )
    return review


def _check(webhook: ServedWebhook, body: object, *, content_type: str = "application/json") -> None:
    status, answer = webhook.post(body, content_type=content_type, timeout=10)
    assert status < 500, (status, answer)
    if status == 200:
        assert answer["response"]["allowed"] is False, answer
    else:
        assert status == 400, (status, answer)


@pytest.fixture
def no_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The webhook logs nothing at WARNING or above for input alone."""
    with caplog.at_level(logging.WARNING):
        yield
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert noisy == [], [r.getMessage() for r in noisy]


@fuzz
@given(body=json_values)
def test_random_json_values_are_400(webhook: ServedWebhook, no_errors: None, body: object) -> None:
    _check(webhook, body)


@fuzz
@given(review=mistyped_reviews())
def test_reviews_with_a_field_of_the_wrong_type_are_never_admitted(
    webhook: ServedWebhook, no_errors: None, review: dict[str, Any]
) -> None:
    _check(webhook, review)


@fuzz
@given(body=st.binary(max_size=256))
def test_random_bytes_are_400(webhook: ServedWebhook, no_errors: None, body: bytes) -> None:
    _check(webhook, body)


def test_the_webhook_still_serves_after_the_fuzzing(webhook: ServedWebhook) -> None:
    for operation in ("CREATE", "UPDATE"):
        status, answer = webhook.post(_valid_review(operation))
        assert status == 200
        assert answer["response"] == {"uid": "fuzz-review", "allowed": True}
    assert webhook.thread is not None and webhook.thread.is_alive()
    codes = {review.code for review in webhook.reviews}
    assert codes <= {200, 400}, codes
    if len(webhook.reviews) > EXAMPLES:  # after the fuzzing (not when run alone)
        # Both layers were reached: the envelope (400) and the Wukong's values (denied).
        reasons = {review.reason for review in webhook.reviews}
        assert {"Malformed", "Invalid", "Allowed"} <= reasons, reasons
