"""What each reconcile step reports back: progress, or a problem for a person.

A `Problem` stops the Wukong from progressing until someone acts (a missing
StorageClass, a NetworkAttachmentDefinition that does not exist, a lost
claim). It becomes `Ready=False` with its reason, phase `Error` and a Warning
event, and the object is retried later, never crash-looped.

A step can also be *degraded*: something it was asked for cannot happen yet
(a disk that cannot be expanded), but nothing else has to stop for it. That
shows on the step's own condition and as a Warning event, while the VM and
the phase go on.

Every action a step takes (create a claim, expand it, update a network)
returns its outcome as a `StepResult` of its own, and the step combines them
(`StepResult.combine`): nothing reports through an argument it mutates.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

# A status entry of the step's kind (api.NetworkStatus, api.VolumeStatus).
S = TypeVar("S")


@dataclass(frozen=True)
class Problem:
    reason: str  # CamelCase, the condition's reason and the event's reason
    message: str


@dataclass(frozen=True)
class StepResult(Generic[S]):
    """One step's outcome: the status entries it observed, and whether it is done."""

    statuses: list[S] = field(default_factory=list)
    problem: Problem | None = None
    # Why the step is not done yet, when it is only waiting (no person needed).
    waiting: str | None = None
    # What cannot be done yet without holding anything else back.
    degraded: Problem | None = None
    # What this reconcile changed, as (reason, message) for Normal events.
    changes: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return self.problem is None and self.waiting is None

    @classmethod
    def combine(cls, parts: Iterable["StepResult[S]"]) -> "StepResult[S]":
        """The outcome of actions taken in order: all statuses and changes, and the
        first problem, wait and degradation."""
        parts = list(parts)
        return cls(
            statuses=[status for part in parts for status in part.statuses],
            problem=next((p.problem for p in parts if p.problem), None),
            waiting=next((p.waiting for p in parts if p.waiting), None),
            degraded=next((p.degraded for p in parts if p.degraded), None),
            changes=[change for part in parts for change in part.changes],
        )
