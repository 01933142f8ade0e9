"""Validating admission webhooks, each request under the AdmissionReview's own deadline.

The API server calls a webhook over HTTPS with an AdmissionReview and waits at
most the webhook's `timeoutSeconds` (10 s by default, 30 s at most), which it
also sends as the `?timeout=` query parameter. What happens after that is
decided by the webhook configuration's `failurePolicy`: `Ignore` admits the
object, `Fail` rejects it with "failed calling webhook". So an answer that
arrives late is no answer: every request here gets a deadline, a little before
the API server's (`ANSWER_MARGIN`), and that one deadline reaches everything
the request does, down to each API call it makes:

- `AdmissionRequest.client` is the manager's client bounded by the deadline
  (less `CALL_MARGIN`), so a call to a slow API server ends as `ApiTimeout`
  while the validator still has time to answer with what it knows;
- the validator as a whole runs under `asyncio.timeout_at(deadline)`.

A validator that raises, or is still running at the deadline, has decided
nothing, and the webhook says so as controller-runtime's "Errored" response
does: `allowed: false` with `status.code` 500 and what went wrong as the
message (reason `Errored` here); a validator that raised an unexpected
exception (a bug, not an API error or timeout) is reported as a panic
(`WebhookReview.panicked`), as controller-runtime counts a webhook's recovered
panic. The API server fails the write with that code
and message; it is an answer, so `failurePolicy` (which covers a webhook that
cannot be called or does not answer) does not turn it into an admission: an
object nobody could check is not let through by an error. Admitting instead
(with a warning saying what could not be checked, reason `Unverified`) is an
explicit opt-in: wrap the validator in `AdmitOnError`.

A request that is no AdmissionReview this server can read (not JSON, not an
object, fields of the wrong type, no `request` or `uid`, another kind or
apiVersion, a body over `MAX_BODY_BYTES`, or a resource the validator does not
review) is answered with HTTP 400 (413 for the size) and a short plain
message, with no decision in it, let alone `allowed: true` (the API server
sends only well-formed reviews: these come from anyone else who reaches the
port). The caller's `?timeout=` counts up to
`MAX_REVIEW_TIMEOUT`; one that is not a positive Go duration gives the default.

Validators read the operator's cache first (no API call for the common case)
and make a live, bounded call only when the cache cannot answer (see
`wukong.operator.admission`).

Each path is reported to observers once, when the server is made
(`webhook_added`: metrics serve its series at 0 from then on, as
controller-runtime does when a webhook is registered), and each request:
`admission_started` when it arrives and
`admission_reviewed` (`WebhookReview`: deadline, decision, reason, HTTP code,
and the request's headers) when it is answered, malformed ones included
(reason `Malformed`); metrics turn them into controller-runtime's webhook
families and tracing into one span per request, a child of the API server's
call when its `traceparent` says so (docs/tracing.md). That span's context is
current while the validator runs and when the review is reported: its id is
chosen here, so the validator's API calls carry it as their parent (the API
server's spans of them and the operator's are children of the admission's),
and the tracer gives the admission's span that id.

Certificates come from a directory holding `tls.crt` and `tls.key`, as with
controller-runtime's `CertDir` (in a cluster, a Secret the chart mounts; see
`servingcert`).
"""

import asyncio
import datetime
import json
import logging
import random
import re
import ssl
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from wukong.runtime._calls import bounded
from wukong.runtime._client import Client, Object
from wukong.runtime._errors import is_panic
from wukong.runtime._fanout import NO_OBSERVER
from wukong.runtime._httpserver import HttpServer
from wukong.runtime._observer import RuntimeObserver, WebhookReview

log = logging.getLogger("wukong.runtime.webhook")

# The API server's default timeoutSeconds for admission webhooks.
DEFAULT_REVIEW_TIMEOUT = 10.0
# The API server's largest timeoutSeconds: a caller asking for more gets this.
MAX_REVIEW_TIMEOUT = 30.0
# Answer this much before the API server stops waiting (a share of short
# timeouts): the answer still has to travel back.
ANSWER_MARGIN = 0.25
# A validator's API calls end this much before its own deadline.
CALL_MARGIN = 0.1
# controller-runtime's limit on a review's body: an UPDATE carries the object twice.
MAX_BODY_BYTES = 7 * 1024 * 1024

