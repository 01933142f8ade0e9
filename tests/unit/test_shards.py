"""The shard space: the API server's hash, ranges, selectors and the client-side filter."""

import asyncio
import contextlib
import hashlib
import json
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s_client
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.running import configmap_controller
from wukong.metrics import RuntimeMetrics
from wukong.runtime import (
    ApiError,
    CancelReason,
    Client,
    Informer,
    Object,
    ReconcileContext,
    Request,
    Resource,
    Result,
    RuntimeObserver,
)
from wukong.runtime._client import WatchEvent
from wukong.runtime._errors import NotFound
from wukong.runtime._fence import WriteFence
from wukong.runtime._leader import LeaderElectionConfig
from wukong.runtime._shards import (
    COUNT_LABEL,
    GROUP_LABEL,
    ROLE_LABEL,
    UNSHARDED,
    LiveLeases,
    ShardFilter,
    ShardHolder,
    ShardLeaseCheck,
    ShardSpace,
    ShardSpans,
    _dns_label,
    fnv1a64,
    space_of,
)
from wukong.runtime.observe import LifecycleEvent, Step
from wukong.runtime.resources import CONFIGMAPS
from wukong.tracing.sampling import TailSampling
from wukong.tracing.spans import ReconcileTracer


def test_fnv1a64_matches_the_reference_vectors() -> None:
    # From the FNV reference test suite (64-bit FNV-1a).
    assert fnv1a64("") == 0xCBF29CE484222325
    assert fnv1a64("a") == 0xAF63DC4C8601EC8C
    assert fnv1a64("foobar") == 0x85944171F73967E8


def test_shards_cover_the_hash_space_without_gaps() -> None:
    space = ShardSpace(3)
    bounds = [space.bounds(shard) for shard in range(3)]
    assert bounds[0][0] == 0
    assert bounds[-1][1] == 1 << 64
    assert all(bounds[i][1] == bounds[i + 1][0] for i in range(2))
    for key in ("default", "tenant-a", "kube-system", "x" * 63):
        low, high = space.bounds(space.shard_of_key(key))
        assert low <= fnv1a64(key) < high


def test_selector_merges_adjacent_ranges_and_ors_the_rest() -> None:
    space = ShardSpace(4)
    assert space.selector([0, 1]) == (
        "shardRange(object.metadata.namespace, '0x0000000000000000', '0x8000000000000000')"
    )
    assert space.selector([3, 0]) == (
        "shardRange(object.metadata.namespace, '0x0000000000000000', '0x4000000000000000')"
        " || shardRange(object.metadata.namespace, '0xc000000000000000', '0x10000000000000000')"
    )
    assert ShardSpace(1, "uid").selector([0]) == (
        "shardRange(object.metadata.uid, '0x0000000000000000', '0x10000000000000000')"
    )


def test_filter_keeps_the_held_shards_and_every_cluster_scoped_object() -> None:
    shards = ShardFilter(ShardSpace(8))
    namespaces = [f"ns-{hashlib.sha1(bytes([i])).hexdigest()[:10]}" for i in range(40)]
    assert shards.selector is None
    shards.held = frozenset({1, 5})
    kept = [ns for ns in namespaces if shards.accepts({"metadata": {"namespace": ns}})]
    assert kept == [ns for ns in namespaces if ShardSpace(8).shard_of_key(ns) in {1, 5}]
    assert 0 < len(kept) < len(namespaces)
    assert shards.accepts({"metadata": {"name": "a-storage-class"}})


def test_fence_refuses_writes_to_shards_not_held() -> None:
    held = {"mine"}
    fence = WriteFence(shards=lambda ns: None if ns in held or ns is None else f"lease-of-{ns}")
    assert fence.refuses("mine") is None
    assert fence.refuses(None) is None
    assert fence.refuses("theirs") == "lease-of-theirs"
    fence.close("leader")
    assert fence.refuses("mine") == "leader"


def test_a_space_needs_a_shard() -> None:
    with pytest.raises(ValueError):
        ShardSpace(0)


