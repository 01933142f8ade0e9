"""Validating admission webhooks, each request under the AdmissionReview's own deadline.

The API server calls a webhook over HTTPS with an AdmissionReview and waits at
most the webhook's `timeoutSeconds` (10 s by default), which it also sends as
the `?timeout=` query parameter. What happens after that is decided by the
webhook configuration's `failurePolicy`: `Ignore` admits the object, `Fail`
rejects it with "failed calling webhook". So an answer that arrives late is no
answer: every request here gets a deadline, a little before the API server's
(`ANSWER_MARGIN`), and everything it does is bounded by it (seed 003 §2.5: the
deadline must travel from the HTTP request to every client call):

- `AdmissionRequest.client` is the manager's client bounded by the deadline
  (less `CALL_MARGIN`), so a call to a slow API server ends as `ApiTimeout`
  while the validator still has time to answer with what it knows;
- the validator as a whole runs under `asyncio.timeout_at(deadline)`; if it is
  still running then, it is cancelled and the webhook answers itself: the
  object is admitted with a warning saying what could not be checked
  (reason `Unverified`): the check was an early answer, the controller still
  reports the problem in the object's conditions.

Validators read the operator's cache first (no API call for the common case)
and make a live, bounded call only when the cache cannot answer (see
`wukong.operator.admission`).

Each request is reported to observers: `admission_started` when it arrives and
`admission_reviewed` (`WebhookReview`: deadline, decision, reason) when it is
answered; metrics turn them into controller-runtime's webhook families and
tracing into one span per request.

Certificates come from a directory holding `tls.crt` and `tls.key`, as with
controller-runtime's `CertDir` (in a cluster, a Secret the chart mounts; see
`servingcert`).
"""

import asyncio
import datetime
import logging
import re
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from wukong.runtime._client import Client, Object
from wukong.runtime._fanout import NO_OBSERVER
from wukong.runtime._httpserver import HttpServer
from wukong.runtime._observer import RuntimeObserver, WebhookReview

log = logging.getLogger("wukong.runtime.webhook")

# The API server's default timeoutSeconds for admission webhooks.
DEFAULT_REVIEW_TIMEOUT = 10.0
# Answer this much before the API server stops waiting (a share of short
# timeouts): the answer still has to travel back.
ANSWER_MARGIN = 0.25
# A validator's API calls end this much before its own deadline.
CALL_MARGIN = 0.1

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, kw_only=True)
class AdmissionRequest:
    """One AdmissionReview's request, with its deadline and a client bounded by it."""

    uid: str
    operation: str
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
    """A validator's answer: allowed or not, a machine-readable reason and a message."""

    allowed: bool
    reason: str = "Allowed"
    message: str = ""
    warnings: tuple[str, ...] = ()

    @classmethod
    def allow(cls, *warnings: str, reason: str = "Allowed") -> "Admission":
        return cls(True, reason, "; ".join(warnings), warnings)

    @classmethod
    def deny(cls, reason: str, message: str) -> "Admission":
        return cls(False, reason, message)


class Validator(Protocol):
    """What a validating admission webhook implements: a decision for each request,
    made within the AdmissionReview's own deadline (the client it gets is bounded by it)."""

    async def validate(self, request: AdmissionRequest) -> Admission: ...


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration ("10s", "1m30s", "500ms"), as the API server sends `timeout`."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


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
        )

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
        timeout = DEFAULT_REVIEW_TIMEOUT
        if "timeout" in http.query:
            try:
                timeout = parse_go_duration(http.query["timeout"])
            except ValueError:
                pass  # the API server's default then
        # Answer before the API server gives up: a margin of at most a quarter of the time.
        deadline = started + max(timeout - min(ANSWER_MARGIN, timeout / 4), 0.0)
        deadline_wall = datetime.datetime.fromtimestamp(started_wall + timeout, datetime.UTC)
        try:
            body = await http.json()
            request_body = body["request"]
            uid = str(request_body["uid"])
        except (ValueError, KeyError, TypeError) as exc:
            self._report(
                path,
                None,
                started,
                started_wall,
                timeout,
                deadline_wall,
                Admission(False, "BadRequest", f"not an AdmissionReview: {exc}"),
                400,
            )
            return web.json_response({"error": f"not an AdmissionReview: {exc}"}, status=400)
        request = _request(request_body, timeout=timeout, deadline=deadline, client=self._client)
        admission = await self._decide(path, request)
        self._report(path, request, started, started_wall, timeout, deadline_wall, admission, 200)
        response: dict[str, Any] = {"uid": uid, "allowed": admission.allowed}
        if not admission.allowed:
            response["status"] = {
                "code": 403,
                "reason": "Forbidden",
                "message": admission.message,
                "details": {"causes": [{"reason": admission.reason}]},
            }
        if admission.warnings:
            response["warnings"] = list(admission.warnings)
        return web.json_response(
            {
                "apiVersion": body.get("apiVersion", "admission.k8s.io/v1"),
                "kind": "AdmissionReview",
                "response": response,
            }
        )

    async def _decide(self, path: str, request: AdmissionRequest) -> Admission:
        validator = self._validators[path]
        try:
            async with asyncio.timeout_at(request.deadline):
                return await validator.validate(request)
        except TimeoutError:
            return Admission.allow(
                f"not verified within the review's {request.timeout:g}s deadline; "
                "the controller reports any problem in the object's conditions",
                reason="Unverified",
            )
        except Exception as exc:
            # A broken validator must not block every write: admit, say so, log it.
            log.exception("webhook %s failed for %s/%s", path, request.namespace, request.name)
            return Admission.allow(f"not verified: the webhook failed ({exc})", reason="Unverified")

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
            )
        )


def _request(
    body: dict[str, Any], *, timeout: float, deadline: float, client: Client
) -> AdmissionRequest:
    obj = body.get("object")
    name = body.get("name") or ((obj or {}).get("metadata") or {}).get("name")
    return AdmissionRequest(
        uid=str(body["uid"]),
        operation=str(body.get("operation", "")),
        kind=str((body.get("kind") or {}).get("kind", "")),
        namespace=body.get("namespace"),
        name=name,
        object=obj,
        old_object=body.get("oldObject"),
        dry_run=bool(body.get("dryRun")),
        timeout=timeout,
        deadline=deadline,
        # The calls end a little earlier than the validator must answer, so it
        # can still turn a call that ran out into its own answer.
        client=client.with_deadline(deadline - min(CALL_MARGIN, timeout / 20)),
    )


__all__ = [
    "Admission",
    "AdmissionRequest",
    "Validator",
    "WebhookServer",
]
