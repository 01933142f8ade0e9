"""A benchmark peer as a child process speaking the JSON-lines protocol.

Every peer (Wukong's runtime, kopf, controller-runtime) runs as its own
process against the same API server, so memory is measured per process and
no peer shares an event loop or a cache with another. Each line on stdout is
`{"event": "ready" | "reconcile", "t": <unix seconds>, "name": ...}`.
"""

import asyncio
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time of process `pid` so far, all threads: utime + stime from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


@dataclass
class PeerProcess:
    name: str
    argv: list[str]
    log_file: Path
    env: dict[str, str] = field(default_factory=dict)
    reconciles: list[tuple[str, float]] = field(default_factory=list)
    first: dict[str, float] = field(default_factory=dict)
    _process: asyncio.subprocess.Process | None = None
    _reader: "asyncio.Task[None] | None" = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(self, *, timeout: float = 120.0, settle: float = 1.0) -> None:
        """Start the peer and wait until it is ready, then `settle` seconds more."""
        log = self.log_file.open("wb")
        self._process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env={**os.environ, **self.env},
        )
        log.close()
        self._reader = asyncio.create_task(self._read())
        exited = asyncio.create_task(self._process.wait())
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({exited, ready}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            exited.cancel()
            message = f"{self.name} not ready after {timeout:.0f}s; see {self.log_file}"
            raise RuntimeError(message) from None
        await asyncio.sleep(settle)  # every peer gets the same time to open its watch

    async def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        async for line in self._process.stdout:
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                continue
            if message.get("event") == "ready":
                self._ready.set()
            elif message.get("event") == "reconcile":
                name, at = message["name"], float(message["t"])
                self.reconciles.append((name, at))
                self.first.setdefault(name, at)

    def rss_bytes(self) -> int:
        assert self._process is not None
        status = Path(f"/proc/{self._process.pid}/status").read_text()
        kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(kib) * 1024

    async def wait_first(self, names: set[str], *, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        while not names <= self.first.keys():
            if time.monotonic() > deadline:
                missing = len(names - self.first.keys())
                raise RuntimeError(f"{self.name}: {missing} objects never reconciled")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._process is None or self._process.returncode is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self._process.wait(), 15)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()
        if self._reader is not None:
            self._reader.cancel()