def test_names_that_differ_only_at_the_end_crowd_into_few_shards() -> None:
    """Why sharding by namespace skews: FNV-1a mixes a string's last bytes into its
    low bits only, and the shards are ranges of the high bits."""
    space = ShardSpace(8)
    by_suffix = Counter(space.shard_of_key(f"tenant-{i}") for i in range(200))
    by_uid = Counter(
        space.shard_of_key(str(uuid.uuid5(uuid.NAMESPACE_OID, str(i)))) for i in range(2000)
    )
    assert len(by_suffix) <= 3
    assert len(by_uid) == 8


def test_metrics_count_shards_held_and_handoffs_by_reason() -> None:
    metrics = RuntimeMetrics()
    registry = metrics.metrics.registry
    assert registry.get_sample_value("wukong_shards_held") == 0
    metrics.shards_changed(frozenset({0, 1, 2}), 3, "acquired")
    metrics.shards_changed(frozenset({0, 1}), 1, "rebalance")
    metrics.shard_filtering("configmaps", "client")
    assert registry.get_sample_value("wukong_shards_held") == 2
    handoffs = "wukong_shard_handoffs_total"
    assert registry.get_sample_value(handoffs, {"reason": "acquired"}) == 3
    assert registry.get_sample_value(handoffs, {"reason": "rebalance"}) == 1
    filtering = "wukong_shard_client_filtering_total"
    assert registry.get_sample_value(filtering, {"resource": "configmaps"}) == 1


class _Server:
    """A fake API server's list and watch of ConfigMaps in four namespaces, one per shard."""

    def __init__(self, *, refuses: bool = False, echoes: bool = False) -> None:
        space = ShardSpace(4)
        names: dict[int, str] = {}
        for i in range(1000):
            name = f"ns-{hashlib.sha1(str(i).encode()).hexdigest()[:8]}"
            names.setdefault(space.shard_of_key(name), name)
        self.objects = [
            {"metadata": {"name": "c", "namespace": ns, "resourceVersion": "1", "uid": ns}}
            for ns in names.values()
        ]
        self.refuses, self.echoes = refuses, echoes
        self.selectors: list[str | None] = []

    async def list(self, resource: Resource, **kwargs: Any) -> Object:
        selector = kwargs.get("shard_selector")
        self.selectors.append(selector)
        if selector and self.refuses:
            raise ApiError(status=400, reason="BadRequest", message="no", verb="list", path="/")
        metadata: dict[str, Any] = {"resourceVersion": "1"}
        if selector and self.echoes:
            metadata["shardInfo"] = {"selector": selector}
        return {"items": self.objects, "metadata": metadata}

    async def _list_text(self, resource: Resource, **kwargs: Any) -> str:
        return json.dumps(await self.list(resource, **kwargs))

    async def watch(self, resource: Resource, **kwargs: Any) -> AsyncIterator[WatchEvent]:
        self.selectors.append(kwargs.get("shard_selector"))
        await asyncio.Event().wait()
        yield WatchEvent("BOOKMARK", {})  # never reached


class _Filtering(RuntimeObserver):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def shard_filtering(self, resource: str, where: str) -> None:
        self.seen.append((resource, where))


async def _informer_on(server: _Server) -> tuple[Informer, _Filtering]:
    shards = ShardFilter(ShardSpace(4))
    shards.held = frozenset({1, 2})
    observer = _Filtering()
    informer = Informer(
        client=server,  # type: ignore[arg-type]
        resource=CONFIGMAPS,
        shards=shards,
        observer=observer,
    )
    task = asyncio.create_task(informer.run())
    await asyncio.wait_for(informer.synced.wait(), 5)
    await asyncio.sleep(0.05)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    held = {obj["metadata"]["namespace"] for obj in informer.store.list_objects()}
    assert {shards.shard_of_key(ns) for ns in held} == {1, 2}
    return informer, observer


