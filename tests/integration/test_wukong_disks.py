"""Disks in every state real CDI and storage put them in.

- An image disk on a WaitForFirstConsumer class: CDI (with volume
  populators) reports `PendingPopulation` until the VM's launcher consumes the
  claim, so the VM must be created first; the import runs after, with progress.
- Expansion that cannot happen (a class without `allowVolumeExpansion`, a
  claim not bound yet) is reported on `VolumesBound` while the rest goes on,
  and is retried when it can succeed. The real API server, not the simulator,
  refuses those expansions; the tests check that first.
"""

import re
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from tests.integration.wukong_harness import (
    WATCH_EVENT,
    StartWukong,
    WatchRecorder,
    WukongRun,
    condition,
    started_by,
)
from wukong.devcluster.simulator import WAIT_FOR_FIRST_CONSUMER_CLASS, SimulationConfig
from wukong.devcluster.simulator.crds import PROVISIONER
from wukong.operator.api import WUKONGS
from wukong.runtime import ApiError, Client, Object
from wukong.runtime.apis import DATA_VOLUMES, VIRTUAL_MACHINE_INSTANCES
from wukong.runtime.resources import PERSISTENT_VOLUME_CLAIMS, STORAGE_CLASSES

IMAGE = "docker://quay.io/containerdisks/fedora:40"
BRIDGE = '{"cniVersion": "0.3.1", "type": "bridge"}'


def _phase(obj: Object) -> str | None:
    return (obj.get("status") or {}).get("phase")


def _revision(obj: Object) -> int:
    return int(obj["metadata"]["resourceVersion"])


def _volume(obj: Object, index: int = 0) -> Object:
    return ((obj.get("status") or {}).get("volumes") or [{}])[index]


async def test_an_image_disk_on_a_wait_for_first_consumer_class_reaches_running(
    start_wukong: StartWukong,
) -> None:
    run = await start_wukong(simulation=SimulationConfig(import_delay=2.0))
    spec = {
        "disks": [
            {
                "name": "root",
                "size": "2Gi",
                "image": IMAGE,
                "storageClassName": WAIT_FOR_FIRST_CONSUMER_CLASS,
            }
        ]
    }
    async with (
        WatchRecorder(run.client, WUKONGS, run.namespace) as wukongs,
        WatchRecorder(run.client, DATA_VOLUMES, run.namespace) as data_volumes,
        WatchRecorder(run.client, VIRTUAL_MACHINE_INSTANCES, run.namespace) as instances,
    ):
        await run.create("lazy", spec)
        final = await run.wait_for("lazy", lambda o: _phase(o) == "Running", what="Running")

    # CDI as the simulator plays it: PendingPopulation first, and the import
    # scheduled only after the launcher (the VMI scheduling) consumes the claim;
    # etcd revisions order the two objects' writes.
    phases = [_phase(o) for o in data_volumes.versions("lazy-root")]
    assert "PendingPopulation" in phases and "ImportScheduled" in phases, phases
    assert phases.index("PendingPopulation") < phases.index("ImportScheduled"), phases
    scheduled = next(
        o for o in data_volumes.versions("lazy-root") if _phase(o) == "ImportScheduled"
    )
    consumer = next(o for o in instances.versions("lazy") if _phase(o) == "Scheduling")
    assert _revision(consumer) < _revision(scheduled)

    seen = [
        (o["status"].get("vmName"), _volume(o)) for o in wukongs.versions("lazy") if "status" in o
    ]
    # The VM was created while the DataVolume only waited for its consumer...
    assert any(
        vm == "lazy" and volume.get("phase") == "PendingPopulation" and volume["bound"]
        for vm, volume in seen
    ), seen
    # ...and the import ran afterwards, its progress reported on the way.
    progress = [
        volume["progress"] for _, volume in seen if volume.get("phase") == "ImportInProgress"
    ]
    assert progress, seen
    percentages = [float(re.fullmatch(r"([0-9.]+)%", p).group(1)) for p in progress]  # type: ignore[union-attr]
    assert all(0 <= value < 100 for value in percentages), progress
    assert _volume(final) == {
        "name": "root",
        "claimName": "lazy-root",
        "bound": True,
        "phase": "Succeeded",
        "progress": "100.0%",
        "size": "2Gi",
        "capacity": "2Gi",
    }
    assert condition(final, "VolumesBound")["status"] == "True"


@pytest.fixture
async def fixed_class(client: Client) -> AsyncIterator[str]:
    """A StorageClass that does not allow volume expansion (yet)."""
    name = f"fixed-{uuid.uuid4().hex[:8]}"
    await client.create(
        STORAGE_CLASSES,
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": name},
            "provisioner": PROVISIONER,
            "volumeBindingMode": "Immediate",
            "allowVolumeExpansion": False,
        },
    )
    yield name
    await client.delete(STORAGE_CLASSES, name)


