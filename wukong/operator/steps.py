"""What each reconcile step reports back: progress, or a problem for a person.

A `Problem` stops the Wukong from progressing until someone acts (a missing
StorageClass, a NetworkAttachmentDefinition that does not exist, a lost
claim). It becomes `Ready=False` with its reason, phase `Error` and a Warning
event, and the object is retried later, never crash-looped.

A step can also be *degraded*: something it was asked for cannot happen yet
(a disk that cannot be expanded), but nothing else has to stop for it. That
shows on the step's own condition and as a Warning event, while the VM and
the phase go on.
"""

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Problem:
    reason: str  # CamelCase, the condition's reason and the event's reason
    message: str


@dataclass
class StepResult:
    """One step's outcome: the status entries it observed, and whether it is done."""

    statuses: list[dict[str, Any]] = field(default_factory=list)
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

    def degrade(self, problem: Problem) -> None:
        self.degraded = self.degraded or problem
