"""Lease loss: the old leader stops writing at once, so there is never a second writer.

Two replicas reconcile the same ConfigMaps, each writing on every reconcile.
Replica A leads; the Lease is taken away (an intruder overwrites it), A loses
it, and B takes over once the intruder's lease has expired. A's reconciler is
stubborn: it swallows its cancellation and tries one more write six seconds
later, after B took over. The API server's audit log, which records every
write with the user agent that sent it, is the judge: after B acquired the
Lease, every write came from B; A's last write came within a second of A
noticing the loss; A's late write never left the process.
"""

import asyncio
import datetime
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.helpers import RecordingObserver, running
from tests.polling import eventually
from wukong.demo.drill import take_lease
from wukong.devcluster import ControlPlane
from wukong.metrics import RuntimeMetrics
from wukong.runtime import (
    CancelReason,
    Client,
    Controller,
    ControllerOptions,
    LeaderElectionConfig,
    Manager,
    ManagerOptions,
    ReconcileContext,
    Request,
    Result,
)
from wukong.runtime._errors import NotLeading
from wukong.runtime.resources import CONFIGMAPS, EVENTS, LEASES

LEASE = "leader-loss"
OBJECTS = 4
# Longer than B needs to take over (the intruder's 4 s lease must expire first), so
# without the fence this write would land after B acquired the Lease.
LATE_WRITE_SECONDS = 6.0


class Writer:
    """Writes on every reconcile; when `stubborn`, ignores cancellation and writes once more."""

    def __init__(self, identity: str, *, stubborn: bool, hold: float = 0.5) -> None:
        self.identity = identity
        self.stubborn = stubborn
        # Seconds each reconcile works on after writing: reconciles are (almost)
        # always in flight, so a loss or a stop always finds some to cancel.
        self.hold = hold
        self.writes = 0
        self.refused: list[BaseException] = []

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        try:
            await self._write(ctx, request)
            await asyncio.sleep(self.hold)
            return Result(requeue_after=0.05)
        except asyncio.CancelledError:
            if not self.stubborn:
                raise
        # Misbehaving on purpose: carry on after cancellation, then write.
        await _sleep_through_cancellation(LATE_WRITE_SECONDS)
        try:
            await self._write(ctx, request)
        except NotLeading as refused:
            self.refused.append(refused)
            raise
        return Result()

    async def _write(self, ctx: ReconcileContext, request: Request) -> None:
        self.writes += 1
        patch = {"metadata": {"annotations": {"writer": f"{self.identity}-{self.writes}"}}}
        await ctx.client.patch(CONFIGMAPS, request.name, patch, namespace=request.namespace)


