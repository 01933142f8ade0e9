"""Status conditions with Kubernetes semantics (apimachinery's meta.SetStatusCondition).

`set_condition` replaces the condition of the same type, and moves
`lastTransitionTime` only when the status actually changes: a reconcile that
rewrites `Ready=False` every 5 s must not make the condition look new each
time. Conditions are plain dicts in `status.conditions`, as stored.

`updated_conditions` is the one place the controller builds a status's
conditions: from the ones the view read, with some set anew.
"""

import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from wukong.operator.api import Condition
from wukong.operator.schema import to_json

READY = "Ready"
NETWORKS_CONFIGURED = "NetworksConfigured"
VOLUMES_BOUND = "VolumesBound"

Conditions = list[dict[str, Any]]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Conditions,
    *,
    type: str,
    status: bool | None,
    reason: str,
    message: str,
    observed_generation: int | None = None,
    now: str | None = None,
) -> bool:
    """Set the condition `type` in place; True if anything changed.

    `status` None means Unknown. `reason` is CamelCase, `message` for people.
    """
    value = {True: "True", False: "False", None: "Unknown"}[status]
    new: dict[str, Any] = {"type": type, "status": value, "reason": reason, "message": message}
    if observed_generation is not None:
        new["observedGeneration"] = observed_generation
    for index, old in enumerate(conditions):
        if old.get("type") != type:
            continue
        transitioned = old.get("status") != value
        new["lastTransitionTime"] = (
            (now or _now()) if transitioned else old.get("lastTransitionTime") or now or _now()
        )
        if old == new:
            return False
        conditions[index] = new
        return True
    new["lastTransitionTime"] = now or _now()
    conditions.append(new)
    return True


@dataclass(frozen=True)
class ConditionUpdate:
    """A condition to set: `status` None is Unknown."""

    type: str
    status: bool | None
    reason: str
    message: str


def updated_conditions(
    current: Iterable[Condition],
    updates: Iterable[ConditionUpdate],
    *,
    observed_generation: int | None,
    now: str | None = None,
) -> Conditions:
    """`current` with each of `updates` set (in order), as the status stores them."""
    conditions: Conditions = [to_json(condition) for condition in current]
    for update in updates:
        set_condition(
            conditions,
            type=update.type,
            status=update.status,
            reason=update.reason,
            message=update.message,
            observed_generation=observed_generation,
            now=now,
        )
    return conditions


def find_condition(conditions: Conditions, type: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type), None)


def is_true(conditions: Conditions, type: str) -> bool:
    condition = find_condition(conditions, type)
    return condition is not None and condition.get("status") == "True"