async def test_a_server_that_echoes_the_selector_filters() -> None:
    server = _Server(echoes=True)
    shards = ShardFilter(ShardSpace(4))
    server.objects = [o for o in server.objects if shards.shard_of(o) in {1, 2}]
    informer, observer = await _informer_on(server)
    assert informer.filtered_by == "server"
    assert informer.foreign_objects == 0 and not observer.seen


async def test_a_server_that_ignores_the_selector_is_filtered_on_this_side() -> None:
    informer, observer = await _informer_on(_Server())
    assert informer.filtered_by == "client"
    assert informer.foreign_objects == 2
    assert observer.seen == [("configmaps", "client")]


async def test_a_server_that_refuses_the_selector_is_asked_without_it() -> None:
    server = _Server(refuses=True)
    informer, observer = await _informer_on(server)
    assert informer.filtered_by == "client"
    assert server.selectors[0] is not None and server.selectors[1:] == [None, None]
    assert observer.seen == [("configmaps", "client")]


class _Span:
    def __init__(self) -> None:
        self.attributes: dict[str, Any] = {}

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value


async def test_reconcile_spans_carry_the_shard_of_their_namespace() -> None:
    space = ShardSpace(4)
    ctx = ReconcileContext(
        controller="c",
        request=Request("tenant-a", "obj"),
        timeout=2.0,
        client=None,  # type: ignore[arg-type]
        logger=logging.getLogger("test"),
    )
    ctx.span = _Span()
    ShardSpans(space).reconcile(LifecycleEvent(Step.STARTED, ctx))
    assert ctx.span.attributes == {"wukong.shard": space.shard_of_key("tenant-a")}


class _SpanCurrent:
    """Records, for each reconcile, its `ctx.span` and the span current while it runs."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[Any, Any]] = {}

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        self.seen[request.namespace] = (ctx.span, trace.get_current_span())
        return Result()


class _CurrentAtFinish(RuntimeObserver):
    """Records the span current in the reconcile's task as each reconcile ends (it
    hears FINISHED after the tracer, which has taken its span back by then)."""

    def __init__(self) -> None:
        self.current: list[Any] = []

    def reconcile(self, event: LifecycleEvent) -> None:
        if event.step is Step.FINISHED:
            self.current.append(trace.get_current_span())


@pytest.mark.looptime
async def test_the_tracers_spans_carry_the_shard_through_the_runtime() -> None:
    # The tracer sets the reconcile's span at STARTED, so ShardSpans (after it)
    # finds it there; the span is current while the reconcile runs, and only then.
    space = ShardSpace(4)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = ReconcileTracer(provider=provider, sampling=TailSampling(keep_ratio=1.0))
    reconciler, at_finish = _SpanCurrent(), _CurrentAtFinish()
    async with Client(k8s_client.ApiClient(configuration=k8s_client.Configuration())) as client:
        controller = configmap_controller(
            reconciler, client, tracer, ShardSpans(space), at_finish, workers=1
        )
        controller.start()
        for namespace in ("tenant-a", "tenant-b", "tenant-c"):
            controller.enqueue(Request(namespace, "obj"))
        await asyncio.sleep(0.1)
        await controller.stop(reason=CancelReason.SHUTDOWN, grace=1.0)
    assert at_finish.current == [trace.INVALID_SPAN] * 3  # taken back in the worker
    shards = {
        span.attributes["k8s.namespace.name"]: span.attributes["wukong.shard"]
        for span in exporter.get_finished_spans()
        if span.attributes is not None and "wukong.shard" in span.attributes
    }
    assert shards == {ns: space.shard_of_key(ns) for ns in ("tenant-a", "tenant-b", "tenant-c")}
    spans = [span for span, _ in reconciler.seen.values()]
    assert len({id(span) for span in spans}) == 3  # one each, none inherited from the last
    for span, current in reconciler.seen.values():
        assert current is span


def test_member_lease_names_stay_unique_for_long_identities() -> None:
    a, b = "x" * 60 + "_1", "x" * 60 + "_2"
    assert _dns_label(a) != _dns_label(b)
    assert len(_dns_label(a)) <= 63
    assert _dns_label("Host_01").startswith("host-01-")


# One shard space at a time: which Leases are flags of which space, and who waits.

_GROUP = "wk"


def _lease(
    name: str,
    holder: str | None,
    *,
    space: ShardSpace | None = None,
    role: str = "shard",
    renew: str = "2026-01-01T00:00:00.000000Z",
    duration: int | None = 15,
) -> Object:
    labels = {GROUP_LABEL: _GROUP, ROLE_LABEL: role, **dict(space.labels if space else ())}
    spec: dict[str, Any] = {"holderIdentity": holder, "renewTime": renew}
    if duration is not None:
        spec["leaseDurationSeconds"] = duration
    return {"metadata": {"name": name, "namespace": "ns", "labels": labels}, "spec": spec}


def _shard_leases(space: ShardSpace, holder: str) -> list[Object]:
    return [_lease(f"{_GROUP}-shard-{i}", holder, space=space) for i in range(space.count)]


def _leader_lease(holder: str) -> Object:
    return {
        "metadata": {"name": _GROUP, "namespace": "ns"},
        "spec": {"holderIdentity": holder, "renewTime": "2026-01-01T00:00:00.000000Z"},
    }


class _Clock:
    """The running loop's monotonic clock, moved by hand."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        loop = asyncio.get_running_loop()
        self.now = loop.time()
        monkeypatch.setattr(loop, "time", lambda: self.now)


