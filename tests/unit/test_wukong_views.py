"""The Wukong as the controller reads it: typed, frozen views from the CRD's own types."""

import dataclasses

import pytest

from wukong.operator.api import Condition, DiskSpec, NetworkSpec, WukongStatus
from wukong.operator.conditions import READY, ConditionUpdate, updated_conditions
from wukong.operator.schema import from_json, to_json
from wukong.operator.steps import Problem, StepResult
from wukong.operator.views import parse_wukong

STORED = {
    "metadata": {
        "name": "web",
        "namespace": "ns",
        "uid": "u1",
        "generation": 3,
        "resourceVersion": "42",
        "finalizers": ["vm.novasphere.dev/finalizer"],
    },
    "spec": {
        "memory": "2Gi",
        "networks": [{"name": "data", "config": "{}"}, {"name": "lan", "nadName": "shared"}],
        "disks": [{"name": "root", "size": "10Gi", "image": "docker://x", "unknown": 1}],
    },
    "status": {
        "phase": "Running",
        "migration": {"name": "m", "phase": "Running"},
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Running",
                "message": "running on n1",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": 3,
            }
        ],
    },
}


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


def test_conditions_keep_their_transition_time_unless_the_status_changes() -> None:
    def ready(status: bool, message: str) -> dict[str, object]:
        (condition,) = updated_conditions(
            parse_wukong(STORED).conditions,
            [ConditionUpdate(READY, status, "Running", message)],
            observed_generation=4,
            now="2026-02-02T00:00:00Z",
        )
        return condition

    same = ready(True, "running on n2")
    assert same["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert (same["message"], same["observedGeneration"]) == ("running on n2", 4)
    flipped = ready(False, "stopped")
    assert (flipped["lastTransitionTime"], flipped["status"]) == ("2026-02-02T00:00:00Z", "False")


def test_combined_outcomes_keep_order_and_the_first_of_each_kind() -> None:
    first, second = Problem("A", "a"), Problem("B", "b")
    combined = StepResult.combine(
        [
            StepResult([{"name": "one"}], waiting="w1", changes=[("Created", "one")]),
            StepResult([{"name": "two"}], first, degraded=second, changes=[("Updated", "two")]),
            StepResult(problem=second, waiting="w2", degraded=first),
        ]
    )
    assert combined.statuses == [{"name": "one"}, {"name": "two"}]
    assert (combined.problem, combined.waiting, combined.degraded) == (first, "w1", second)
    assert combined.changes == [("Created", "one"), ("Updated", "two")]
    assert not combined.ready and StepResult.combine([]).ready