ADMISSION_API_VERSION = "admission.k8s.io/v1"
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")
# The reason of a review that was not decided (HTTP 400 or 413).
MALFORMED = "Malformed"

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, kw_only=True)
class AdmissionRequest:
    """One AdmissionReview's request, with its deadline and a client bounded by it."""

    uid: str
    operation: str
    group: str = ""  # of the object's kind ("" for the core group)
    kind: str
    namespace: str | None
    name: str | None
    object: Object | None
    old_object: Object | None
    dry_run: bool
    timeout: float  # what the API server gives this review (timeoutSeconds)
    deadline: float  # event-loop time by which the answer must be written
    client: Client  # every call ends by `deadline`

    def remaining(self) -> float:
        return self.deadline - asyncio.get_running_loop().time()


@dataclass(frozen=True)
class Admission:
    """A validator's answer: allowed or not, a machine-readable reason and a message.

    `code` is the answer's `status.code` when not allowed: 403 for a denial, 500 when
    the validator could not decide (`errored`), 400 for a request it cannot read
    (`malformed`: the webhook then answers HTTP 400 and decides nothing).
    """

    allowed: bool
    reason: str = "Allowed"
    message: str = ""
    warnings: tuple[str, ...] = ()
    code: int = 403

    @classmethod
    def allow(cls, *warnings: str, reason: str = "Allowed") -> "Admission":
        return cls(True, reason, "; ".join(warnings), warnings)

    @classmethod
    def deny(cls, reason: str, message: str) -> "Admission":
        return cls(False, reason, message)

    @classmethod
    def errored(cls, message: str) -> "Admission":
        """Not decided (a failed lookup, an error): the write fails with code 500."""
        return cls(False, "Errored", message, code=500)

    @classmethod
    def malformed(cls, message: str) -> "Admission":
        """Not a request this validator reviews (another resource, an unreadable object)."""
        return cls(False, MALFORMED, message, code=400)


class Validator(Protocol):
    """What a validating admission webhook implements: a decision for each request,
    made within the AdmissionReview's own deadline (the client it gets is bounded by it)."""

    async def validate(self, request: AdmissionRequest) -> Admission: ...


@dataclass(frozen=True)
class AdmitOnError:
    """Opt-in for `validator`: what it cannot decide (it raises, runs out of time, or
    answers `Admission.errored`) is admitted with a warning (reason `Unverified`)
    instead of answered as errored (a failed write)."""

    validator: Validator

    async def validate(self, request: AdmissionRequest) -> Admission:
        return await self.validator.validate(request)


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration ("10s", "1m30s", "500ms"), as the API server sends `timeout`."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def review_timeout(query: Mapping[str, str]) -> float:
    """The time a review has: the caller's `timeout`, at most `MAX_REVIEW_TIMEOUT`; the
    default when it is absent or not a positive duration."""
    try:
        timeout = parse_go_duration(query["timeout"])
    except (KeyError, ValueError):
        return DEFAULT_REVIEW_TIMEOUT
    return min(timeout, MAX_REVIEW_TIMEOUT) if timeout > 0 else DEFAULT_REVIEW_TIMEOUT


class Malformed(Exception):
    """A body that is no AdmissionReview this server can read (answered with 400)."""


