"""KubeVirt's live migration, simulated: a VirtualMachineInstanceMigration moves its VMI.

As in KubeVirt (staging/src/kubevirt.io/api/core/v1/types.go), a migration
names its VMI (`spec.vmiName`) and walks the phases Pending -> Scheduling ->
Scheduled -> PreparingTarget -> TargetReady -> Running -> Succeeded. Once the
target pod is scheduled, `migrationState` on the VMI and the migration carries
`sourceNode`, `targetNode` and the migration's uid; the VMI stays `Running`
on its source node throughout (the guest keeps running), and only on success
does its `nodeName` become the target and `migrationState.completed` true. A
migration of a VMI that does not exist or is not running fails (real
KubeVirt's admission webhook would refuse it).
"""

import datetime
from typing import Any

from wukong.devcluster.simulator.timing import Delays, SimulationConfig
from wukong.runtime import Informer, Object, ReconcileContext, Request, Result
from wukong.runtime.apis import VIRTUAL_MACHINE_INSTANCE_MIGRATIONS, VIRTUAL_MACHINE_INSTANCES

# Each step before the copy is quick; the copy takes `migration_delay`.
_STEPS = ("Pending", "Scheduling", "Scheduled", "PreparingTarget", "TargetReady", "Running")
_STEP_SECONDS = 0.1
FINAL_PHASES = ("Succeeded", "Failed")


def vmi_of_migration(migration: Object) -> list[Request]:
    name = (migration.get("spec") or {}).get("vmiName")
    return [Request(migration["metadata"]["namespace"], name)] if name else []


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class MigrationController:
    def __init__(self, *, config: SimulationConfig, migrations: Informer, vmis: Informer) -> None:
        self._config = config
        self._migrations = migrations
        self._vmis = vmis
        self._delays = Delays()

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        key = str(request)
        migration = self._migrations.store.get_by_name(request.namespace, request.name)
        if migration is None or migration["metadata"].get("deletionTimestamp"):
            self._delays.forget(key)
            return Result()
        phase = (migration.get("status") or {}).get("phase") or "Pending"
        if phase in FINAL_PHASES:
            return Result()
        vmi_name = (migration.get("spec") or {}).get("vmiName") or ""
        vmi = self._vmis.store.get_by_name(request.namespace, vmi_name)
        vmi_status = (vmi or {}).get("status") or {}
        if vmi is None or vmi_status.get("phase") != "Running":
            await self._set_phase(ctx, migration, "Failed")
            return Result()
        source = vmi_status.get("nodeName") or self._config.node_name
        target = (
            self._config.migration_node_name
            if source != self._config.migration_node_name
            else self._config.node_name
        )
        index = _STEPS.index(phase) if phase in _STEPS else 0
        state = {
            "migrationUid": migration["metadata"]["uid"],
            "sourceNode": source,
            "targetNode": target,
            "startTimestamp": _now(),
        }
        if phase != "Running":
            wait = self._delays.remaining(phase, key, _STEP_SECONDS)
            if wait > 0:
                return Result(requeue_after=wait)
            following = _STEPS[index + 1]
            if following == "Scheduled":  # the target pod has a node now
                await self._set_vmi(ctx, vmi, {"migrationState": state})
            await self._set_phase(ctx, migration, following, state=state)
            return Result(requeue_after=_STEP_SECONDS)
        wait = self._delays.remaining("copy", key, self._config.migration_delay)
        if wait > 0:
            return Result(requeue_after=wait)
        started = (vmi_status.get("migrationState") or {}).get("startTimestamp") or _now()
        done = {**state, "startTimestamp": started, "endTimestamp": _now(), "completed": True}
        await self._set_vmi(ctx, vmi, {"nodeName": target, "migrationState": done})
        await self._set_phase(ctx, migration, "Succeeded", state=done)
        return Result()

    async def _set_phase(
        self,
        ctx: ReconcileContext,
        migration: Object,
        phase: str,
        *,
        state: dict[str, Any] | None = None,
    ) -> None:
        status: dict[str, Any] = {"phase": phase}
        if state is not None:
            status["migrationState"] = state
        metadata = migration["metadata"]
        await ctx.client.patch_status(
            VIRTUAL_MACHINE_INSTANCE_MIGRATIONS,
            metadata["name"],
            {"status": status},
            namespace=metadata["namespace"],
        )

    async def _set_vmi(self, ctx: ReconcileContext, vmi: Object, status: dict[str, Any]) -> None:
        metadata = vmi["metadata"]
        await ctx.client.patch_status(
            VIRTUAL_MACHINE_INSTANCES,
            metadata["name"],
            {"status": status},
            namespace=metadata["namespace"],
        )
