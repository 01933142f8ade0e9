"""Live migration: phase Migrating with the target node, and the node change is no fault."""

from tests.integration.wukong_harness import StartWukong, WatchRecorder, condition
from wukong.devcluster.simulator import SimulationConfig
from wukong.operator.api import WUKONGS
from wukong.runtime import Object
from wukong.runtime.apis import VIRTUAL_MACHINE_INSTANCE_MIGRATIONS


def _phase(obj: Object) -> str | None:
    return (obj.get("status") or {}).get("phase")


async def test_a_live_migration_shows_migrating_then_running_on_the_target(
    start_wukong: StartWukong,
) -> None:
    run = await start_wukong(simulation=SimulationConfig(migration_delay=2.0))
    await run.create("mover", {"disks": [{"name": "root", "size": "1Gi"}]})
    before = await run.wait_for("mover", lambda o: _phase(o) == "Running", what="Running")
    assert before["status"]["nodeName"] == "sim-node-1"

    async with WatchRecorder(run.client, WUKONGS, run.namespace) as wukongs:
        await run.client.create(
            VIRTUAL_MACHINE_INSTANCE_MIGRATIONS,
            {
                "apiVersion": VIRTUAL_MACHINE_INSTANCE_MIGRATIONS.api_version,
                "kind": VIRTUAL_MACHINE_INSTANCE_MIGRATIONS.kind,
                "metadata": {"name": "mover-migration", "namespace": run.namespace},
                "spec": {"vmiName": "mover"},
            },
        )
        migrating = await run.wait_for(
            "mover",
            lambda o: (
                _phase(o) == "Migrating"
                and (o["status"].get("migration") or {}).get("targetNode") is not None
            ),
            what="Migrating with a target node",
        )
        after = await run.wait_for(
            "mover",
            lambda o: _phase(o) == "Running" and o["status"].get("nodeName") == "sim-node-2",
            what="Running on the target node",
        )

    assert migrating["status"]["nodeName"] == "sim-node-1"  # the guest runs on the source
    assert migrating["status"]["migration"]["name"] == "mover-migration"
    assert migrating["status"]["migration"]["sourceNode"] == "sim-node-1"
    assert migrating["status"]["migration"]["targetNode"] == "sim-node-2"
    ready = condition(migrating, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Migrating")
    assert "migration" not in after["status"]
    assert condition(after, "Ready")["status"] == "True"
    # Never an error on the way: the node change is what a migration does.
    phases = [_phase(o) for o in wukongs.versions("mover")]
    assert "Error" not in phases and "Migrating" in phases, phases
    assert not [e for e in await run.events("mover") if e["type"] == "Warning"]
