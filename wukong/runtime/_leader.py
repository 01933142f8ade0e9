"""Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it.

Several replicas of an operator run at once; only the one holding the Lease
reconciles. The Lease's `spec` is the election record: `holderIdentity`,
`leaseDurationSeconds` (how long others must wait before taking it over),
`acquireTime`, `renewTime` and `leaseTransitions`.

Lifecycle::

    elector = LeaderElector(client=client, config=LeaderElectionConfig(name=..., namespace=...))
    await elector.acquire()  # blocks until this identity holds the Lease
    try:
        async with asyncio.TaskGroup() as tasks:
            work = tasks.create_task(run_controllers())
            await elector.keep()  # renews; returns once leadership is lost
            work.cancel()  # stop acting as leader at once (client-go exits the process)
    finally:
        await elector.release()  # hand over now instead of after lease_duration

Clocks. Candidates never compare the `renewTime` written by the holder with
their own clock: clocks of different machines disagree. A candidate notes, on
its own monotonic clock, when it last saw the record *change*; the holder is
gone once the record has stayed the same for the holder's `leaseDurationSeconds`.

Why the timings nest (lease_duration > renew_deadline > retry_period). The
leader renews every `retry_period`. A renew sent at local time t cannot be seen
by anyone before t, so no candidate takes over before t + lease_duration. The
leader gives up at t + renew_deadline if no renew has succeeded since, which
leaves lease_duration - renew_deadline for clock-rate drift and for its work
to stop. Every API call of a renew is bounded by that deadline, so a hung API
server cannot keep the leader believing it still leads.

All takeovers are optimistic-concurrency updates (`resourceVersion` in the
body): of two candidates racing for an expired or released Lease, one gets
`Conflict` and goes back to waiting.
"""

import asyncio
import enum
import logging
import math
import random
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from wukong.runtime._client import Client, Object
from wukong.runtime._errors import AlreadyExists, ApiError, Conflict, NotFound
from wukong.runtime._fanout import NO_OBSERVER
from wukong.runtime._observer import RuntimeObserver
from wukong.runtime.resources import LEASES

_log = logging.getLogger("wukong.runtime.leader")

# What a failed attempt may raise; the next attempt retries. (TimeoutError
# covers ApiTimeout.) Anything else is a bug and propagates.
_API_ERRORS = (ApiError, TimeoutError, aiohttp.ClientError, OSError)
# Acquire retries wait retry_period * [1, 1 + _JITTER], so candidates that
# started together do not keep colliding.
_JITTER = 0.2
# As client-go's resourcelock.NewFromKubeconfig: one call may take half the
# renew deadline (at least a second), so a renew has time for a second try.
_MIN_CALL_TIMEOUT_SECONDS = 1.0
_RELEASE_TIMEOUT_SECONDS = 5.0
_RELEASE_ATTEMPTS = 3


def default_identity() -> str:
    """This process's name in a Lease: the host's name and a random suffix."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, kw_only=True)
class LeaderElectionConfig:
    """Which Lease to contend for, as whom, and the election timings in seconds."""

    name: str
    namespace: str
    identity: str = field(default_factory=default_identity)
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    labels: tuple[tuple[str, str], ...] = ()
    """Labels on the Lease when this elector creates it (so a group of Leases can be listed)."""

    def __post_init__(self) -> None:
        if not self.name or not self.namespace:
            raise ValueError("leader election needs a Lease name and namespace")
        if not self.identity:
            raise ValueError("identity must not be empty: an empty holder means a released Lease")
        if self.retry_period <= 0:
            raise ValueError(f"retry_period must be positive, got {self.retry_period}s")
        if self.renew_deadline <= self.retry_period:
            raise ValueError(
                f"renew_deadline ({self.renew_deadline}s) must be greater than retry_period "
                f"({self.retry_period}s): lease_duration > renew_deadline > retry_period"
            )
        if self.lease_duration <= self.renew_deadline:
            raise ValueError(
                f"lease_duration ({self.lease_duration}s) must be greater than renew_deadline "
                f"({self.renew_deadline}s): lease_duration > renew_deadline > retry_period, "
                "so a leader steps down before others may take over"
            )

    @property
    def lease_duration_seconds(self) -> int:
        return math.ceil(self.lease_duration)


@dataclass(frozen=True, kw_only=True)
class _Record:
    """The election record in a Lease's spec; compared whole to notice changes."""

    holder: str
    duration: int | None
    acquire_time: str | None
    renew_time: str | None
    transitions: int

    @classmethod
    def of(cls, lease: Object) -> "_Record":
        spec: dict[str, Any] = lease.get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or "",
            duration=spec.get("leaseDurationSeconds"),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=spec.get("leaseTransitions") or 0,
        )