@pytest.fixture
async def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    """The test's loop clock, moved by hand."""
    return _Clock(monkeypatch)


@pytest.fixture
def live() -> LiveLeases:
    """Liveness as replica "me" times it; 15 s for a Lease that names no duration."""
    return LiveLeases("me", default_duration=15)


class _Conflicts(RuntimeObserver):
    def __init__(self) -> None:
        self.seen: list[bool] = []

    def space_conflict(self, conflict: bool) -> None:
        self.seen.append(conflict)


class _LeaseServer:
    """A fake API server holding a group's Leases (and maybe the single leader's);
    it refuses any write, so a test sees whether a replica tried to take a Lease."""

    def __init__(self, leases: list[Object], leader: Object | None = None) -> None:
        self.leases, self.leader = leases, leader
        self.writes: list[str] = []

    async def list(self, resource: Resource, **kwargs: Any) -> Object:
        assert kwargs["label_selector"] == f"{GROUP_LABEL}={_GROUP}"
        return {"items": list(self.leases), "metadata": {"resourceVersion": "1"}}

    async def get(self, resource: Resource, name: str, **kwargs: Any) -> Object:
        if name == _GROUP and self.leader is not None:
            return self.leader
        raise NotFound(status=404, reason="NotFound", message=name, verb="get", path=name)

    async def _write(self, verb: str, *args: Any, **kwargs: Any) -> Object:
        self.writes.append(verb)
        raise ApiError(status=403, reason="Forbidden", message="no", verb=verb, path="/")

    async def create(self, *args: Any, **kwargs: Any) -> Object:
        return await self._write("create", *args, **kwargs)

    async def update(self, *args: Any, **kwargs: Any) -> Object:
        return await self._write("update", *args, **kwargs)

    async def patch(self, *args: Any, **kwargs: Any) -> Object:
        return await self._write("patch", *args, **kwargs)


def _election(identity: str) -> LeaderElectionConfig:
    return LeaderElectionConfig(name=_GROUP, namespace="ns", identity=identity)


def _live_for(live: LiveLeases, clock: _Clock, lease: Object, seconds: float) -> None:
    """`lease`, unchanged, stays live until `seconds` from now have passed, then is not."""
    start = clock.now
    clock.now = start + seconds - 0.1
    assert live.live([lease]) == [lease]
    clock.now = start + seconds
    assert live.live([lease]) == []


