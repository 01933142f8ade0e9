"""A WukongSet scaled up and down repeatedly, its template changed halfway, while
`wukong run` is SIGKILLed at random moments: it converges to its last replicas, every
member on the new template, with no extra member and nothing orphaned."""

import asyncio
import contextlib
import random
from pathlib import Path

from tests.integration.test_wukong_chaos import CHILD_KINDS, Operator, _status_problems, wukong_run
from tests.integration.test_wukongset import _set
from tests.integration.wukong_harness import StartWukong, WatchRecorder, WukongRun
from tests.polling import eventually
from wukong.devcluster import ControlPlane
from wukong.devcluster.simulator import SimulationConfig
from wukong.operator.api import WUKONG_LABEL, WUKONGS
from wukong.operator.wukongset_api import WUKONGSET_LABEL, WUKONGSETS
from wukong.runtime import Object

# Each change lands while the operator is being killed; the last one is what stays.
REPLICAS = [6, 2, 8, 1, 5, 0, 7, 3]
KILLS = 8
# The template changes after this many scale changes: a rollout among the kills.
TEMPLATE_CHANGE_AFTER = 3
CPU = 2


async def _scale(run: WukongRun, rng: random.Random) -> None:
    for done, replicas in enumerate(REPLICAS):
        spec: Object = {"replicas": replicas}
        if done == TEMPLATE_CHANGE_AFTER:
            spec["template"] = {"spec": {"cpu": CPU}}
        await run.client.patch(WUKONGSETS, "web", {"spec": spec}, namespace=run.namespace)
        # Fault timing, not a wait for a condition: random moments are the point.
        await asyncio.sleep(rng.uniform(0.3, 2.0))


async def _kill(operator: Operator, rng: random.Random) -> None:
    for _ in range(KILLS):
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        operator.kill()


async def _problems(run: WukongRun, replicas: int) -> list[str]:
    """What still differs from the converged state (empty when converged)."""
    wukongs = (await run.client.list(WUKONGS, namespace=run.namespace))["items"]
    wukong_set = await run.client.get(WUKONGSETS, "web", namespace=run.namespace)
    problems = []
    if len(wukongs) != replicas:
        names = sorted(w["metadata"]["name"] for w in wukongs)
        problems.append(f"{len(wukongs)} Wukongs, not {replicas}: {names}")
    for wukong in wukongs:
        metadata = wukong["metadata"]
        owners = [
            ref["uid"] for ref in metadata.get("ownerReferences") or [] if ref.get("controller")
        ]
        if owners != [wukong_set["metadata"]["uid"]]:
            problems.append(f"{metadata['name']}: not controlled by the set")
        if (metadata.get("labels") or {}).get(WUKONGSET_LABEL) != "web":
            problems.append(f"{metadata['name']}: not labelled as a member")
        problems += [f"{metadata['name']}: {p}" for p in _status_problems(wukong)]
        if wukong["spec"]["cpu"] != CPU:
            problems.append(f"{metadata['name']}: not on the new template")
    status = wukong_set.get("status") or {}
    counts = (status.get("replicas"), status.get("readyReplicas"), status.get("updatedReplicas"))
    if counts != (replicas, replicas, replicas):
        problems.append(f"set status replicas, ready, updated: {counts}")
    names = {w["metadata"]["name"] for w in wukongs}
    for resource in CHILD_KINDS:
        for item in (await run.client.list(resource, namespace=run.namespace))["items"]:
            metadata = item["metadata"]
            if (metadata.get("labels") or {}).get(WUKONG_LABEL) not in names:
                problems.append(f"orphaned {resource.kind} {metadata['name']}")
    return problems


async def test_scaling_up_and_down_through_operator_kills_converges_without_orphans(
    control_plane: ControlPlane, start_wukong: StartWukong, tmp_path: Path
) -> None:
    simulation = SimulationConfig(
        bind_delay=0.1, resize_delay=0.1, import_delay=0.3, schedule_delay=0.1, boot_delay=0.1
    )
    run = await start_wukong(simulation=simulation)
    await run.stop_operator()  # the operator under test is the `wukong run` process
    operator = wukong_run(control_plane.kubeconfig, run.namespace, tmp_path / "operator.log")
    await run.client.create(WUKONGSETS, _set(run.namespace, "web", 3))
    supervisor = asyncio.create_task(operator.supervise())
    rng = random.Random(7)
    try:
        async with WatchRecorder(run.client, WUKONGS, run.namespace) as watch:
            await asyncio.gather(_scale(run, rng), _kill(operator, rng))
            # Up again after the last kill: what converges is what it does next.
            await eventually(
                lambda: operator.starts == KILLS + 1, timeout=10, what="the last restart"
            )
            latest: list[str] = []

            async def converged() -> bool:
                latest[:] = await _problems(run, REPLICAS[-1])
                return not latest

            try:
                await eventually(converged, timeout=120, interval=0.5, what="convergence")
            except AssertionError as error:
                raise AssertionError(f"{error}: {latest[:10]}") from None
        # Never an extra member, even for a moment: at no point of the watch were more
        # members live (not being deleted) than the most replicas ever asked for.
        # Members being deleted do not count: their ordinals are still taken, so a
        # scale-out meanwhile makes new ones further up, as a ReplicaSet replaces
        # terminating pods.
        live: set[str] = set()
        most = 0
        for kind, obj in watch.events:
            name = obj["metadata"]["name"]
            if kind == "DELETED" or obj["metadata"].get("deletionTimestamp"):
                live.discard(name)
            else:
                live.add(name)
            most = max(most, len(live))
        assert most <= max(REPLICAS), most
    finally:
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor
        operator.stop()
