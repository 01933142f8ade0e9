"""Simulated durations and failure injection for the dev cluster's stand-ins."""

import asyncio
from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class SimulationConfig:
    """How slow (and how broken) the simulated infrastructure is.

    Each delay runs from when the simulator first sees the step, and is waited
    out by requeueing, as a real controller would.
    """

    bind_delay: float = 0.3  # PVC Pending -> Bound (Immediate classes)
    resize_delay: float = 0.3  # larger request -> larger capacity
    import_delay: float = 1.0  # DataVolume ImportInProgress -> Succeeded
    schedule_delay: float = 0.2  # VMI Scheduling -> Scheduled
    boot_delay: float = 0.5  # VMI Scheduled -> Running
    migration_delay: float = 1.0  # live migration: target pod scheduled -> Succeeded
    node_name: str = "sim-node-1"
    # Where a live migration moves a VMI from `node_name` (and back).
    migration_node_name: str = "sim-node-2"
    # Image URLs whose import fails; "namespace/name" of VMs whose boot fails.
    failing_images: frozenset[str] = field(default_factory=frozenset)
    failing_vms: frozenset[str] = field(default_factory=frozenset)


class Delays:
    """Remembers when each (step, object) was first seen, to make steps take time."""

    def __init__(self) -> None:
        self._first_seen: dict[tuple[str, str], float] = {}

    def remaining(self, step: str, key: str, seconds: float) -> float:
        now = asyncio.get_running_loop().time()
        first = self._first_seen.setdefault((step, key), now)
        return max(0.0, first + seconds - now)

    def forget(self, key: str) -> None:
        for entry in [entry for entry in self._first_seen if entry[1] == key]:
            del self._first_seen[entry]
