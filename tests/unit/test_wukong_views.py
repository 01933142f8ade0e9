"""The Wukong as the controller reads it: typed, frozen views from the CRD's own types."""

import dataclasses

import pytest

from tests.unit.stored_wukong import STORED
from wukong.operator.api import Condition, DiskSpec, NetworkSpec, WukongStatus
from wukong.operator.schema import from_json, to_json
from wukong.operator.views import parse_wukong


def test_a_stored_wukong_reads_into_the_crd_types_with_their_defaults() -> None:
    wukong = parse_wukong(STORED)
    assert (wukong.name, wukong.namespace, wukong.uid, wukong.generation) == ("web", "ns", "u1", 3)
    assert wukong.has_finalizer and wukong.deletion_timestamp is None
    # Absent fields take the defaults the CRD declares.
    assert (wukong.spec.cpu, wukong.spec.memory, wukong.spec.running) == (1, "2Gi", True)
    assert wukong.spec.networks == [
        NetworkSpec(name="data", config="{}"),
        NetworkSpec(name="lan", nad_name="shared"),
    ]
    assert wukong.spec.disks == [DiskSpec(name="root", size="10Gi", image="docker://x")]
    assert wukong.status.migration is not None and wukong.status.migration.phase == "Running"
    assert wukong.conditions[0].last_transition_time == "2026-01-01T00:00:00Z"
    assert parse_wukong({"metadata": {"name": "new"}}).status == WukongStatus()


def test_views_are_frozen() -> None:
    wukong = parse_wukong(STORED)
    with pytest.raises(dataclasses.FrozenInstanceError):
        wukong.spec.disks[0].size = "20Gi"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        wukong.name = "other"  # type: ignore[misc]


def test_what_is_read_writes_back_as_stored() -> None:
    condition = STORED["status"]["conditions"][0]  # type: ignore[index]
    assert to_json(from_json(Condition, condition)) == condition
    network = {"name": "lan", "nadName": "shared"}
    assert to_json(from_json(NetworkSpec, network)) == network
