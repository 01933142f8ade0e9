"""The webhook's pieces that need no API server: the `?timeout=` durations, the answers."""

import pytest

from wukong.runtime import Admission
from wukong.runtime._webhook import parse_go_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10.0), ("2.5s", 2.5), ("1m30s", 90.0), ("500ms", 0.5), ("1h0m0s", 3600.0)],
)
def test_go_durations_as_the_api_server_sends_timeout(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "s", "10x", "1m 30s", "-1s"])
def test_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_go_duration(text)


def test_admissions_carry_their_reason_and_warnings() -> None:
    assert Admission.allow() == Admission(True, "Allowed", "", ())
    unverified = Admission.allow("a", "b", reason="Unverified")
    assert (unverified.message, unverified.warnings) == ("a; b", ("a", "b"))
    denied = Admission.deny("StorageClassNotFound", "spec.disks[0].storageClassName: ...")
    assert not denied.allowed