def read_review(body: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """The AdmissionReview in `body` and its request, with the type of every field the
    webhook reads checked; `Malformed` with a short message otherwise."""
    try:
        review = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than json can go
        raise Malformed("the body is not JSON") from None
    if not isinstance(review, dict):
        raise Malformed("an AdmissionReview is a JSON object")
    if review.get("kind") != "AdmissionReview" or review.get("apiVersion") != (
        ADMISSION_API_VERSION
    ):
        raise Malformed(f"expected kind AdmissionReview, apiVersion {ADMISSION_API_VERSION}")
    request = review.get("request")
    if not isinstance(request, dict):
        raise Malformed("request: must be an object")
    if not isinstance(request.get("uid"), str) or not request["uid"]:
        raise Malformed("request.uid: must be a non-empty string")
    kind = request.get("kind")
    if not isinstance(kind, dict) or not all(
        isinstance(kind.get(key, ""), str) for key in ("group", "version", "kind")
    ):
        raise Malformed("request.kind: must be an object of strings group, version, kind")
    if request.get("operation") not in OPERATIONS:
        raise Malformed(f"request.operation: must be one of {', '.join(OPERATIONS)}")
    for key, expected, what in (
        ("namespace", str, "a string"),
        ("name", str, "a string"),
        ("object", dict, "an object"),
        ("oldObject", dict, "an object"),
        ("dryRun", bool, "a boolean"),
    ):
        if request.get(key) is not None and not isinstance(request[key], expected):
            raise Malformed(f"request.{key}: must be {what}")
    for key in ("object", "oldObject"):
        metadata = (request.get(key) or {}).get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise Malformed(f"request.{key}.metadata: must be an object")
    return review, request


class WebhookServer:
    """Serves validating webhooks (path -> `Validator`) over TLS."""

    def __init__(
        self,
        *,
        client: Client,
        validators: Mapping[str, Validator],
        observer: RuntimeObserver = NO_OBSERVER,
    ) -> None:
        self._client = client
        self._validators = dict(validators)
        self._observer = observer
        self._server = HttpServer(
            routes={},
            post_routes={path: self._handler(path) for path in self._validators},
            client_max_size=MAX_BODY_BYTES,
        )
        for path in self._validators:
            observer.webhook_added(path)

    async def start(self, bind: str, *, ssl_context: ssl.SSLContext | None) -> int:
        """Listen on `bind`; `ssl_context` None serves plain HTTP (only for tests)."""
        return await self._server.start(bind, ssl_context=ssl_context)

    async def stop(self) -> None:
        await self._server.stop()

    def _handler(self, path: str) -> Any:
        async def handle(request: web.Request) -> web.Response:
            return await self.review(path, request)

        return handle

    async def review(self, path: str, http: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        started, started_wall = loop.time(), time.time()
        self._observer.admission_started(path)
        timeout = review_timeout(http.query)
        # Answer before the API server gives up: a margin of at most a quarter of the time.
        deadline = started + max(timeout - min(ANSWER_MARGIN, timeout / 4), 0.0)
        deadline_wall = datetime.datetime.fromtimestamp(started_wall + timeout, datetime.UTC)

        def answer(
            request: AdmissionRequest | None,
            admission: Admission,
            code: int,
            panicked: bool = False,
        ) -> None:
            self._report(
                path,
                request,
                started,
                started_wall,
                timeout,
                deadline_wall,
                admission,
                code,
                panicked,
                http.headers,
            )

        try:
            if http.content_type != "application/json":
                raise Malformed(f"content type {http.content_type!r}: expected application/json")
            try:
                body = await http.read()
            except web.HTTPRequestEntityTooLarge:
                raise
            except Exception as exc:  # the caller went away mid-body, or sent a broken one
                raise Malformed(f"the body could not be read: {type(exc).__name__}") from None
            review, request_body = read_review(body)
        except web.HTTPRequestEntityTooLarge:
            message = f"the body is larger than {MAX_BODY_BYTES} bytes"
            answer(None, Admission.malformed(message), 413)
            return web.Response(status=413, text=message)
        except Malformed as exc:
            answer(None, Admission.malformed(str(exc)), 400)
            return web.Response(status=400, text=f"not an AdmissionReview: {exc}")
        request = _request(request_body, timeout=timeout, deadline=deadline, client=self._client)
        with _in_admission_span(http.headers):
            admission, panicked = await self._decide(path, request)
            if admission.code == 400:
                answer(request, admission, 400, panicked)
                return web.Response(status=400, text=admission.message)
            answer(request, admission, 200, panicked)
        response: dict[str, Any] = {"uid": request.uid, "allowed": admission.allowed}
        if not admission.allowed:
            response["status"] = {
                "code": admission.code,
                "reason": "InternalError" if admission.code == 500 else "Forbidden",
                "message": admission.message,
                "details": {"causes": [{"reason": admission.reason}]},
            }
        if admission.warnings:
            response["warnings"] = list(admission.warnings)
        return web.json_response(
            {"apiVersion": review["apiVersion"], "kind": "AdmissionReview", "response": response}
        )

    async def _decide(self, path: str, request: AdmissionRequest) -> tuple[Admission, bool]:
        """The validator's answer, and whether it raised an unexpected exception (a bug,
        counted as controller-runtime counts a webhook's recovered panic)."""
        validator = self._validators[path]
        where = f"{path} for {request.namespace}/{request.name}"
        panicked = False
        try:
            async with asyncio.timeout_at(request.deadline):
                admission = await validator.validate(request)
        except TimeoutError:
            log.warning("webhook %s: not decided within %gs", where, request.timeout)
            admission = Admission.errored(
                f"not decided within the review's {request.timeout:g}s deadline"
            )
        except Exception as exc:
            log.exception("webhook %s failed", where)
            admission = Admission.errored(f"the webhook failed: {exc}")
            panicked = is_panic(exc)
        if admission.code == 500 and isinstance(validator, AdmitOnError):
            unverified = Admission.allow(
                f"not verified: {admission.message}; the controller reports any problem in "
                "the object's conditions",
                reason="Unverified",
            )
            return unverified, panicked
        return admission, panicked

    def _report(
        self,
        path: str,
        request: AdmissionRequest | None,
        started: float,
        started_wall: float,
        timeout: float,
        deadline_wall: datetime.datetime,
        admission: Admission,
        code: int,
        panicked: bool,
        headers: Mapping[str, str],
    ) -> None:
        duration = asyncio.get_running_loop().time() - started
        allowed = admission.allowed if code == 200 else None
        log.debug(
            "admission %s %s/%s: allowed=%s reason=%s (%.3fs of %.1fs)",
            path,
            request.namespace if request else "-",
            request.name if request else "-",
            allowed,
            admission.reason,
            duration,
            timeout,
        )
        self._observer.admission_reviewed(
            WebhookReview(
                webhook=path,
                uid=request.uid if request else "",
                operation=request.operation if request else "",
                kind=request.kind if request else "",
                namespace=request.namespace if request else None,
                name=request.name if request else None,
                started=started_wall,
                duration=duration,
                timeout=timeout,
                deadline=deadline_wall,
                allowed=allowed,
                reason=admission.reason,
                message=admission.message,
                code=code,
                panicked=panicked,
                headers=headers,
            )
        )


@contextmanager
def _in_admission_span(headers: Mapping[str, str]) -> Iterator[None]:
    """The admission's span context current in the block, when the caller's `headers`
    carry a trace: the caller's trace, a span id chosen now (the tracer makes the span
    with it when the review is reported). Without one, nothing is made current (the
    validator's calls carry no trace context)."""
    caller = trace.get_current_span(propagate.extract(headers)).get_span_context()
    if not caller.is_valid:
        yield
        return
    span_id = 0
    while not span_id:  # 0 is no span id
        span_id = random.getrandbits(64)
    admission = trace.SpanContext(
        caller.trace_id,
        span_id,
        is_remote=False,
        trace_flags=caller.trace_flags,
        trace_state=caller.trace_state,
    )
    token = otel_context.attach(trace.set_span_in_context(trace.NonRecordingSpan(admission)))
    try:
        yield
    finally:
        otel_context.detach(token)


def _request(
    body: dict[str, Any], *, timeout: float, deadline: float, client: Client
) -> AdmissionRequest:
    """The request of a review `read_review` has checked."""
    obj = body.get("object")
    name = body.get("name") or ((obj or {}).get("metadata") or {}).get("name")
    return AdmissionRequest(
        uid=body["uid"],
        operation=body["operation"],
        group=body["kind"].get("group", ""),
        kind=body["kind"].get("kind", ""),
        namespace=body.get("namespace") or None,
        name=name if isinstance(name, str) else None,
        object=obj,
        old_object=body.get("oldObject"),
        dry_run=bool(body.get("dryRun")),
        timeout=timeout,
        deadline=deadline,
        # The calls end a little earlier than the validator must answer, so it
        # can still turn a call that ran out into its own answer.
        client=bounded(client, deadline - min(CALL_MARGIN, timeout / 20)),
    )


__all__ = [
    "Admission",
    "AdmissionRequest",
    "AdmitOnError",
    "Validator",
    "WebhookServer",
]