def test_a_lease_records_its_shard_space_in_its_labels() -> None:
    by_namespace = _lease("wk-shard-3", "a", space=ShardSpace(12))
    by_uid = _lease("wk-shard-3", "a", space=ShardSpace(16, "uid"))
    assert space_of(by_namespace, group=_GROUP) == "12 shards by namespace"
    assert space_of(by_namespace, group=_GROUP) == str(ShardSpace(12))
    assert space_of(by_uid, group=_GROUP) == "16 shards by uid"


def test_a_lease_without_both_space_labels_is_of_an_unknown_space() -> None:
    unlabelled = _lease("wk-shard-3", "a")
    count_only = _lease("wk-shard-3", "a")
    count_only["metadata"]["labels"][COUNT_LABEL] = "12"
    no_labels = {"metadata": {"name": "wk-shard-3"}, "spec": {"holderIdentity": "a"}}
    assert space_of(unlabelled, group=_GROUP) == "unknown"
    assert space_of(count_only, group=_GROUP) == "unknown"
    assert space_of(no_labels, group=_GROUP) == "unknown"


def test_the_single_leaders_lease_is_the_unsharded_space() -> None:
    assert space_of(_leader_lease("a"), group=_GROUP) == UNSHARDED
    # Named after the group, it is the leader's whatever labels it carries.
    labelled = _lease(_GROUP, "a", space=ShardSpace(12))
    assert space_of(labelled, group=_GROUP) == UNSHARDED
    assert space_of(_leader_lease("a"), group="other") == "unknown"


async def test_a_lease_first_seen_is_live_until_its_duration_passes_unchanged(
    clock: _Clock, live: LiveLeases
) -> None:
    # A renewTime long past counts for nothing: other machines' clocks never do.
    lease = _lease("wk-shard-0", "other", renew="2000-01-01T00:00:00.000000Z", duration=10)
    assert live.live([lease]) == [lease]
    _live_for(live, clock, lease, 10)


async def test_a_renewed_lease_is_timed_again_from_when_the_renewal_was_seen(
    clock: _Clock, live: LiveLeases
) -> None:
    lease = _lease("wk-shard-0", "other", renew="t1", duration=10)
    live.live([lease])
    clock.now += 8
    renewed = _lease("wk-shard-0", "other", renew="t2", duration=10)
    assert live.live([renewed]) == [renewed]
    # Live 10s from the renewal, well past 10s from when the Lease was first seen.
    _live_for(live, clock, renewed, 10)
    # A new holder is a change too.
    taken = _lease("wk-shard-0", "third", renew="t2", duration=10)
    assert live.live([taken]) == [taken]


async def test_a_lease_without_a_duration_is_timed_by_the_default(
    clock: _Clock, live: LiveLeases
) -> None:
    lease = _lease("wk-shard-0", "other", duration=None)
    live.live([lease])
    _live_for(live, clock, lease, 15)


async def test_released_leases_are_never_live_and_this_replicas_own_always_are(
    clock: _Clock, live: LiveLeases
) -> None:
    released = _lease("wk-shard-0", None)
    empty = _lease("wk-shard-1", "")
    mine = _lease("wk-shard-2", "me")
    assert live.live([released, empty, mine]) == [mine]
    clock.now += 60
    assert live.live([released, empty, mine]) == [mine]


async def test_a_lease_gone_from_the_list_is_first_seen_again_when_it_returns(
    clock: _Clock, live: LiveLeases
) -> None:
    lease = _lease("wk-shard-0", "other", duration=10)
    live.live([lease])
    clock.now += 11
    assert live.live([]) == []
    assert live.live([lease]) == [lease]


async def _after_a_round(server: _LeaseServer, space: ShardSpace) -> tuple[ShardHolder, _Conflicts]:
    """A replica "new-0" of `space` after one round against `server`, and what it told
    its observers; it expects no handoff."""
    conflicts = _Conflicts()
    holder = ShardHolder(
        client=server,  # type: ignore[arg-type]
        space=space,
        election=_election("new-0"),
        on_change=_no_change,
        observer=conflicts,
    )
    await holder.run_round()
    return holder, conflicts


