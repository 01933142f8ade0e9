"""One ephemeral dev node per machine: a second run waits for the first, not refused."""

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from wukong.devcluster.errors import DevClusterError
from wukong.devcluster.node.host import ephemeral_turn


def test_a_second_run_waits_for_the_first_to_finish(tmp_path: Path) -> None:
    lock = tmp_path / "turn.lock"
    said: list[str] = []
    order: list[str] = []
    first_holds = threading.Event()

    def first() -> None:
        with ephemeral_turn(said.append, wait=5, lock_file=lock):
            first_holds.set()
            time.sleep(0.5)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    first_holds.wait(5)
    with ephemeral_turn(said.append, wait=10, lock_file=lock):
        order.append("second in")
    thread.join()
    assert order == ["first done", "second in"]
    assert len(said) == 1 and "waiting" in said[0]


def test_the_wait_is_bounded_with_an_error_that_names_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "turn.lock"
    with ephemeral_turn(lambda _: None, wait=5, lock_file=lock):
        with pytest.raises(DevClusterError, match="held this machine for 0 s") as raised:
            with ephemeral_turn(lambda _: None, wait=0.2, lock_file=lock):
                pytest.fail("took a slot another holder has")
    assert str(lock) in str(raised.value)


def test_a_killed_holder_frees_the_slot(tmp_path: Path) -> None:
    lock = tmp_path / "turn.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
            "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
            str(lock),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    with pytest.raises(DevClusterError):
        with ephemeral_turn(lambda _: None, wait=0.1, lock_file=lock):
            pass
    holder.kill()
    holder.wait()
    with ephemeral_turn(lambda _: None, wait=2, lock_file=lock):
        pass
