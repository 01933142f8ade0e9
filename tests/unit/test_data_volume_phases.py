"""Every DataVolume phase CDI defines, as the Wukong controller reads it.

The phases are CDI's `DataVolumePhase` constants (pkg/apis/core/v1beta1/types.go).
Ready, as KubeVirt's IsSucceededOrPendingPopulation counts it: `Succeeded`, and
the phases that only wait for their consumer (the VM's pod). `Failed` is a
problem with CDI's message; every other phase is progress the status shows.
"""

import pytest

from wukong.operator.api import DiskSpec
from wukong.operator.storage import DiskReconciler, _Readiness
from wukong.runtime import Store

READY = ["Succeeded", "PendingPopulation", "WaitForFirstConsumer"]
IN_PROGRESS = [
    "Pending",
    "PVCBound",
    "ImportScheduled",
    "ImportInProgress",
    "CloneScheduled",
    "CloneInProgress",
    "SnapshotForSmartCloneInProgress",
    "CloneFromSnapshotSourceInProgress",
    "SmartClonePVCInProgress",
    "CSICloneInProgress",
    "ExpansionInProgress",
    "NamespaceTransferInProgress",
    "UploadScheduled",
    "UploadReady",
    "PrepClaimInProgress",
    "RebindInProgress",
    "Paused",
    "Unknown",
]
DISK = DiskSpec(name="root", size="10Gi", image="docker://example/disk")


def _readiness(phase: str, **status: object) -> _Readiness:
    disks = DiskReconciler(claims=Store(), data_volumes=Store(), storage_classes=Store())
    data_volume = {"metadata": {"name": "web-root"}, "status": {"phase": phase, **status}}
    return disks._data_volume_readiness(DISK, data_volume)


@pytest.mark.parametrize("phase", READY)
def test_ready_or_only_waiting_for_its_consumer(phase: str) -> None:
    readiness = _readiness(phase)
    assert readiness.ready and readiness.problem is None and readiness.waiting is None


@pytest.mark.parametrize("phase", IN_PROGRESS)
def test_every_other_phase_is_shown_as_progress(phase: str) -> None:
    readiness = _readiness(phase, progress="42.00%")
    assert not readiness.ready and readiness.problem is None
    assert readiness.waiting == f"DataVolume web-root is {phase} (42.00%)"


def test_failed_is_a_problem_with_cdis_message() -> None:
    message = "Unable to connect to http data source"
    readiness = _readiness("Failed", conditions=[{"type": "Running", "message": message}])
    assert not readiness.ready
    assert readiness.problem is not None
    assert readiness.problem.reason == "ImportFailed"
    assert readiness.problem.message == f"disk root: {message}"