async def test_a_replica_of_another_space_waits_while_the_old_spaces_shards_are_live() -> None:
    server = _LeaseServer(_shard_leases(ShardSpace(12), "old-0"))
    holder, conflicts = await _after_a_round(server, ShardSpace(16))
    assert holder.held == frozenset() and server.writes == []
    assert holder.conflict == "12 shards by namespace held by old-0"
    assert conflicts.seen == [True]


async def test_a_sharded_replica_waits_while_the_single_leader_is_live() -> None:
    server = _LeaseServer([], leader=_leader_lease("leader-0"))
    holder, conflicts = await _after_a_round(server, ShardSpace(4))
    assert holder.held == frozenset() and server.writes == []
    assert holder.conflict == f"{UNSHARDED} held by leader-0"
    assert conflicts.seen == [True]


async def test_a_replica_of_the_same_space_sees_no_conflict() -> None:
    # Every shard held by a live peer of the same space, and a member Lease of
    # another space (members are no flags): nothing to take, nothing to wait for.
    leases = _shard_leases(ShardSpace(4), "peer-0")
    leases.append(_lease("wk-member-old", "old-0", space=ShardSpace(12), role="member"))
    server = _LeaseServer(leases)
    holder, conflicts = await _after_a_round(server, ShardSpace(4))
    assert holder.conflict == "" and True not in conflicts.seen
    assert holder.held == frozenset() and server.writes == []


async def test_a_replica_holding_nothing_tries_a_free_shard_when_no_other_space_is_live() -> None:
    # Free shards of its own space: it tries to take one (the server refuses the
    # write here), which it never does while another space is live.
    server = _LeaseServer([_lease("wk-shard-0", None, space=ShardSpace(12))])
    holder, conflicts = await _after_a_round(server, ShardSpace(4))
    assert server.writes and holder.conflict == "" and True not in conflicts.seen


async def _no_change(gained: frozenset[int], lost: frozenset[int], reason: str) -> None:
    raise AssertionError(f"no handoff expected: +{set(gained)} -{set(lost)} ({reason})")


def _check(server: _LeaseServer, observer: RuntimeObserver) -> ShardLeaseCheck:
    return ShardLeaseCheck(
        client=server,  # type: ignore[arg-type]
        election=_election("leader-0"),
        observer=observer,
    )


async def test_a_single_leader_refuses_to_lead_while_shard_leases_are_live() -> None:
    conflicts = _Conflicts()
    check = _check(_LeaseServer(_shard_leases(ShardSpace(2), "sharded-0")), conflicts)
    reason = await check()
    assert (
        reason == "sharded replicas are live in group wk: 2 shards by namespace held by sharded-0"
    )
    assert conflicts.seen == [True]


async def test_a_single_leader_leads_once_the_shard_leases_expire(clock: _Clock) -> None:
    conflicts = _Conflicts()
    check = _check(_LeaseServer(_shard_leases(ShardSpace(2), "sharded-0")), conflicts)
    assert await check() is not None
    clock.now += 15
    assert await check() is None
    assert conflicts.seen == [True, False]


async def test_a_single_leader_ignores_released_shard_and_member_leases() -> None:
    leases = [
        _lease("wk-shard-0", None, space=ShardSpace(2)),
        _lease("wk-member-x", "sharded-0", space=ShardSpace(2), role="member"),
    ]
    conflicts = _Conflicts()
    assert await _check(_LeaseServer(leases), conflicts)() is None
    assert conflicts.seen == [False]


async def test_a_single_leader_that_cannot_list_the_shard_leases_does_not_lead() -> None:
    class _Down(_LeaseServer):
        async def list(self, resource: Resource, **kwargs: Any) -> Object:
            raise ApiError(status=503, reason="Unavailable", message="x", verb="list", path="/")

    reason = await _check(_Down([]), _Conflicts())()
    assert reason is not None and reason.startswith("cannot list the shard Leases")
