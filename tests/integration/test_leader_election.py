"""Leader election on a real Lease: exclusivity, crash takeover, release, loss.

Timings are short (lease 3 s, renew deadline 2 s, retry 0.5 s) so takeovers
happen within seconds; time bounds are generous behavioural checks, not
benchmarks.
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import RecordingObserver
from wukong.demo.drill import take_lease
from wukong.devcluster import ControlPlane
from wukong.devcluster.kubeconfig import kubeconfig_via
from wukong.devcluster.latency_proxy import LatencyProxy
from wukong.runtime import Client, LeaderElectionConfig, Object
from wukong.runtime._leader import LeaderElector
from wukong.runtime.resources import LEASES

LEASE = "wukong-leader"
LEASE_DURATION = 3.0
RENEW_DEADLINE = 2.0
RETRY_PERIOD = 0.5

ClientFactory = Callable[[], Awaitable[Client]]


def _config(namespace: str, identity: str) -> LeaderElectionConfig:
    return LeaderElectionConfig(
        name=LEASE,
        namespace=namespace,
        identity=identity,
        lease_duration=LEASE_DURATION,
        renew_deadline=RENEW_DEADLINE,
        retry_period=RETRY_PERIOD,
    )


def _now() -> float:
    return asyncio.get_running_loop().time()


async def _lease(client: Client, namespace: str) -> Object:
    return await client.get(LEASES, LEASE, namespace=namespace)


async def _stop(*tasks: "asyncio.Task[Any]") -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
async def new_client(control_plane: ControlPlane) -> AsyncIterator[ClientFactory]:
    """More clients on the same cluster: each elector gets its own connections."""
    clients: list[Client] = []

    async def make() -> Client:
        clients.append(await Client.from_kubeconfig(control_plane.kubeconfig))
        return clients[-1]

    yield make
    for client in clients:
        await client.close()


@pytest.fixture(autouse=True)
def _leader_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wukong.runtime.leader")


async def test_only_one_of_two_candidates_leads(
    client: Client, namespace: str, new_client: ClientFactory
) -> None:
    a = LeaderElector(client=client, config=_config(namespace, "a"))
    b = LeaderElector(client=await new_client(), config=_config(namespace, "b"))
    candidates = {asyncio.create_task(a.acquire()): a, asyncio.create_task(b.acquire()): b}
    tasks = list(candidates)
    try:
        done, pending = await asyncio.wait(
            candidates, timeout=LEASE_DURATION, return_when=asyncio.FIRST_COMPLETED
        )
        assert len(done) == 1
        (won,), (waiting,) = done, pending
        leader, follower = candidates[won], candidates[waiting]
        tasks.append(keeping := asyncio.create_task(leader.keep()))
        first = await _lease(client, namespace)

        # Two whole lease durations: the leader keeps renewing, so the other
        # candidate must never consider the lease expired.
        await asyncio.sleep(2 * LEASE_DURATION)
        assert not waiting.done()
        assert not keeping.done()
        assert leader.is_leader and not follower.is_leader

        lease = await _lease(client, namespace)
        assert lease["spec"]["holderIdentity"] == leader.identity
        assert lease["spec"]["leaseDurationSeconds"] == 3
        assert lease["spec"]["leaseTransitions"] == 0
        assert lease["spec"]["acquireTime"] == first["spec"]["acquireTime"]
        assert lease["spec"]["renewTime"] > first["spec"]["renewTime"]
    finally:
        await _stop(*tasks)


async def test_crashed_leader_is_replaced_after_lease_duration(
    client: Client, namespace: str, new_client: ClientFactory
) -> None:
    a = LeaderElector(client=client, config=_config(namespace, "a"))
    b = LeaderElector(client=await new_client(), config=_config(namespace, "b"))
    await a.acquire()
    keeping = asyncio.create_task(a.keep())
    waiting = asyncio.create_task(b.acquire())
    try:
        await asyncio.sleep(3 * RETRY_PERIOD)  # b sees the record change
        assert not waiting.done()

        # A crash: renewing stops, nothing is released.
        await _stop(keeping)
        crashed = _now()
        await asyncio.wait_for(waiting, timeout=LEASE_DURATION + 5)
        took_over = _now() - crashed

        # The last renew was sent at most one retry period before the crash,
        # so b must wait about a lease duration, and not much longer.
        assert LEASE_DURATION - 2 * RETRY_PERIOD <= took_over < LEASE_DURATION + 2
        assert b.is_leader
        lease = await _lease(client, namespace)
        assert lease["spec"]["holderIdentity"] == "b"
        assert lease["spec"]["leaseTransitions"] == 1
    finally:
        await _stop(keeping, waiting)


async def test_release_hands_over_at_once(
    client: Client, namespace: str, new_client: ClientFactory
) -> None:
    a = LeaderElector(client=client, config=_config(namespace, "a"))
    b = LeaderElector(client=await new_client(), config=_config(namespace, "b"))
    await a.acquire()
    keeping = asyncio.create_task(a.keep())
    waiting = asyncio.create_task(b.acquire())
    try:
        await asyncio.sleep(3 * RETRY_PERIOD)
        assert not waiting.done()

        await _stop(keeping)
        await a.release()
        released = _now()
        assert not a.is_leader
        await asyncio.wait_for(waiting, timeout=LEASE_DURATION)
        took_over = _now() - released

        # b's next poll (every retry period, jittered) takes the empty lease.
        assert took_over < 2 * RETRY_PERIOD + 0.5
        lease = await _lease(client, namespace)
        assert lease["spec"]["holderIdentity"] == "b"
        assert lease["spec"]["leaseTransitions"] == 1
    finally:
        await _stop(keeping, waiting)


async def test_release_clears_the_holder(client: Client, namespace: str) -> None:
    recorder = RecordingObserver()
    a = LeaderElector(client=client, config=_config(namespace, "a"), observer=recorder)
    await a.acquire()
    await a.release()
    await a.release()  # not leading any more: nothing to do

    spec = (await _lease(client, namespace))["spec"]
    assert spec["holderIdentity"] in ("", None)  # the server may drop the empty string
    assert spec["leaseDurationSeconds"] == 1
    assert not a.is_leader
    # Not leading while campaigning, then leading, then not.
    assert recorder.leadership == [(LEASE, False), (LEASE, True), (LEASE, False)]


async def test_leader_notices_another_holder(
    client: Client, namespace: str, new_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = RecordingObserver()
    a = LeaderElector(client=await new_client(), config=_config(namespace, "a"), observer=recorder)
    await a.acquire()
    keeping = asyncio.create_task(a.keep())
    try:
        await asyncio.sleep(2 * RETRY_PERIOD)
        await take_lease(client, name=LEASE, namespace=namespace, holder="intruder")
        overwritten = _now()

        await asyncio.wait_for(keeping, timeout=LEASE_DURATION)
        noticed = _now() - overwritten

        # The next renew (within a retry period) sees the other holder; far
        # sooner than the renew deadline, which would also end leadership.
        assert noticed < 2 * RETRY_PERIOD + 0.5
        assert noticed < RENEW_DEADLINE
        assert not a.is_leader
        assert recorder.leadership == [(LEASE, False), (LEASE, True), (LEASE, False)]
        assert "lost leadership" in caplog.text and "intruder" in caplog.text
        assert (await _lease(client, namespace))["spec"]["holderIdentity"] == "intruder"
    finally:
        await _stop(keeping)


@pytest.fixture
async def relay(
    control_plane: ControlPlane, tmp_path: Path
) -> AsyncIterator[tuple[LatencyProxy, Path]]:
    """A proxy to the API server that can be made to hang, and a kubeconfig through it."""
    proxy = LatencyProxy(target_host="127.0.0.1", target_port=control_plane.config.apiserver_port)
    await proxy.start()
    yield proxy, kubeconfig_via(control_plane.kubeconfig, tmp_path / "kubeconfig", port=proxy.port)
    await proxy.close()


async def test_hung_api_server_ends_leadership_by_the_renew_deadline(
    namespace: str, relay: tuple[LatencyProxy, Path], caplog: pytest.LogCaptureFixture
) -> None:
    proxy, kubeconfig = relay
    async with await Client.from_kubeconfig(kubeconfig) as relayed:
        a = LeaderElector(client=relayed, config=_config(namespace, "a"))
        await a.acquire()
        keeping = asyncio.create_task(a.keep())
        try:
            await asyncio.sleep(2 * RETRY_PERIOD)
            proxy.delay = 3600  # connected, but the server never answers
            hung = _now()
            await asyncio.wait_for(keeping, timeout=LEASE_DURATION + 2)
            stepped_down = _now() - hung

            # The last renew was sent before the hang: leadership ends by its
            # renew deadline, before anyone could take over (lease duration).
            assert stepped_down < RENEW_DEADLINE + 0.3
            assert stepped_down < LEASE_DURATION
            assert not a.is_leader
            assert "no successful renew" in caplog.text

            await a.release()  # not leading any more: nothing to do, no waiting
        finally:
            await _stop(keeping)


async def test_release_never_raises(
    namespace: str, relay: tuple[LatencyProxy, Path], caplog: pytest.LogCaptureFixture
) -> None:
    proxy, kubeconfig = relay
    async with await Client.from_kubeconfig(kubeconfig) as relayed:
        a = LeaderElector(client=relayed, config=_config(namespace, "a"))
        await a.acquire()
        proxy.delay = 3600  # connected, but the server never answers
        started = _now()
        await a.release(timeout=0.5)
        assert _now() - started < 1.5
        assert not a.is_leader
        assert any(
            r.levelno == logging.WARNING and "could not release" in r.getMessage()
            for r in caplog.records
        )


@pytest.mark.parametrize(
    ("timings", "message"),
    [
        (
            {"lease_duration": 10.0, "renew_deadline": 10.0, "retry_period": 2.0},
            r"lease_duration \(10.0s\) must be greater than renew_deadline \(10.0s\)",
        ),
        (
            {"lease_duration": 15.0, "renew_deadline": 2.0, "retry_period": 3.0},
            r"renew_deadline \(2.0s\) must be greater than retry_period \(3.0s\)",
        ),
        ({"retry_period": 0.0}, r"retry_period must be positive"),
    ],
)
def test_config_rejects_timings_that_do_not_nest(timings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LeaderElectionConfig(name=LEASE, namespace="default", **timings)


def test_config_defaults() -> None:
    config = LeaderElectionConfig(name=LEASE, namespace="default")
    assert (config.lease_duration, config.renew_deadline, config.retry_period) == (15, 10, 2)
    assert config.identity != LeaderElectionConfig(name=LEASE, namespace="default").identity
    with pytest.raises(ValueError, match="identity must not be empty"):
        LeaderElectionConfig(name=LEASE, namespace="default", identity="")
