"""Per-namespace scopes: every reconcile runs inside its namespace's scope.

A scope is to a namespace what a parent context is to its reconciles in Go
(one context per tenant, each reconcile's derived from it): while a
reconcile runs it is a member of the scope of its request's namespace, and
cancelling that scope cancels exactly its members, with one reason, through
the same `cancel` each controller uses for deadlines and shutdown (the reason
is recorded first, CANCEL_REQUESTED is reported, a reconcile that does not
unwind is reported STUCK).

The manager cancels a namespace's scope when the namespace is deleted (its
deletionTimestamp is set, or it is gone), with reason `deleted`: the objects
those reconciles work for are being deleted with it. Nothing outside the
namespace is touched. A cancelled reconcile is requeued like any other; when it
runs again it sees its object being deleted, so finalizers still run and the
namespace can finish terminating. The scope holds no state between
reconciles: a namespace with nothing in flight costs nothing.
"""

from collections.abc import Callable

from wukong.runtime._cancellation import CancelReason
from wukong.runtime._context import ReconcileContext

Cancel = Callable[[ReconcileContext, CancelReason], None]


class NamespaceScopes:
    """The reconciles in flight, by namespace; one instance per manager."""

    def __init__(self) -> None:
        self._members: dict[str, dict[ReconcileContext, Cancel]] = {}

    def enter(self, ctx: ReconcileContext, cancel: Cancel) -> None:
        """`ctx` runs in its namespace's scope until `leave`; `cancel` stops it with a reason."""
        self._members.setdefault(ctx.request.namespace, {})[ctx] = cancel

    def leave(self, ctx: ReconcileContext) -> None:
        namespace = ctx.request.namespace
        members = self._members.get(namespace)
        if members is None:
            return
        members.pop(ctx, None)
        if not members:
            del self._members[namespace]

    def cancel(self, namespace: str, reason: CancelReason) -> int:
        """Cancel every reconcile in flight in `namespace` with `reason`; how many there were."""
        members = list(self._members.get(namespace, {}).items())
        for ctx, cancel in members:
            cancel(ctx, reason)
        return len(members)

    def namespaces(self) -> list[str]:
        """The namespaces with reconciles in flight."""
        return list(self._members)

    def in_flight(self, namespace: str) -> int:
        return len(self._members.get(namespace, {}))
