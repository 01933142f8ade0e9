"""Reconcile context cancel semantics, label selectors and the cache's indexes."""

import asyncio
import logging

import pytest
from kubernetes_asyncio import client as k8s_client

from wukong.runtime import CancelReason, Client, ReconcileContext, Request, Store
from wukong.runtime._labels import parse_selector


def _context(timeout: float = 5.0) -> ReconcileContext:
    client = Client(k8s_client.ApiClient(configuration=k8s_client.Configuration()))
    return ReconcileContext(
        controller="c",
        request=Request("ns", "obj"),
        timeout=timeout,
        client=client,
        logger=logging.getLogger("test"),
    )


async def test_first_cancel_reason_wins_and_really_cancels() -> None:
    ctx = _context()
    task = asyncio.create_task(asyncio.sleep(30))
    ctx._attach(task)
    assert ctx.cancel(CancelReason.SHUTDOWN)
    assert not ctx.cancel(CancelReason.DEADLINE_EXCEEDED)  # a later deadline is not the cause
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ctx.cancel_reason is CancelReason.SHUTDOWN


async def test_deadline_bounds_the_context() -> None:
    ctx = _context(timeout=2.0)
    assert 1.9 < ctx.remaining() <= 2.0
    assert (ctx.deadline_wall - ctx.started_wall).total_seconds() == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("app=web", {"app": "web"}, True),
        ("app==web,tier!=db", {"app": "web", "tier": "db"}, False),
        ("tier in (db, cache)", {"tier": "cache"}, True),
        ("tier notin (db)", {}, True),
        ("app,!legacy", {"app": "x"}, True),
        ("!app", {"app": "x"}, False),
    ],
)
def test_label_selectors(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(selector)(labels) is expected


def test_malformed_selector_is_an_error() -> None:
    with pytest.raises(ValueError, match="invalid label selector"):
        parse_selector("a in b")


def test_index_follows_updates_and_removals() -> None:
    store = Store()
    store.add_index("pod", lambda obj: [obj["spec"]["podName"]] if "podName" in obj["spec"] else [])
    store.upsert(
        {
            "metadata": {"name": "vm", "namespace": "ns", "managedFields": [{}]},
            "spec": {"podName": "p1"},
        }
    )
    assert [o["metadata"]["name"] for o in store.by_index("pod", "p1")] == ["vm"]
    assert "managedFields" not in store.get("ns/vm")["metadata"]  # type: ignore[index]
    store.upsert({"metadata": {"name": "vm", "namespace": "ns"}, "spec": {"podName": "p2"}})
    assert store.by_index("pod", "p1") == []
    store.remove("ns/vm")
    assert store.by_index("pod", "p2") == []


def test_reads_return_copies_the_cache_keeps() -> None:
    store = Store()
    old, stored = store.upsert({"metadata": {"name": "a", "namespace": "ns"}, "data": {"k": "1"}})
    assert old is None and stored["data"] == {"k": "1"}
    read = store.get("ns/a")
    assert read == stored
    read["data"]["k"] = "changed by a careless reconciler"  # type: ignore[index]
    assert store.get("ns/a")["data"] == {"k": "1"}  # type: ignore[index]
    old, _ = store.upsert({"metadata": {"name": "a", "namespace": "ns"}, "data": {"k": "2"}})
    assert old is not None and old["data"] == {"k": "1"}
    assert [o["data"] for o in store.list_objects(namespace="ns")] == [{"k": "2"}]
    assert store.list_objects(namespace="other") == []
