"""A reconcile's context: the first cancel reason wins and really cancels; its deadline."""

import asyncio
import logging

import pytest
from kubernetes_asyncio import client as k8s_client

from wukong.runtime import CancelReason, Client, ReconcileContext, Request


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
