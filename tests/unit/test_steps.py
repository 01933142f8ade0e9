"""The Wukong controller's steps combined into one outcome: order kept, the first of each kind."""

from wukong.operator.steps import Problem, StepResult


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
