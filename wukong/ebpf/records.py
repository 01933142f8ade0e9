"""Traced cancellations, whatever the runtime that made them.

A record stands for `count` cancellations that share everything it names:
Python operators report each one (count 1); for Go programs the kernel
counts per call site and cause, and one record carries what a key grew by
since the agent last read it (`time`: the first of them, when known).
"""

import time
from dataclasses import dataclass, field


@dataclass
class Cancellation:
    pid: int
    comm: str
    runtime: str  # "python" or "go"
    reason: str  # a cancel reason of docs/contract.md (metric label)
    time: float = field(default_factory=time.time)
    count: int = 1
    # Python (Wukong) targets: what the operator reported.
    controller: str = ""
    object_key: str = ""  # "namespace/name"
    object_namespace: str = ""  # the reconciled object's namespace: the tenant
    elapsed_ms: int | None = None
    budget_ms: int | None = None
    trace_id: str = ""  # the cancelled reconcile's span, when the operator traces
    span_id: str = ""
    reported_reason: str = ""  # what the process said, when it is no contract reason
    # Go targets: what the uprobe saw.
    error: str = ""  # "deadline_exceeded", "canceled" or "other"
    root: bool = True  # False: propagated from a parent context
    cause: str = ""
    caller: str = ""
    stack: list[str] = field(default_factory=list)
    # Attribution.
    node: str = ""
    namespace: str = ""
    pod: str = ""
    container: str = ""

    @property
    def where(self) -> str:
        """What an engineer wants first: the object (Python) or the calling function (Go)."""
        if self.controller:
            return f"{self.controller} {self.object_key}"
        if self.reason == "unnamed":  # counted past the kernel's naming budget
            return f"(not named: {self.error})"
        return self.caller
