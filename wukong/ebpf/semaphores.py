"""The USDT semaphores an agent raised, written down on the node so that a successor
can put back what a killed agent left raised.

Enabling a Python operator's python:audit probe adds one to a semaphore in the
operator's memory, and the operator calls sys.audit only while it is non-zero;
detaching takes the one off again. An agent that dies without detaching
(SIGKILL, the OOM killer) never does: the operator goes on paying for events
nobody reads. So each agent keeps a ledger, a file of its own in the state
directory (a hostPath in the chart: it outlives the container), and a new agent,
before it attaches, takes back what dead agents recorded:

    ledger = SemaphoreLedger(Path("/run/wukong-agent"))
    ledger.open()         # puts back what dead agents left raised
    ledger.raised(pid, address, 1, started=start_time(pid))  # once a probe is enabled
    ledger.lowered(pid)   # before it is disabled
    ledger.close()        # at exit

A process is named by its pid and start time (/proc/PID/stat field 22), so a
reused pid is never written to. Each agent holds an flock on its own lock file
for as long as it lives, and the kernel drops it however the agent dies: a
ledger whose lock can be taken is a dead agent's, and a live agent's (a
`wukong trace` next to the DaemonSet's agent) is never touched.
"""

import fcntl
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path("/run/wukong-agent")

SEMAPHORE_BYTES = 2  # USDT semaphores are unsigned shorts


@dataclass(frozen=True)
class Raised:
    """What one agent added to one process's semaphore."""

    pid: int
    start_time: int  # clock ticks after boot: tells this process from a later one with its pid
    address: int
    amount: int


def start_time(pid: int) -> int:
    """When process `pid` started (/proc/PID/stat field 22); raises if it does not exist."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces and parentheses: count from its last ')'.
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def read_semaphore(pid: int, address: int) -> int:
    """The semaphore's value in process `pid`'s memory."""
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        mem.seek(address)
        return int.from_bytes(mem.read(SEMAPHORE_BYTES), "little")


def lower(raised: Raised) -> int | None:
    """Take `raised.amount` off the semaphore (never below 0), if its process still
    runs; the value it was left at, or None when the process is gone."""
    try:
        if start_time(raised.pid) != raised.start_time:
            return None  # the pid is another process's now
        with open(f"/proc/{raised.pid}/mem", "r+b", buffering=0) as mem:
            mem.seek(raised.address)
            value = int.from_bytes(mem.read(SEMAPHORE_BYTES), "little")
            left = max(0, value - raised.amount)
            mem.seek(raised.address)
            mem.write(left.to_bytes(SEMAPHORE_BYTES, "little"))
            return left
    except (FileNotFoundError, ProcessLookupError):
        return None


class SemaphoreLedger:
    """This agent's record of the semaphores it raised, in `state_dir`."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        pid = os.getpid()
        self._name = f"agent-{pid}-{start_time(pid)}"
        self._records: dict[int, Raised] = {}
        self._lock: int | None = None

    def open(self) -> list[Raised]:
        """Put back what dead agents left raised (logged at INFO), drop their ledgers,
        and lock this agent's own; what was put back."""
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        taken_back = [raised for name in self._others() for raised in self._settle(name)]
        lock = os.open(self._path(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh name: nobody holds it
        self._lock = lock
        return taken_back

    def raised(self, pid: int, address: int, amount: int, *, started: int) -> None:
        """Record that this agent added `amount` to the semaphore at `address` of the
        process `pid` that started at `started`."""
        self._records[pid] = Raised(pid, started, address, amount)
        self._write()

    def lowered(self, pid: int) -> None:
        """Forget `pid`'s semaphore: this agent is about to take back what it added."""
        if self._records.pop(pid, None) is not None:
            self._write()

    def close(self) -> None:
        """Remove this agent's ledger once everything it raised was lowered; else leave
        it (and the lock the kernel drops at exit) to a successor."""
        if self._lock is None:
            return
        if not self._records:
            for suffix in (".json", ".lock"):
                self._path(suffix).unlink(missing_ok=True)
        os.close(self._lock)
        self._lock = None

    def _path(self, suffix: str, name: str | None = None) -> Path:
        return self.state_dir / f"{name or self._name}{suffix}"

    def _write(self) -> None:
        if self._lock is None:
            raise RuntimeError("semaphore ledger not open")
        # Write and rename: a reader (a successor, after a kill at any point) sees the
        # old ledger or the new one, never half of one.
        temporary = self._path(".json.tmp")
        temporary.write_text(json.dumps([asdict(raised) for raised in self._records.values()]))
        temporary.replace(self._path(".json"))

    def _others(self) -> set[str]:
        return {
            path.name.split(".", 1)[0]
            for path in self.state_dir.iterdir()
            if path.name.startswith("agent-") and not path.name.startswith(self._name + ".")
        }

    def _settle(self, name: str) -> list[Raised]:
        """Another agent's ledger: nothing if it still runs; else put back what it raised
        in processes that still run, and remove its files."""
        try:
            lock = os.open(self._path(".lock", name), os.O_RDWR)
        except FileNotFoundError:
            lock = None  # died before its lock was made, or its successor is settling it
        try:
            if lock is not None:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return []  # alive: its semaphores are its own to lower
            taken_back = []
            for raised in self._read(name):
                left = lower(raised)
                if left is None:
                    log.debug("pid %d exited: its semaphore record is dropped", raised.pid)
                    continue
                taken_back.append(raised)
                log.info(
                    "put back the python:audit semaphore of pid %d at %#x (-%d, now %d): "
                    "an agent that did not detach had raised it",
                    raised.pid,
                    raised.address,
                    raised.amount,
                    left,
                )
            for suffix in (".json", ".json.tmp", ".lock"):
                self._path(suffix, name).unlink(missing_ok=True)
            return taken_back
        finally:
            if lock is not None:
                os.close(lock)

    def _read(self, name: str) -> list[Raised]:
        try:
            records = json.loads(self._path(".json", name).read_text())
        except FileNotFoundError:
            return []
        except ValueError:
            log.warning("unreadable semaphore ledger %s dropped", self._path(".json", name))
            return []
        return [Raised(**record) for record in records]
