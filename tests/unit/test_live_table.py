"""`wukong trace`'s table: counts sorted, and every loss and untraced process said."""

from wukong.ebpf.live import LiveTable
from wukong.ebpf.records import Cancellation


def _table() -> LiveTable:
    table = LiveTable()
    table.add(Cancellation(pid=7, comm="manager", runtime="go", reason="canceled", count=3))
    table.add(
        Cancellation(pid=9, comm="python3", runtime="python", reason="deadline_exceeded", count=5)
    )
    return table


def test_rows_are_sorted_by_count_and_a_quiet_table_warns_of_nothing() -> None:
    screen = _table().render(seconds=4, targets=2, notices=[])
    lines = screen.splitlines()
    assert lines[0].startswith("wukong trace: 8 cancellations in 4s, 2 processes traced")
    rows = [line for line in lines if line.strip().startswith(("5 ", "3 "))]
    assert [row.split()[0] for row in rows] == ["5", "3"]
    assert "LOST" not in screen and "lost:" not in screen and "not traced:" not in screen


def test_losses_and_untraced_processes_are_shown_by_reason() -> None:
    screen = _table().render(
        seconds=4,
        targets=2,
        notices=["pid 12 (python3, python): its interpreter has no USDT probes"],
        lost=2,
        losses={"counts_map_full": 2, "ring_buffer_full": 40, "perf_buffer": 0},
        untraced={"no_usdt_probes": 1},
    )
    lines = screen.splitlines()
    assert lines[1] == "LOST 2 events (probe buffers full): the counts below are short"
    assert lines[2] == "lost: counts_map_full 2, ring_buffer_full 40"
    assert lines[3] == "not traced: no_usdt_probes 1"
    assert lines[-1].startswith("pid 12 (python3, python)")
