"""Making a running agent detach from outside it: the DaemonSet's preStop hook.

`wukong detach` finds the agents alive on this node through their ledgers in
the state directory (`semaphores`: each holds a lock while it lives, named
after its pid and start time), keeps those in its own container (the same
cgroup: an engineer's `wukong trace` next to the DaemonSet is left alone),
sends each SIGTERM, which makes an agent close every probe and put back the
semaphores it raised, and waits until it has exited.
"""

import fcntl
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from wukong.ebpf.semaphores import start_time


@dataclass(frozen=True)
class RunningAgent:
    pid: int
    started: int  # its start time: a pid reused since is not this agent


def running_agents(state_dir: Path) -> list[RunningAgent]:
    """The agents alive now whose ledger is in `state_dir`."""
    found = []
    for lock in sorted(state_dir.glob("agent-*.lock")):
        try:
            _, pid, started = lock.name.removesuffix(".lock").split("-")
            agent = RunningAgent(int(pid), int(started))
        except ValueError:
            continue  # not a ledger's name
        if _alive(agent) and _locked(lock):
            found.append(agent)
    return found


def in_my_container(agent: RunningAgent) -> bool:
    """Whether `agent` runs in this process's cgroup (its container)."""
    try:
        theirs = Path(f"/proc/{agent.pid}/cgroup").read_text()
    except OSError:
        return False
    return theirs == Path("/proc/self/cgroup").read_text()


def detach(agents: list[RunningAgent], *, timeout: float) -> list[RunningAgent]:
    """SIGTERM each agent and wait for it to exit; those still running after `timeout`."""
    for agent in agents:
        try:
            os.kill(agent.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    waiting = list(agents)
    while waiting and time.monotonic() < deadline:
        time.sleep(0.1)
        waiting = [agent for agent in waiting if _alive(agent)]
    return waiting


def _alive(agent: RunningAgent) -> bool:
    """Running, and the same process: not exited (a zombie its parent has yet to
    reap has exited too) and not another process with its pid since."""
    try:
        stat = Path(f"/proc/{agent.pid}/stat").read_text()
        exited = stat[stat.rindex(")") + 2] in "ZX"
        return not exited and start_time(agent.pid) == agent.started
    except (OSError, ValueError):
        return False


def _locked(lock: Path) -> bool:
    """Whether a live agent holds this lock (a dead one's the kernel has dropped)."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
