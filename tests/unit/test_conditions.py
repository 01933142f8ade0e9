"""Conditions keep their transition time unless their status changes: as dicts, and as the
controller updates a stored Wukong's."""

from tests.unit.stored_wukong import STORED
from wukong.operator.conditions import (
    READY,
    ConditionUpdate,
    find_condition,
    is_true,
    set_condition,
    updated_conditions,
)
from wukong.operator.views import parse_wukong


def test_transition_time_moves_only_on_status_change() -> None:
    conditions: list[dict[str, object]] = []
    assert set_condition(
        conditions,
        type=READY,
        status=False,
        reason="VolumesPending",
        message="waiting for disk root",
        now="2026-01-01T00:00:00Z",
    )
    assert not set_condition(
        conditions,
        type=READY,
        status=False,
        reason="VolumesPending",
        message="waiting for disk root",
        now="2026-01-01T00:00:05Z",
    )
    assert set_condition(
        conditions,
        type=READY,
        status=False,
        reason="StorageClassNotFound",
        message="storage class fast not found",
        now="2026-01-01T00:00:10Z",
    )
    ready = find_condition(conditions, READY)
    assert ready is not None and ready["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert ready["reason"] == "StorageClassNotFound"

    set_condition(
        conditions,
        type=READY,
        status=True,
        reason="Running",
        message="VM running",
        observed_generation=3,
        now="2026-01-01T00:01:00Z",
    )
    ready = find_condition(conditions, READY)
    assert ready is not None and ready["lastTransitionTime"] == "2026-01-01T00:01:00Z"
    assert ready["observedGeneration"] == 3
    assert is_true(conditions, READY) and len(conditions) == 1


def test_unknown_status() -> None:
    conditions: list[dict[str, object]] = []
    set_condition(conditions, type="VolumesBound", status=None, reason="Checking", message="")
    assert conditions[0]["status"] == "Unknown"
    assert not is_true(conditions, "VolumesBound")


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
