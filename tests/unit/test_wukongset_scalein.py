"""Which members a WukongSet removes when it scales in: never a migrating one."""

from wukong.operator.scalein import Member, choose_scale_in, removal_order
from wukong.operator.schema import from_json
from wukong.operator.wukongset_api import WukongSetSpec
from wukong.operator.wukongset_names import member_name, member_ordinal, set_name_problem


def _member(ordinal: int, *, ready: bool = True, migrating: str | None = None) -> Member:
    return Member(
        name=f"web-{ordinal}",
        ordinal=ordinal,
        uid=f"uid-{ordinal}",
        ready=ready,
        migrating=migrating,
    )


def _names(members: tuple[Member, ...] | list[Member]) -> list[str]:
    return [m.name for m in members]


def test_newest_go_first_when_all_are_ready() -> None:
    members = [_member(i) for i in range(5)]
    chosen = choose_scale_in(members, 3)
    assert _names(chosen.remove) == ["web-4", "web-3", "web-2"]
    assert chosen.short_by == 0 and chosen.skipped == () and chosen.blocked_by == ()


def test_not_ready_members_go_before_newer_ready_ones() -> None:
    members = [_member(0), _member(1, ready=False), _member(2), _member(3, ready=False), _member(4)]
    assert _names(removal_order(members)) == ["web-3", "web-1", "web-4", "web-2", "web-0"]
    assert _names(choose_scale_in(members, 3).remove) == ["web-3", "web-1", "web-4"]


def test_a_migrating_member_is_never_chosen_even_when_newest_or_not_ready() -> None:
    members = [
        _member(0),
        _member(1),
        _member(2, ready=False, migrating="phase Migrating"),
        _member(3),
        _member(4, migrating="migration web-4-mig unfinished"),
    ]
    chosen = choose_scale_in(members, 3)
    assert _names(chosen.remove) == ["web-3", "web-1", "web-0"]
    assert _names(chosen.skipped) == ["web-2", "web-4"]
    assert chosen.short_by == 0 and chosen.blocked_by == ()


def test_fewer_can_go_than_needed_the_rest_is_blocked_by_the_migrating_members() -> None:
    members = [_member(0), _member(1, migrating="phase Migrating"), _member(2)]
    members.append(_member(3, migrating="migration web-3-mig unfinished"))
    chosen = choose_scale_in(members, 3)  # 4 -> 1
    assert _names(chosen.remove) == ["web-2", "web-0"]
    assert chosen.short_by == 1
    assert _names(chosen.blocked_by) == ["web-1", "web-3"]


def test_everything_migrating_removes_nothing() -> None:
    members = [_member(i, migrating="phase Migrating") for i in range(2)]
    chosen = choose_scale_in(members, 2)
    assert chosen.remove == () and chosen.short_by == 2
    assert _names(chosen.blocked_by) == ["web-0", "web-1"]


def test_nothing_to_remove() -> None:
    chosen = choose_scale_in([_member(0)], 0)
    assert chosen.remove == () and chosen.short_by == 0


def test_member_names_and_ordinals() -> None:
    assert member_name("web", 12) == "web-12"
    assert member_ordinal("web", "web-12") == 12
    assert member_ordinal("web", "web-a-1") is None
    assert member_ordinal("web", "web-01") is None  # not a name the set makes
    assert member_ordinal("web", "other-1") is None


def _spec(disks: list[dict[str, str]]) -> WukongSetSpec:
    return from_json(
        WukongSetSpec,
        {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"disks": disks}},
        },
    )


def test_names_that_cannot_fit_are_reported() -> None:
    assert set_name_problem("web", _spec([{"name": "root", "size": "1Gi"}]), 2) is None
    too_long = "a" * 62
    problem = set_name_problem(too_long, _spec([]), 10)
    assert problem is not None and problem[0] == "NameTooLong"
    assert f"{too_long}-10" in problem[1]
    disk = "d" * 10
    problem = set_name_problem("a" * 51, _spec([{"name": disk, "size": "1Gi"}]), 3)
    assert problem is not None and problem[0] == "NameTooLong" and disk in problem[1]
    invalid = set_name_problem("Web", _spec([]), 0)
    assert invalid is not None and invalid[0] == "InvalidName"
