"""The one path every API call takes, and the policy a plain client gives it.

`Client`'s verbs turn their arguments into a `Call` and hand it to a
`Transport`: `request` for a call answered by one JSON object, `stream` for a
watch. Both go through `_open`, the only place a request is sent: it bounds the
call (`budget`), admits it (`admit`), sends it with client-go's retries of
throttled answers (429 or 5xx with `Retry-After`, within the bound), turns an
error answer into its exception, and reports the finished call (`report`).
A call made while a span is current (a traced reconcile's) carries its
context as W3C `traceparent`/`tracestate` headers, so the API server's own
spans join the reconcile's trace (docs/tracing.md says how it takes them).
They are formatted once per trace context, not per call: a reconcile's calls
made under its span all send the ones the tracer made when the span started
(`prepare_trace_headers`).

`Transport` itself is the policy of a client a user builds: a call is bounded
by its own `timeout` only, every call is admitted, a call that times out is not
tried again, and nobody is told. The manager's call layer (`_calls.CallLayer`)
overrides those four methods; the path stays this one.
"""

import asyncio
import contextvars
import json
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from kubernetes_asyncio import client as k8s_client
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.propagators.textmap import TextMapPropagator
from yarl import URL

from wukong.runtime._errors import ApiError, ApiTimeout, api_error
from wukong.runtime.resources import Resource

Object = dict[str, Any]
"""A Kubernetes object (or list, or Status) as the API server's JSON: a plain dict."""
Query = list[tuple[str, str]]
Body = Object | list[Object]

_MAX_THROTTLE_RETRIES = 10
_MAX_RETRY_AFTER_SECONDS = 5.0
# Extra client-side time for a watch beyond its server-side timeoutSeconds, so
# the server's clean end of the stream arrives before the client gives up.
WATCH_SLACK_SECONDS = 5.0
JSON = "application/json"
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Verb:
    name: str
    method: str
    writes: bool = False
    idempotent: bool = False  # a repeated PUT of a resourceVersion answers Conflict


GET = Verb("get", "GET", idempotent=True)
LIST = Verb("list", "GET", idempotent=True)
WATCH = Verb("watch", "GET")
CREATE = Verb("create", "POST", writes=True)
UPDATE = Verb("update", "PUT", writes=True, idempotent=True)
PATCH = Verb("patch", "PATCH", writes=True)
DELETE = Verb("delete", "DELETE", writes=True, idempotent=True)


@dataclass(frozen=True, slots=True)
class Call:
    """One API call as a verb asked for it, before it is bounded in time."""

    verb: Verb
    resource: Resource
    namespace: str | None
    path: str
    query: Query
    body: Body | None = None
    content_type: str = JSON
    timeout: float | None = None  # the caller's own bound, seconds
    server_timeout: bool = False  # a list: the server bounds it with timeoutSeconds too


