"""The collectors read at scrape time: the namespaces cancelling most right now, and the
certificate watchers' reads."""

from pathlib import Path

import pytest

from wukong.metrics import create_metrics
from wukong.runtime.serving import CertificateError, load_serving_certificate


def test_certificate_reads_are_served_from_the_start_and_counted(tmp_path: Path) -> None:
    registry = create_metrics().registry

    def reads() -> tuple[float | None, float | None]:
        return (
            registry.get_sample_value("certwatcher_read_certificate_total"),
            registry.get_sample_value("certwatcher_read_certificate_errors_total"),
        )

    total, errors = reads()
    assert total is not None and errors is not None  # served before any read (at 0 in a process)
    with pytest.raises(CertificateError):
        load_serving_certificate(tmp_path)  # no pair there: a failed read
    assert reads() == (total + 1, errors + 1)


def test_only_the_top_namespaces_by_recent_cancellations_are_exported() -> None:
    from wukong.metrics.definitions import TopNamespaces

    now = [0.0]
    tally = TopNamespaces(
        "wukong_top_namespace_cancellations",
        "cancellations",
        top=2,
        half_life=10.0,
        clock=lambda: now[0],
    )
    for _ in range(50):
        tally.record("wukong", "old-storm")
    now[0] = 100.0  # ten half-lives later: the old storm weighs 50 / 1024
    for _ in range(3):
        tally.record("wukong", "storming")
    tally.record("wukong", "quiet")
    tally.record("wukong", "quiet")
    assert tally.leaders() == [("wukong", "storming", 3), ("wukong", "quiet", 2)]
    (family,) = tally.collect()
    assert {(s.labels["object_namespace"], s.value) for s in family.samples} == {
        ("storming", 3.0),
        ("quiet", 2.0),
    }
    # The old storm is still counted: back in the top, its counter goes on.
    for _ in range(5):
        tally.record("wukong", "old-storm")
    assert tally.leaders()[0] == ("wukong", "old-storm", 55)


def test_the_ranking_outlives_the_weights_growth() -> None:
    # Forward decay: weights double each half-life, so the origin moves up now and
    # then; the ranking is the same across it, and nothing overflows.
    from wukong.metrics.definitions import TopNamespaces

    now = [0.0]
    tally = TopNamespaces("t", "events", top=3, half_life=1.0, clock=lambda: now[0])
    for step in range(2_000):  # 2,000 half-lives: weights would reach 2**2000
        now[0] = float(step)
        tally.record("c", "steady")
        if step % 2 == 0:
            tally.record("c", "every-other")
    now[0] = 2_000.0
    tally.record("c", "newcomer")
    tally.record("c", "newcomer")
    assert tally.leaders() == [
        ("c", "newcomer", 2),
        ("c", "steady", 2_000),
        ("c", "every-other", 1_000),
    ]
