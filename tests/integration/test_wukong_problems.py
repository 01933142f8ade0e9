"""Specs that pass admission but cannot work: each ends as a condition a person can act on.

Every case gets `Ready=False` with a specific reason, phase `Error` and a
Warning event of that reason; the operator keeps running and logs no ERROR.
(Specs rejected at admission are covered in test_wukong_crd.py.)
"""

import logging

import pytest

from tests.integration.wukong_harness import StartWukong, WukongRun, condition
from wukong.devcluster.simulator import SimulationConfig
from wukong.runtime import Object
from wukong.runtime.resources import PERSISTENT_VOLUME_CLAIMS

FAILING_IMAGE = "docker://registry.example/does-not-exist:1"

# name -> (spec, condition type, reason)
CASES: dict[str, tuple[Object, str, str]] = {
    "no-nad": (
        {"networks": [{"name": "net", "nadName": "missing"}]},
        "NetworksConfigured",
        "NetworkNotFound",
    ),
    "bad-cni": (
        {"networks": [{"name": "net", "config": "bridge please"}]},
        "NetworksConfigured",
        "InvalidNetworkConfig",
    ),
    "taken-nad": (
        {"networks": [{"name": "net", "config": '{"type": "bridge"}'}]},
        "NetworksConfigured",
        "NameConflict",
    ),
    "no-class": (
        {"disks": [{"name": "root", "size": "1Gi", "storageClassName": "gold"}]},
        "VolumesBound",
        "StorageClassNotFound",
    ),
    "bad-image": (
        {"disks": [{"name": "root", "size": "1Gi", "image": "ftp://example/disk.img"}]},
        "VolumesBound",
        "InvalidImage",
    ),
    "no-import": (
        {"disks": [{"name": "root", "size": "1Gi", "image": FAILING_IMAGE}]},
        "VolumesBound",
        "ImportFailed",
    ),
    "taken-claim": (
        {"disks": [{"name": "root", "size": "1Gi"}]},
        "VolumesBound",
        "NameConflict",
    ),
    "crash": ({"disks": [{"name": "root", "size": "1Gi"}]}, "Ready", "VirtualMachineFailed"),
}


async def _occupy_names(run: WukongRun) -> None:
    """Objects with the names Wukong would create, belonging to someone else."""
    await run.create_nad("taken-nad-net")
    await run.client.create(
        PERSISTENT_VOLUME_CLAIMS,
        {
            "metadata": {"name": "taken-claim-root", "namespace": run.namespace},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )


def _reported(obj: Object, type: str, reason: str) -> bool:
    return bool(
        condition(obj, type).get("reason") == reason
        and condition(obj, "Ready").get("status") == "False"
        and condition(obj, "Ready").get("reason") == reason
        and obj["status"].get("phase") == "Error"
    )


async def test_each_bad_spec_is_reported_with_a_reason_and_an_event(
    start_wukong: StartWukong, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wukong")
    run = await start_wukong(
        simulation=SimulationConfig(
            failing_images=frozenset({FAILING_IMAGE}),
            failing_vms=frozenset({f"{namespace}/crash"}),
        )
    )
    await _occupy_names(run)
    for name, (spec, _, _) in CASES.items():
        await run.create(name, spec)
    for name, (_, type, reason) in CASES.items():
        obj = await run.wait_for(
            name,
            lambda obj, type=type, reason=reason: _reported(obj, type, reason),
            what=f"{name} to report {type}={reason}",
        )
        assert obj["status"]["conditions"], name

        async def warned(name: str = name) -> bool:
            return any(e["type"] == "Warning" for e in await run.events(name))

        # The Event is written after the status (best effort): wait for it.
        await run.wait_until(warned, what=f"a Warning event on {name}")
        warnings = [e for e in await run.events(name) if e["type"] == "Warning"]
        assert [e["reason"] for e in warnings] == [reason], name
        assert warnings[0]["message"] == condition(obj, "Ready")["message"]

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def test_a_lost_claim_is_reported(start_wukong: StartWukong) -> None:
    run = await start_wukong()
    await run.create("lost", {"disks": [{"name": "root", "size": "1Gi"}]})
    await run.wait_for(
        "lost", lambda obj: (obj.get("status") or {}).get("phase") == "Running", what="lost to run"
    )
    # What the PV controller does when the bound volume disappears.
    await run.client.patch_status(
        PERSISTENT_VOLUME_CLAIMS,
        "lost-root",
        {"status": {"phase": "Lost"}},
        namespace=run.namespace,
    )
    obj = await run.wait_for(
        "lost",
        lambda obj: _reported(obj, "VolumesBound", "VolumeLost"),
        what="lost to report VolumeLost",
    )
    assert "lost its volume" in condition(obj, "Ready")["message"]