class Transport:
    """Sends calls over one `kubernetes_asyncio` ApiClient (its configuration and pool)."""

    def __init__(self, api: k8s_client.ApiClient, *, host: str | None = None) -> None:
        self.api = api
        if host is None:
            url = str(api.configuration.host or "")
            host = urlsplit(url).netloc or url
        self.host = host  # host:port, client-go's `host` metric label

    async def close(self) -> None:
        await self.api.close()

    # -- policy: a plain client's; the manager's call layer overrides these -----------

    def budget(self, timeout: float | None, *, whole: bool = False) -> float | None:
        """The time a call may take: `timeout`, its own bound. `whole`: a watch, which
        is not given a share of a deadline but all of it."""
        return timeout

    def admit(self, call: Call) -> None:
        """Raise if `call` may not be sent at all."""

    def may_retry(self, call: Call, attempt: int) -> bool:
        """Whether `call`, timed out on attempt `attempt`, may go again."""
        return False

    def report(
        self,
        call: Call,
        status: int | None,
        started_wall: float,
        started: float,
        retries: int,
        error: BaseException | None,
    ) -> None:
        """`call` ended: with an answer of `status`, or `error`."""

    # -- the path ------------------------------------------------------------------------

    async def request(self, call: Call) -> Object:
        """Send `call`; its answer's JSON object. A timed-out call goes again while
        `may_retry` allows (never after a `Retry-After` it cannot wait for)."""
        result: Object = await self._request(call, aiohttp.ClientResponse.json)
        return result

    async def request_text(self, call: Call) -> str:
        """`request`, but the answer's JSON text undecoded (a list page, decoded one
        object at a time by its reader)."""
        return await self._request(call, _json_text)

    async def _request(
        self, call: Call, read: Callable[[aiohttp.ClientResponse], Awaitable[_T]]
    ) -> _T:
        attempt = 0
        while True:
            budget = self.budget(call.timeout)
            query = call.query
            if budget is not None and budget > 0:
                # The API server gives up too (and answers 504) instead of working on.
                query = [*query, ("timeout", f"{budget:.3f}s")]
                if call.server_timeout:
                    query.append(("timeoutSeconds", str(max(1, int(budget)))))
            try:
                response = await self._open(call, query, aiohttp.ClientTimeout(total=budget))
                try:
                    return await read(response)
                except TimeoutError:
                    raise ApiTimeout(verb=call.verb.name, path=call.path, timeout=budget) from None
                finally:
                    response.release()
            except ApiTimeout as timed_out:
                if timed_out.retry_after is not None or not self.may_retry(call, attempt):
                    raise
                attempt += 1

    async def stream(
        self, call: Call, *, timeout_seconds: int, inactivity_timeout: float | None
    ) -> AsyncGenerator[Object]:
        """Send a watch; yield its events (`type`, `object`) until the server ends it."""
        budget = self.budget(timeout_seconds + WATCH_SLACK_SECONDS, whole=True)
        assert budget is not None  # a watch always has a timeout
        seconds = max(1, int(budget - WATCH_SLACK_SECONDS))
        query = [*call.query, ("timeoutSeconds", str(seconds))]
        timeout = aiohttp.ClientTimeout(total=budget, sock_read=inactivity_timeout)
        response = await self._open(call, query, timeout)
        try:
            async for line in response.content:
                if not line.strip():
                    continue
                event: Object = json.loads(line)
                if event["type"] == "ERROR":
                    status = event["object"]
                    raise api_error(
                        status=int(status.get("code", 500)),
                        body=status,
                        verb="WATCH",
                        path=call.path,
                    )
                yield event
        except TimeoutError:
            raise ApiTimeout(
                verb="WATCH", path=call.path, timeout=inactivity_timeout or budget
            ) from None
        finally:
            response.release()

    async def _open(
        self, call: Call, query: Query, timeout: aiohttp.ClientTimeout
    ) -> aiohttp.ClientResponse:
        """Send a request; return the response once its status is 2xx, else raise."""
        verb, path = call.verb, call.path
        started_wall, started = time.time(), time.monotonic()
        retries = 0
        status: int | None = None
        error: BaseException | None = None
        try:
            self.admit(call)
            if timeout.total is not None and timeout.total <= 0:
                raise ApiTimeout(verb=verb.name, path=path, timeout=0.0)
            retries, response = await self._send(call, query, timeout)
            status = response.status
            if status >= 400:
                failure = await _error_from(response, verb.name, path)
                if status == 504:
                    # The API server gave up at the `?timeout=` we sent: our budget ran out.
                    raise ApiTimeout(
                        verb=verb.name, path=path, timeout=timeout.total, why=failure.message
                    )
                raise failure
            return response
        except ApiTimeout as exc:
            error = exc
            raise
        except TimeoutError:  # aiohttp's own: the HTTP timeout (our budget) passed
            error = ApiTimeout(verb=verb.name, path=path, timeout=timeout.total)
            raise error from None
        except BaseException as exc:  # CancelledError too: report it, then re-raise
            error = exc
            raise
        finally:
            if status is not None or error is not None:
                self.report(call, status, started_wall, started, retries, error)

    async def _send(
        self, call: Call, query: Query, timeout: aiohttp.ClientTimeout
    ) -> tuple[int, aiohttp.ClientResponse]:
        """Send, retrying throttled answers within `timeout`; (retries, response)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout.total is None else loop.time() + timeout.total
        headers = _headers(call)
        for attempt in range(_MAX_THROTTLE_RETRIES + 1):
            remaining = None if deadline is None else max(0.001, deadline - loop.time())
            # _preload_content=False hands back aiohttp's response unread, so
            # watches can stream and error bodies are decoded here, not by the
            # generated client.
            response: aiohttp.ClientResponse = await self.api.call_api(
                call.path,
                call.verb.method,
                query_params=query,
                header_params=headers,
                body=call.body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=aiohttp.ClientTimeout(
                    total=remaining, sock_read=timeout.sock_read
                ),
            )
            delay = _retry_after(response)
            if delay is None or attempt == _MAX_THROTTLE_RETRIES:
                return attempt, response
            response.release()
            if deadline is not None and loop.time() + delay >= deadline:
                # The server asked us to come back later than we can wait: the call
                # ran out of time (api_timeout, a normal event), not a server error.
                raise ApiTimeout(
                    verb=call.verb.name,
                    path=call.path,
                    timeout=timeout.total,
                    why=f"{response.status} with Retry-After {delay:g}s and no time left to wait",
                    retry_after=delay,
                )
            # Retry-After on a 429 or a 5xx: the server asks us to come back (APF
            # throttling, a watch cache still initialising after a CRD was
            # created, a server shutting down). client-go retries these the same way.
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")


def api_client(
    configuration: k8s_client.Configuration, user_agent: str | None
) -> k8s_client.ApiClient:
    """The ApiClient a `Client` sends through, for `configuration`."""
    if configuration.proxy is None:
        configuration.proxy = _environment_proxy(str(configuration.host))
    api = k8s_client.ApiClient(configuration=configuration)
    # kubernetes_asyncio's session trusts the environment, so aiohttp looks up
    # proxy variables and ~/.netrc in a worker thread for every request: a thread
    # hop per API call, a large share of a reconcile's CPU. This client talks to
    # one host, whose proxy was resolved once above; tokens and certificates,
    # never netrc, authenticate it.
    api.rest_client.pool_manager._trust_env = False
    if user_agent:
        api.user_agent = user_agent
    return api


def _environment_proxy(host: str) -> str | None:
    """The proxy HTTPS_PROXY/HTTP_PROXY name for `host`, unless NO_PROXY exempts it
    (client-go honours the same variables)."""
    try:
        proxy, _ = get_env_proxy_for_url(URL(host))
    except LookupError:
        return None
    return str(proxy)


# Trace headers made ahead for one OpenTelemetry context (`prepare_trace_headers`).
_READY: contextvars.ContextVar[tuple[otel_context.Context, dict[str, str]] | None] = (
    contextvars.ContextVar("wukong_ready_trace_headers", default=None)
)
# The last OpenTelemetry context other calls were made in, and its headers. Kept
# in the module, not the task's contextvars: a reconcile that sets none of its own
# leaves its worker's as it found them (the worker then goes on with the next key).
_last: tuple[otel_context.Context, dict[str, str]] = (otel_context.Context(), {})


def prepare_trace_headers(
    context: otel_context.Context, traceparent: str
) -> contextvars.Token[Any] | None:
    """Have API calls made in `context` send `traceparent` as it is, from the running
    contextvars on: for whoever makes a span current and knows its ids (the tracer,
    at a reconcile's start), so that no call looks the span up and formats it.

    `traceparent` is what `_trace_context_headers` would make for `context`: its
    current span's with the sampled flag alone, no trace state and no baggage in
    `context`. Nothing is prepared unless W3C's propagators are the configured
    ones (the others write their own headers). The token that takes it back
    (`token.var.reset(token)`, in the same contextvars), or None.
    """
    if _propagates_w3c_only():
        return _READY.set((context, {"traceparent": traceparent}))
    return None


def _headers(call: Call) -> dict[str, str]:
    """The request's headers; with the current trace context if a span is current."""
    global _last
    headers = {"Accept": JSON, "Content-Type": call.content_type}
    # The OpenTelemetry context changes only when a span is made current, so its
    # headers are kept with it: made ahead for a reconcile's, else the last ones.
    current = otel_context.get_current()
    known = _READY.get()
    if known is None or known[0] is not current:
        known = _last
        if known[0] is not current:
            known = _last = (current, _trace_context_headers(current))
    if known[1]:
        headers.update(known[1])
    return headers


def _trace_context_headers(context: otel_context.Context) -> dict[str, str]:
    """The headers that carry `context`: none unless a valid span is current in it
    (tracing off: a call pays only the lookup above)."""
    headers: dict[str, str] = {}
    current = trace.get_current_span(context).get_span_context()
    if not current.is_valid:
        return headers
    if _propagates_w3c_only() and not baggage.get_all(context):
        # What the W3C propagators would write, written here: going through them
        # (the global composite, each propagator, the setter) cost a reconcile's
        # call 10-20 us in the operator's process against 2 in a loop.
        flags = current.trace_flags & trace.TraceFlags.SAMPLED  # see _inject_trace_context
        headers["traceparent"] = f"00-{current.trace_id:032x}-{current.span_id:016x}-{flags:02x}"
        if current.trace_state:
            headers["tracestate"] = current.trace_state.to_header()
        return headers
    _inject_trace_context(headers, context, current)
    return headers


# The fields of W3C trace context's propagator, alone or with W3C baggage's:
# the default propagators (OTEL_PROPAGATORS=tracecontext,baggage).
_W3C_FIELDS = (
    frozenset({"traceparent", "tracestate"}),
    frozenset({"traceparent", "tracestate", "baggage"}),
)
# The global propagator last looked at, and whether it writes W3C's headers only.
_w3c_checked: tuple[TextMapPropagator | None, bool] = (None, False)


def _propagates_w3c_only() -> bool:
    """Whether the configured propagators write W3C trace context and baggage only."""
    global _w3c_checked
    textmap = propagate.get_global_textmap()
    if _w3c_checked[0] is not textmap:
        _w3c_checked = (textmap, frozenset(textmap.fields) in _W3C_FIELDS)
    return _w3c_checked[1]


def _inject_trace_context(
    headers: dict[str, str], context: otel_context.Context, current: trace.SpanContext
) -> None:
    """Add `context`'s headers (the configured propagators: W3C trace
    context by default), with the sampled bit as the only trace flag.

    The SDK flags a trace id it drew as random (W3C trace context level 2, flag
    0x02); Go's OpenTelemetry 1.41, kube-apiserver 1.36's, takes a version-00
    `traceparent` with any flag but sampled as malformed and ignores it, so the
    API server would start a trace of its own (docs/tracing.md).
    """
    if current.trace_flags == current.trace_flags & trace.TraceFlags.SAMPLED:
        propagate.inject(headers, context=context)
        return
    level_one = trace.SpanContext(
        current.trace_id,
        current.span_id,
        current.is_remote,
        trace.TraceFlags(current.trace_flags & trace.TraceFlags.SAMPLED),
        current.trace_state,
    )
    # Over `context`, so its baggage goes too.
    level_one_span = trace.NonRecordingSpan(level_one)
    propagate.inject(headers, context=trace.set_span_in_context(level_one_span, context))


async def _json_text(response: aiohttp.ClientResponse) -> str:
    # What `json()` checks (the content type), without its decoding.
    text: str | None = await response.json(loads=str)
    return text or ""


async def _error_from(response: aiohttp.ClientResponse, verb: str, path: str) -> ApiError:
    try:
        body = await response.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        body = {"message": (await response.text())[:500]}
    finally:
        response.release()
    return api_error(status=response.status, body=body, verb=verb, path=path)


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    """Seconds to wait before retrying: a 429, or a 5xx that says when; else None."""
    if response.status != 429 and not (
        500 <= response.status < 600 and "Retry-After" in response.headers
    ):
        return None
    try:
        return min(float(response.headers.get("Retry-After", "1")), _MAX_RETRY_AFTER_SECONDS)
    except ValueError:
        return 1.0
