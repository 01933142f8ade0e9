"""Which out-of-date members of a WukongSet are updated now: at most maxUnavailable
unavailable at once, never a migrating member."""

from wukong.operator.scalein import Member
from wukong.operator.schema import from_json
from wukong.operator.wukongset_api import WukongTemplate
from wukong.operator.wukongset_rollout import (
    EDITED_BY_HAND,
    TEMPLATE_CHANGED,
    plan_rollout,
    template_hash,
)


def _member(
    ordinal: int,
    *,
    available: bool = True,
    outdated: str | None = TEMPLATE_CHANGED,
    migrating: str | None = None,
) -> Member:
    return Member(
        name=f"web-{ordinal}",
        ordinal=ordinal,
        uid=f"uid-{ordinal}",
        ready=available,
        migrating=migrating,
        available=available,
        outdated=outdated,
    )


def _names(members: tuple[Member, ...]) -> list[str]:
    return [m.name for m in members]


def test_one_at_a_time_highest_ordinal_first() -> None:
    plan = plan_rollout([_member(i) for i in range(4)], 1)
    assert _names(plan.update) == ["web-3"]
    assert _names(plan.waiting) == ["web-0", "web-1", "web-2"]
    assert plan.unavailable == 1


def test_an_unavailable_member_spends_the_budget() -> None:
    members = [_member(0), _member(1, outdated=None, available=False), _member(2)]
    plan = plan_rollout(members, 1)
    assert plan.update == () and plan.unavailable == 1
    assert _names(plan_rollout(members, 2).update) == ["web-2"]


def test_an_out_of_date_member_that_is_unavailable_anyway_is_updated_at_once() -> None:
    members = [_member(0, available=False), _member(1, outdated=EDITED_BY_HAND), _member(2)]
    plan = plan_rollout(members, 1)
    assert _names(plan.update) == ["web-0"]
    assert plan.unavailable == 1


def test_a_migrating_member_waits() -> None:
    members = [_member(0), _member(1, migrating="phase Migrating")]
    plan = plan_rollout(members, 2)
    assert _names(plan.update) == ["web-0"]
    assert _names(plan.waiting) == ["web-1"]


def test_up_to_date_members_are_left_alone() -> None:
    plan = plan_rollout([_member(i, outdated=None) for i in range(3)], 1)
    assert plan.update == () and plan.waiting == () and plan.unavailable == 0


def test_the_template_hash_follows_the_template_and_ignores_key_order() -> None:
    def template(spec: dict[str, object]) -> WukongTemplate:
        return from_json(WukongTemplate, {"metadata": {"labels": {"app": "web"}}, "spec": spec})

    one = template({"cpu": 2, "memory": "2Gi"})
    assert template_hash(one) == template_hash(template({"memory": "2Gi", "cpu": 2}))
    assert template_hash(one) != template_hash(template({"cpu": 3, "memory": "2Gi"}))
    assert len(template_hash(one)) == 10
