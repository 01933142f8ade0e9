"""The names Wukong derives, and what it says about a stored Wukong whose names cannot fit."""

from wukong.operator.names import MAX_LABEL, child_name, is_label_value, name_problem
from wukong.operator.views import WukongView, parse_wukong
from wukong.runtime._events import event_name


def _wukong(name: str, **spec: object) -> WukongView:
    return parse_wukong({"metadata": {"name": name, "namespace": "ns"}, "spec": spec})


def test_derived_names_split_at_their_last_dash() -> None:
    # Child names have no '-', so two Wukongs never share one.
    assert child_name("a-b", "c") == "a-b-c"
    assert child_name("a-b", "c").rpartition("-") == ("a-b", "-", "c")


def test_label_values() -> None:
    assert is_label_value("a" * MAX_LABEL)
    assert not is_label_value("a" * (MAX_LABEL + 1))
    assert not is_label_value("dotted.name")
    assert not is_label_value("-leading")


def test_a_stored_wukong_with_names_that_cannot_fit_is_reported() -> None:
    assert name_problem(_wukong("ok", disks=[{"name": "root", "size": "1Gi"}])) is None
    reason, message = name_problem(_wukong("x" * 70)) or ("", "")
    assert reason == "InvalidName" and "63" in message
    reason, message = name_problem(_wukong("x" * 60, disks=[{"name": "root", "size": "1Gi"}])) or (
        "",
        "",
    )
    assert reason == "NameTooLong" and "disk root" in message
    # A reused network derives no name.
    assert name_problem(_wukong("x" * 60, networks=[{"name": "net", "nadName": "n"}])) is None


def test_event_names_stay_valid_for_the_longest_object_names() -> None:
    name = event_name("a" * 253)
    assert len(name) <= 253
    assert event_name("b" * 239 + "-" + "c" * 13).split(".")[0][-1] != "-"
