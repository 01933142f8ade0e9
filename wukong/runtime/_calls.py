"""The call layer the manager wires under its clients: deadlines, budgets, the fence,
observers.

A `Client` a user builds sends its calls plainly (`_transport.Transport`). The
manager gives its informers, elector, webhooks and controllers clients over a
`CallLayer` instead (`layered`), which keeps the one call path of the
transport and changes its policy:

- Deadlines. The reconcile a call is made for is not passed to the client: it
  travels in the task's contextvars (`_context.current_reconcile`), as
  controller-runtime's travels in the `context.Context`. A call made while a
  reconcile runs gets a share of the time left to its deadline (the
  reconcile's `call_share`, half by default, but at least a quarter of a second
  or all that is left), as the HTTP timeout and as the server's own
  `?timeout=` (and `timeoutSeconds` for a list), so the API server stops
  working on a request nobody waits for. A layer may also carry a deadline of
  its own (`bounded`: a webhook's or an access review's); the earlier one
  wins, and a call's own `timeout` if smaller. A call that runs out of its
  own time raises `ApiTimeout` (the `api_timeout` cancel reason), after being
  retried while time is left if its method is idempotent (GET, PUT, DELETE: a
  repeated PUT of a resourceVersion answers Conflict, never a double write);
  when the *reconcile* runs out of time its task is cancelled, which aborts the
  call in flight (aiohttp closes the connection on cancellation).
- The write fence (`_fence`): once it closes, a write raises `NotLeading`
  instead of being sent.
- Observation. Each finished call is reported as an `ApiCall` to the layer's
  `RuntimeObserver` (the manager's observers: metrics count calls, tracing
  makes child spans), with the reconcile it was made for and, if it ended
  early, why (`cancellation.decide_cancel_reason`), so no observer has to
  reconstruct either.
"""

import asyncio
import time

from wukong.runtime._cancellation import decide_cancel_reason
from wukong.runtime._client import Client, transport_of, with_transport
from wukong.runtime._context import ReconcileContext, current_reconcile
from wukong.runtime._errors import NotLeading
from wukong.runtime._fanout import NO_OBSERVER, listener
from wukong.runtime._fence import WriteFence
from wukong.runtime._observer import RuntimeObserver, api_call_of
from wukong.runtime._transport import Call, Transport

_DEADLINE_BACKSTOP_SECONDS = 0.05
# A call's share of the deadline is never less than this (or all that is left):
# slicing a short deadline into tiny attempts would only turn it into timeouts.
_MIN_CALL_SECONDS = 0.25
_MAX_TIMEOUT_RETRIES = 3


class CallLayer(Transport):
    """The transport's path with the manager's policy (see the module's docstring)."""

    def __init__(
        self,
        under: Transport,
        *,
        observer: RuntimeObserver = NO_OBSERVER,
        fence: WriteFence | None = None,
        deadline: float | None = None,
    ) -> None:
        # The same connections and host (not parsed again: a webhook makes one per request).
        super().__init__(under.api, host=under.host)
        self.observer = observer
        # Who hears of a finished call, resolved once: None when nobody does (the node
        # agent's probe points alone leave calls alone), and then no report is built.
        self._report_call = listener(observer, "api_call")
        self.fence = fence  # writes are refused once it closes (leadership lost)
        self.deadline = deadline  # event-loop time

    def _bound(self, reconcile: ReconcileContext | None) -> float | None:
        """The deadline a call made now must end by: the layer's or the reconcile's."""
        if reconcile is None:
            return self.deadline
        if self.deadline is None:
            return reconcile.deadline
        return min(self.deadline, reconcile.deadline)

    def budget(self, timeout: float | None, *, whole: bool = False) -> float | None:
        reconcile = current_reconcile()
        deadline = self._bound(reconcile)
        if deadline is None:
            return timeout
        share = 1.0 if whole or reconcile is None else reconcile.call_share
        left = deadline - asyncio.get_running_loop().time()
        if share >= 1.0 or left <= _MIN_CALL_SECONDS:
            # All that is left, and a little more: the reconcile's own deadline
            # timer fires first and cancels the call, so the cause is recorded
            # as deadline_exceeded; the HTTP timeout is only the backstop.
            allowed = left + _DEADLINE_BACKSTOP_SECONDS
        else:
            allowed = max(left * share, _MIN_CALL_SECONDS)
        return allowed if timeout is None else min(timeout, allowed)

    def admit(self, call: Call) -> None:
        fence = self.fence
        if fence is not None and call.verb.writes:
            lease = fence.refuses(call.namespace)
            if lease is not None:
                raise NotLeading(verb=call.verb.name, path=call.path, lease=lease)

    def may_retry(self, call: Call, attempt: int) -> bool:
        if not call.verb.idempotent or attempt >= _MAX_TIMEOUT_RETRIES:
            return False
        deadline = self._bound(current_reconcile())
        if deadline is None:
            return False
        # Only if the retry gets a budget of its own that ends before the deadline.
        return deadline - asyncio.get_running_loop().time() > _MIN_CALL_SECONDS

    def report(
        self,
        call: Call,
        status: int | None,
        started_wall: float,
        started: float,
        retries: int,
        error: BaseException | None,
    ) -> None:
        reconcile = current_reconcile()
        duration = time.monotonic() - started
        reason = None
        if error is not None:
            reason = decide_cancel_reason(
                error,
                recorded=reconcile.cancel_reason if reconcile is not None else None,
                deadline_passed=reconcile is not None and reconcile.remaining() <= 0,
            )
        if reason is not None and reconcile is not None:
            # What the reconcile was waiting for when it was cut: its cancel log says so.
            reconcile._note_cut_call(
                f"{call.verb.name} {call.resource.plural} after {duration:.3f}s"
            )
        if self._report_call is None:
            return
        # Built from all its fields in their order (twice as fast as by keywords).
        self._report_call(
            api_call_of(
                (
                    call.verb.name,  # verb
                    call.verb.method,  # method
                    call.resource.plural,  # resource
                    self.host,  # host
                    call.namespace,  # namespace
                    call.path,  # path
                    status,  # status_code
                    started_wall,  # started
                    duration,  # duration
                    retries,  # retries
                    error,  # error
                    reason,  # cancel_reason
                    reconcile,  # reconcile
                )
            )
        )


def layered(
    client: Client,
    *,
    observer: RuntimeObserver | None = None,
    fence: WriteFence | None = None,
    deadline: float | None = None,
) -> Client:
    """A client sharing `client`'s connections, its calls through a `CallLayer`.

    What is not given is kept from `client`'s own layer, if it has one; a
    `deadline` can only make an earlier one earlier. Closing it is `client`'s job.
    """
    under = transport_of(client)
    if isinstance(under, CallLayer):
        observer = under.observer if observer is None else observer
        fence = under.fence if fence is None else fence
        if under.deadline is not None:
            deadline = under.deadline if deadline is None else min(deadline, under.deadline)
    layer = CallLayer(
        under,
        observer=NO_OBSERVER if observer is None else observer,
        fence=fence,
        deadline=deadline,
    )
    return with_transport(layer)


def bounded(client: Client, deadline: float) -> Client:
    """`client` whose calls end by `deadline` (event-loop time)."""
    return layered(client, deadline=deadline)