async def _sleep_through_cancellation(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            await asyncio.sleep(left)
        except asyncio.CancelledError:
            continue


def _audit_writes(audit_log: Path, namespace: str) -> list[dict[str, Any]]:
    events = []
    for line in audit_log.read_text().splitlines():
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        if ref.get("resource") == "configmaps" and ref.get("namespace") == namespace:
            events.append(event)
    return events


def _timestamp(value: str) -> float:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@pytest.fixture
async def replicas(control_plane: ControlPlane) -> AsyncIterator[dict[str, Client]]:
    clients = {
        identity: await Client.from_kubeconfig(
            control_plane.kubeconfig, user_agent=f"wukong-test/replica-{identity}"
        )
        for identity in ("a", "b")
    }
    yield clients
    for client in clients.values():
        await client.close()


async def test_after_lease_loss_only_the_new_leader_writes(
    control_plane: ControlPlane, client: Client, namespace: str, replicas: dict[str, Client]
) -> None:
    await _create_configmaps(client, namespace)

    writers = {"a": Writer("a", stubborn=True), "b": Writer("b", stubborn=False)}
    b_calls = RecordingObserver()  # B's API calls: its reads of the Lease while A holds it
    managers = {
        identity: Manager(
            client=replicas[identity],
            observers=[b_calls] if identity == "b" else [],
            options=ManagerOptions(
                namespace=namespace,
                leader_election=LeaderElectionConfig(
                    name=LEASE,
                    namespace=namespace,
                    identity=identity,
                    lease_duration=4,
                    renew_deadline=3,
                    retry_period=0.5,
                ),
                shutdown_grace=30.0,  # what a graceful stop would allow: lease loss must not wait
            ),
        )
        for identity in ("a", "b")
    }
    for identity, manager in managers.items():
        manager.add(
            Controller(
                name="writer",
                reconciler=writers[identity],
                primary=CONFIGMAPS,
                options=ControllerOptions(max_concurrent_reconciles=OBJECTS),
            )
        )

    def b_read_the_lease(times: int) -> bool:
        return sum(c.resource == "leases" and c.verb == "get" for c in b_calls.calls) >= times

    async with running(managers["a"]) as run_a:
        await eventually(lambda: writers["a"].writes >= 2 * OBJECTS, what="A leading and writing")
        async with running(managers["b"]):
            # B is up and campaigning: it found the Lease held, and again a retry later.
            await eventually(lambda: b_read_the_lease(2), what="B campaigning")
            assert writers["b"].writes == 0

            await take_lease(client, name=LEASE, namespace=namespace, holder="intruder")

            # Shielded: on a timeout, leaving the block stops A instead of cancelling it.
            reason = await asyncio.wait_for(asyncio.shield(run_a), timeout=10)
            assert reason == CancelReason.LEADER_LOST
            a_stopped = time.time()
            await eventually(
                lambda: writers["b"].writes >= 2 * OBJECTS, timeout=20, what="B writing"
            )
            lease = await client.get(LEASES, LEASE, namespace=namespace)
            assert lease["spec"]["holderIdentity"] == "b"
            b_acquired = _timestamp(lease["spec"]["acquireTime"])
            # A's stubborn reconciles tried to write after the loss, and were refused.
            await eventually(
                lambda: len(writers["a"].refused) > 0, timeout=10, what="A's late write"
            )

    writes = _audit_writes(control_plane.audit_log, namespace)
    by_a = [w for w in writes if "replica-a" in w["userAgent"]]
    by_b = [w for w in writes if "replica-b" in w["userAgent"]]
    assert by_a and by_b, "both replicas must have written, or the test proves nothing"
    late = [
        (w["userAgent"], w["requestReceivedTimestamp"])
        for w in writes
        if _timestamp(w["requestReceivedTimestamp"]) >= b_acquired
        and "replica-b" not in w["userAgent"]
    ]
    assert late == [], f"writes by others after B acquired the lease: {late}"
    # A stopped writing within a second of leaving run(), which it did when it
    # noticed the loss; its stubborn writes seconds later never arrived.
    last_a = max(_timestamp(w["requestReceivedTimestamp"]) for w in by_a)
    assert last_a <= a_stopped + 1.0
    assert all(isinstance(refused, NotLeading) for refused in writers["a"].refused)


async def test_standby_stops_writing_and_campaigns_again(
    control_plane: ControlPlane, client: Client, namespace: str, replicas: dict[str, Client]
) -> None:
    await client.create(CONFIGMAPS, {"metadata": {"name": "cm", "namespace": namespace}})
    writer = Writer("a", stubborn=False)
    recorder = RecordingObserver()
    metrics = RuntimeMetrics()
    manager = Manager(
        client=replicas["a"],
        observers=[recorder, metrics],
        options=ManagerOptions(
            namespace=namespace,
            health_bind="127.0.0.1:0",
            leader_election=LeaderElectionConfig(
                name=LEASE,
                namespace=namespace,
                identity="a",
                lease_duration=4,
                renew_deadline=3,
                retry_period=0.5,
            ),
            on_lease_loss="standby",
        ),
    )
    manager.add(Controller(name="writer", reconciler=writer, primary=CONFIGMAPS))
    async with running(manager) as run:
        await eventually(lambda: writer.writes >= 3, what="A leading and writing")
        await take_lease(client, name=LEASE, namespace=namespace, holder="intruder")
        await eventually(lambda: recorder.standbys == [LEASE], timeout=10, what="standing by")
        writes_at_loss = writer.writes
        stood_by = time.time()
        assert not run.done()  # it did not exit
        # Health is still served, and the standby is counted.
        async with aiohttp.ClientSession() as session:
            for probe in ("healthz", "readyz"):
                url = f"http://127.0.0.1:{manager.health_port}/{probe}"
                async with session.get(url) as response:
                    assert response.status == 200, probe
        registry = metrics.metrics.registry
        assert registry.get_sample_value("wukong_leader_standbys_total", {"name": LEASE}) == 1
        assert registry.get_sample_value("leader_election_master_status", {"name": LEASE}) == 0

        # The intruder's lease expires (4 s); A wins it back and writes again.
        await eventually(lambda: writer.writes > writes_at_loss + 2, timeout=20, what="A back")
        lease = await client.get(LEASES, LEASE, namespace=namespace)
        assert lease["spec"]["holderIdentity"] == "a"
        back = _timestamp(lease["spec"]["acquireTime"])
    # Campaigning, leading, lost; campaigning again, leading; released at the end.
    leading = [leading for _, leading in recorder.leadership]
    assert leading == [False, True, False, False, True, False]
    events = await client.list(EVENTS, namespace=namespace)
    standby = [e for e in events["items"] if e["reason"] == "StandingBy"]
    assert standby and standby[0]["involvedObject"]["kind"] == "Lease"
    # Between standing by and winning the Lease back, A wrote nothing.
    writes = _audit_writes(control_plane.audit_log, namespace)
    quiet = [
        w["requestReceivedTimestamp"]
        for w in writes
        if "replica-a" in w["userAgent"]
        and stood_by <= _timestamp(w["requestReceivedTimestamp"]) < back
    ]
    assert quiet == [], quiet


async def test_a_rolling_restart_of_two_replicas_is_no_error(
    client: Client,
    namespace: str,
    replicas: dict[str, Client],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each replica in turn stops (SIGTERM's path) under load and is replaced."""
    caplog.set_level(logging.DEBUG, logger="wukong")
    await _create_configmaps(client, namespace)
    metrics = RuntimeMetrics()  # one registry, as a dashboard sums the replicas

    def replica(identity: str) -> tuple[Manager, Writer]:
        writer = Writer(identity, stubborn=False)
        manager = Manager(
            client=replicas["a" if identity == "a-1" else "b"],
            observers=[metrics],
            options=ManagerOptions(
                namespace=namespace,
                leader_election=LeaderElectionConfig(
                    name=LEASE,
                    namespace=namespace,
                    identity=identity,
                    lease_duration=4,
                    renew_deadline=3,
                    retry_period=0.5,
                ),
            ),
        )
        manager.add(
            Controller(
                name="writer",
                reconciler=writer,
                primary=CONFIGMAPS,
                options=ControllerOptions(max_concurrent_reconciles=OBJECTS),
            )
        )
        return manager, writer

    first_a, writes_a = replica("a-1")
    first_b, writes_b = replica("b-1")
    async with running(first_a), running(first_b):
        await eventually(
            lambda: writes_a.writes + writes_b.writes >= 2 * OBJECTS, what="a replica leading"
        )
        leader, standby = (first_a, first_b) if writes_a.writes else (first_b, first_a)
        idle = writes_b if leader is first_a else writes_a
        # Roll: the standby is replaced, then the leader, whose Lease is released
        # on the way out, so the new replica takes over at once.
        replacement, new_writes = replica("c-1")
        standby.stop()
        async with running(replacement):
            leader.stop()
            await eventually(lambda: new_writes.writes >= 2 * OBJECTS, what="c-1 taking over")
    registry = metrics.metrics.registry
    assert registry.get_sample_value(
        "wukong_reconcile_cancellations_total", {"controller": "writer", "reason": "shutdown"}
    ), "no reconcile was in flight at a stop: the test proves nothing"
    assert (
        registry.get_sample_value(
            "controller_runtime_reconcile_errors_total", {"controller": "writer"}
        )
        == 0
    )
    assert (
        registry.get_sample_value(
            "controller_runtime_reconcile_total", {"controller": "writer", "result": "error"}
        )
        == 0
    )
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert idle.writes == 0  # a standby never wrote


async def _create_configmaps(client: Client, namespace: str) -> None:
    for index in range(OBJECTS):
        body = {"metadata": {"name": f"cm-{index}", "namespace": namespace}}
        await client.create(CONFIGMAPS, body)