class _Outcome(enum.Enum):
    HELD = "held"  # this identity holds the Lease, just written
    FAILED = "failed"  # no write this time (error, conflict, or another valid holder)
    TAKEN = "taken"  # while leading: the record names another holder


def _micro_time() -> str:
    """Now as a Kubernetes MicroTime (RFC 3339, microseconds, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Contends for one Lease as one identity: `acquire`, then `keep`, then `release`."""

    def __init__(
        self,
        *,
        client: Client,
        config: LeaderElectionConfig,
        observer: RuntimeObserver = NO_OBSERVER,
        guard: Callable[[], Awaitable[str | None]] | None = None,
    ) -> None:
        """`guard`, if given, is asked after each win in `acquire`: a reason not to lead
        yet (the Lease is released and the campaign goes on), or None."""
        self._client = client
        self._config = config
        self._observer = observer
        self._guard = guard
        self._guard_reason: str | None = None  # as last logged
        self._is_leader = False
        self._lease: Object | None = None  # as this elector last wrote it
        self._observed: _Record | None = None
        self._observed_at = 0.0  # local monotonic time the record last changed
        self._renewed_at = 0.0  # local time our last successful write was sent
        # keep() and release() both write the Lease; one write at a time, so
        # release never races a renew that would re-assert the holder.
        self._lock = asyncio.Lock()

    @property
    def config(self) -> LeaderElectionConfig:
        return self._config

    @property
    def identity(self) -> str:
        return self._config.identity

    @property
    def is_leader(self) -> bool:
        """True from a successful `acquire` until leadership is lost or released."""
        return self._is_leader

    async def acquire(self) -> None:
        """Return once this identity holds the Lease, creating it if absent."""
        if self._is_leader:
            return
        _log.info("trying to acquire lease %s as %s", self._lease_key, self.identity)
        # Report "not leading" once before campaigning, so a standby shows 0
        # rather than nothing (leader_election_master_status).
        self._observer.leadership_changed(self._config.name, False)
        while True:
            # While the guard says wait, ask it first: no write to the Lease meanwhile.
            if self._guard_reason is None or not await self._guard_says_wait():
                async with self._lock:
                    outcome = await self._attempt(deadline=None, leading=False)
                if outcome is _Outcome.HELD and not await self._guarded():
                    self._set_leader(True)
                    _log.info("acquired lease %s as %s", self._lease_key, self.identity)
                    return
            await asyncio.sleep(self._config.retry_period * random.uniform(1.0, 1.0 + _JITTER))

    async def try_acquire(self) -> bool:
        """One attempt to acquire (or, if held, renew) the Lease; True if this identity holds it.

        For a caller that contends for several Leases and decides itself when to
        try again (the shards of `_shards`); `acquire` is this in a loop.
        """
        if self._is_leader:
            return True
        async with self._lock:
            outcome = await self._attempt(deadline=None, leading=False)
        if outcome is _Outcome.HELD:
            self._set_leader(True)
            _log.info("acquired lease %s as %s", self._lease_key, self.identity)
            return True
        return False

    async def _guard_says_wait(self) -> bool:
        reason = await self._guard() if self._guard is not None else None
        if reason != self._guard_reason:
            if reason:
                _log.warning("not leading on lease %s yet: %s", self._lease_key, reason)
            else:
                _log.info("nothing keeps lease %s from leading any more", self._lease_key)
            self._guard_reason = reason
        return reason is not None

    async def _guarded(self) -> bool:
        """Whether the guard, asked after the Lease was won, says not to lead yet; if
        so, the Lease is released."""
        if not await self._guard_says_wait():
            return False
        self._is_leader = True  # so release() writes; never reported as leading
        await self.release()
        return True

    def observe(self, lease: Object) -> None:
        """Note the Lease as read by someone else (a list of many), so that its expiry
        is timed from when this replica first saw it unchanged, without a read of its own."""
        if lease["metadata"].get("name") == self._config.name:
            self._observe(lease)

    def expired_now(self) -> bool:
        """Whether the holder last seen has let the Lease expire (True if never seen)."""
        return self._observed is None or self._expired(self._observed)

    async def keep(self) -> None:
        """Renew every retry_period; return once leadership is lost.

        Lost means: no renew succeeded for renew_deadline, or the Lease names
        another holder. Returns at once if not leading (e.g. after `release`).
        Cancelling it stops renewing without releasing, like a crash: others
        take over once lease_duration has passed.
        """
        loop = asyncio.get_running_loop()
        try:
            while self._is_leader:
                deadline = self._renewed_at + self._config.renew_deadline
                await asyncio.sleep(
                    min(self._config.retry_period, max(0.0, deadline - loop.time()))
                )
                if loop.time() >= deadline:
                    self._lose(f"no successful renew for {self._config.renew_deadline}s")
                    return
                async with self._lock:
                    # release() may have run while we slept or waited for the lock.
                    if not self._is_leader:
                        return
                    outcome = await self._attempt(deadline=deadline, leading=True)
                if outcome is _Outcome.TAKEN:
                    holder = self._observed.holder if self._observed else "?"
                    self._lose(f"the lease is now held by {holder!r}")
                    return
        except Exception as exc:
            self._lose(f"renewing failed: {exc!r}")
            raise

    async def release(self, *, timeout: float = _RELEASE_TIMEOUT_SECONDS) -> None:
        """If leading, give the Lease up so others take it at once. Never raises.

        Call it after `keep` has returned or been cancelled, and after the
        leader's work has stopped: from here on this replica does not lead.
        """
        if not self._is_leader:
            return
        # Step down locally first: whatever the API server answers, this
        # replica must not act as leader once it has asked to release.
        self._set_leader(False)
        try:
            # One bound for waiting on an in-flight renew and for the writes.
            async with asyncio.timeout(timeout):
                async with self._lock:
                    await self._release()
        except TimeoutError:
            _log.warning(
                "could not release lease %s within %ss (it expires on its own)",
                self._lease_key,
                timeout,
            )
        except Exception as exc:
            _log.warning(
                "could not release lease %s (it expires on its own): %s", self._lease_key, exc
            )

    # -- one election round ------------------------------------------------------

    @property
    def _lease_key(self) -> str:
        return f"{self._config.namespace}/{self._config.name}"

    def _call_timeout(self, deadline: float | None) -> float:
        bound = max(self._config.renew_deadline / 2, _MIN_CALL_TIMEOUT_SECONDS)
        if deadline is None:
            return bound
        # A non-positive budget makes the client raise ApiTimeout without calling.
        return min(bound, deadline - asyncio.get_running_loop().time())

    async def _attempt(self, *, deadline: float | None, leading: bool) -> _Outcome:
        """One try to acquire (leading=False) or renew (leading=True) the Lease."""
        identity = self._config.identity
        if leading and self._lease is not None:
            # Fast path: overwrite the Lease as we last wrote it. If anyone else
            # wrote since, its resourceVersion is stale and the update conflicts.
            try:
                await self._write(self._claim(self._lease), deadline)
                return _Outcome.HELD
            except (Conflict, NotFound):
                pass  # read it and decide
            except _API_ERRORS as exc:
                _log.warning("failed to renew lease %s: %s", self._lease_key, exc)
                return _Outcome.FAILED
        try:
            lease = await self._client.get(
                LEASES,
                self._config.name,
                namespace=self._config.namespace,
                timeout=self._call_timeout(deadline),
            )
        except NotFound:
            return await self._create(deadline)
        except _API_ERRORS as exc:
            _log.warning("failed to read lease %s: %s", self._lease_key, exc)
            return _Outcome.FAILED
        record = self._observe(lease)
        if record.holder and record.holder != identity:
            if leading:
                return _Outcome.TAKEN
            if not self._expired(record):
                return _Outcome.FAILED
            _log.info("lease %s held by %r has expired", self._lease_key, record.holder)
        try:
            await self._write(self._claim(lease), deadline)
        except Conflict:
            _log.debug("lost the race for lease %s", self._lease_key)
            return _Outcome.FAILED
        except _API_ERRORS as exc:
            _log.warning("failed to update lease %s: %s", self._lease_key, exc)
            return _Outcome.FAILED
        return _Outcome.HELD

    def _observe(self, lease: Object) -> _Record:
        record = _Record.of(lease)
        if record != self._observed:
            holder_changed = self._observed is None or record.holder != self._observed.holder
            if holder_changed and record.holder != self._config.identity:
                if record.holder:
                    _log.info("lease %s is held by %r", self._lease_key, record.holder)
                else:
                    _log.info("lease %s is free", self._lease_key)
            self._observed = record
            self._observed_at = asyncio.get_running_loop().time()
        return record

    def _expired(self, record: _Record) -> bool:
        # The holder's own leaseDurationSeconds counts, as in client-go: it is
        # the promise the holder made, whatever this candidate is configured with.
        duration = record.duration or self._config.lease_duration_seconds
        return asyncio.get_running_loop().time() >= self._observed_at + duration

    def _claim(self, lease: Object) -> Object:
        """The Lease with this identity as holder, renewed now."""
        old = _Record.of(lease)
        now = _micro_time()
        ours = old.holder == self._config.identity
        spec = {
            **(lease.get("spec") or {}),
            "holderIdentity": self._config.identity,
            "leaseDurationSeconds": self._config.lease_duration_seconds,
            "acquireTime": (old.acquire_time or now) if ours else now,
            "renewTime": now,
            "leaseTransitions": old.transitions if ours else old.transitions + 1,
        }
        metadata = lease.get("metadata") or {}
        if self._config.labels:
            # A Lease another configuration wrote says now whose it is.
            labels = {**(metadata.get("labels") or {}), **dict(self._config.labels)}
            metadata = {**metadata, "labels": labels}
        return {**lease, "metadata": metadata, "spec": spec}

    async def _write(self, body: Object, deadline: float | None) -> None:
        loop = asyncio.get_running_loop()
        # The time of *sending* starts the renew deadline: nobody can see the
        # write before it, so nobody's lease_duration starts earlier.
        sent = loop.time()
        lease = await self._client.update(LEASES, body, timeout=self._call_timeout(deadline))
        self._wrote(lease, sent)

    async def _create(self, deadline: float | None) -> _Outcome:
        now = _micro_time()
        body: Object = {
            "apiVersion": LEASES.api_version,
            "kind": LEASES.kind,
            "metadata": {
                "name": self._config.name,
                "namespace": self._config.namespace,
                **({"labels": dict(self._config.labels)} if self._config.labels else {}),
            },
            "spec": {
                "holderIdentity": self._config.identity,
                "leaseDurationSeconds": self._config.lease_duration_seconds,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }
        sent = asyncio.get_running_loop().time()
        try:
            lease = await self._client.create(
                LEASES, body, namespace=self._config.namespace, timeout=self._call_timeout(deadline)
            )
        except AlreadyExists:
            return _Outcome.FAILED  # another candidate created it first
        except _API_ERRORS as exc:
            _log.warning("failed to create lease %s: %s", self._lease_key, exc)
            return _Outcome.FAILED
        self._wrote(lease, sent)
        return _Outcome.HELD

    def _wrote(self, lease: Object, sent: float) -> None:
        self._lease = lease
        self._observe(lease)
        self._renewed_at = sent

    async def _release(self) -> None:
        lease = self._lease
        for _ in range(_RELEASE_ATTEMPTS):
            if lease is None or _Record.of(lease).holder != self._config.identity:
                _log.info("lease %s is no longer ours; nothing to release", self._lease_key)
                return
            now = _micro_time()
            spec = {
                **(lease.get("spec") or {}),
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "acquireTime": now,
                "renewTime": now,
            }
            try:
                released = await self._client.update(LEASES, {**lease, "spec": spec})
            except Conflict:
                # Written since we last saw it (a renew of ours, or a takeover):
                # read it again and release only if still ours.
                lease = await self._client.get(
                    LEASES, self._config.name, namespace=self._config.namespace
                )
                continue
            except NotFound:
                _log.info("lease %s is gone; nothing to release", self._lease_key)
                return
            self._lease = released
            self._observe(released)
            _log.info("released lease %s", self._lease_key)
            return
        raise RuntimeError(f"lease kept changing during {_RELEASE_ATTEMPTS} release attempts")

    # -- leadership state --------------------------------------------------------

    def _lose(self, reason: str) -> None:
        if self._is_leader:
            _log.info("lost leadership of lease %s: %s", self._lease_key, reason)
            self._set_leader(False)

    def _set_leader(self, leading: bool) -> None:
        if leading == self._is_leader:
            return
        self._is_leader = leading
        self._observer.leadership_changed(self._config.name, leading)