async def _grow(run: WukongRun, name: str, size: str) -> None:
    disks = (await run.get(name))["spec"]["disks"]
    disks[0]["size"] = size
    await run.client.patch(WUKONGS, name, {"spec": {"disks": disks}}, namespace=run.namespace)


async def _server_refuses_growing(run: WukongRun, claim: str, size: str) -> int:
    patch = {"spec": {"resources": {"requests": {"storage": size}}}}
    with pytest.raises(ApiError) as refused:
        await run.client.patch(PERSISTENT_VOLUME_CLAIMS, claim, patch, namespace=run.namespace)
    return refused.value.status


async def test_expansion_on_a_class_that_forbids_it_is_reported_and_retried_when_allowed(
    start_wukong: StartWukong, fixed_class: str
) -> None:
    run = await start_wukong()
    spec = {
        "networks": [{"name": "data", "config": BRIDGE}],
        "disks": [{"name": "root", "size": "1Gi", "storageClassName": fixed_class}],
    }
    await run.create("fixed", spec)
    await run.wait_for("fixed", lambda o: _phase(o) == "Running", what="Running")
    # The API server itself (PersistentVolumeClaimResize admission) refuses.
    assert await _server_refuses_growing(run, "fixed-root", "3Gi") == 403

    await _grow(run, "fixed", "3Gi")
    stuck = await run.wait_for(
        "fixed",
        lambda o: condition(o, "VolumesBound").get("reason") == "ExpansionNotSupported",
        what="VolumesBound to report ExpansionNotSupported",
    )
    # Status is written for the new generation; the VM runs on; networks are fine.
    assert stuck["status"]["observedGeneration"] == stuck["metadata"]["generation"] == 2
    assert stuck["status"]["phase"] == "Running"
    assert condition(stuck, "Ready")["status"] == "True"
    assert condition(stuck, "NetworksConfigured")["status"] == "True"
    assert condition(stuck, "VolumesBound")["status"] == "False"
    assert fixed_class in condition(stuck, "VolumesBound")["message"]
    assert (_volume(stuck)["size"], _volume(stuck)["capacity"]) == ("3Gi", "1Gi")
    assert await run.warnings("fixed") == ["ExpansionNotSupported"]

    # The class starts allowing expansion: its watch retries, nothing else has to happen.
    allowed = time.time()
    await run.client.patch(STORAGE_CLASSES, fixed_class, {"allowVolumeExpansion": True})
    grown = await run.wait_for(
        "fixed",
        lambda o: (
            _volume(o).get("capacity") == "3Gi"
            and condition(o, "VolumesBound").get("status") == "True"
        ),
        what="the claim to be expanded to 3Gi",
    )
    assert grown["status"]["phase"] == "Running"
    claim = await run.client.get(PERSISTENT_VOLUME_CLAIMS, "fixed-root", namespace=run.namespace)
    assert claim["spec"]["resources"]["requests"]["storage"] == "3Gi"
    # The StorageClass event (the storageClassName index) did it, not a pending requeue.
    call = await run.first_call("patch", "persistentvolumeclaims", since=allowed)
    assert started_by(call) == WATCH_EVENT


async def test_expanding_an_unbound_wait_for_first_consumer_claim_waits_until_it_binds(
    start_wukong: StartWukong,
) -> None:
    run = await start_wukong()
    spec = {
        "running": False,  # no VM pod: the claim stays unbound
        "disks": [
            {"name": "data", "size": "1Gi", "storageClassName": WAIT_FOR_FIRST_CONSUMER_CLASS}
        ],
    }
    await run.create("later", spec)
    await run.wait_for(
        "later", lambda o: condition(o, "Ready").get("reason") == "Stopped", what="Stopped"
    )
    # PVC validation refuses to change an unbound claim's spec.
    assert await _server_refuses_growing(run, "later-data", "2Gi") == 422

    await _grow(run, "later", "2Gi")
    pending = await run.wait_for(
        "later",
        lambda o: condition(o, "VolumesBound").get("reason") == "ExpansionPending",
        what="VolumesBound to report ExpansionPending",
    )
    assert pending["status"]["observedGeneration"] == pending["metadata"]["generation"]
    assert pending["status"]["vmName"] == "later"
    assert (_volume(pending)["size"], _volume(pending).get("capacity")) == ("2Gi", None)

    await run.client.patch(WUKONGS, "later", {"spec": {"running": True}}, namespace=run.namespace)
    done = await run.wait_for(
        "later",
        lambda o: _phase(o) == "Running" and _volume(o).get("capacity") == "2Gi",
        what="the claim to bind and then grow to 2Gi",
    )
    assert condition(done, "VolumesBound")["status"] == "True"
