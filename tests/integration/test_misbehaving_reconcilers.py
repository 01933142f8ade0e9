"""Reconcilers that ignore cancellation are detected and reported, never waited on silently."""

import asyncio
import logging
import time

import pytest

from tests.integration.helpers import eventually
from wukong.runtime.client import Client
from wukong.runtime.context import CancelReason, ReconcileContext, Request, Result
from wukong.runtime.controller import Controller, ControllerOptions
from wukong.runtime.lifecycle import LifecycleEvent, Step
from wukong.runtime.manager import Manager
from wukong.runtime.resources import CONFIGMAPS


class SwallowsCancellation:
    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(1.5)  # carries on as if nothing happened
        return Result()


class BlocksTheLoop:
    def __init__(self) -> None:
        self.calls = 0

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        self.calls += 1
        if self.calls == 1:
            time.sleep(1.5)  # noqa: ASYNC251 - the blocking call under test
        return Result()


async def test_swallowed_cancellation_is_reported_stuck(
    client: Client, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wukong")
    stuck = asyncio.Event()
    events: list[LifecycleEvent] = []

    def watch(event: LifecycleEvent) -> None:
        events.append(event)
        if event.step is Step.STUCK:
            stuck.set()

    manager = Manager(client=client, namespace=namespace, lifecycle_observers=[watch])
    manager.add(
        Controller(
            name="swallower",
            reconciler=SwallowsCancellation(),
            primary=CONFIGMAPS,
            options=ControllerOptions(reconcile_timeout=0.5, cancel_grace=0.5),
        )
    )
    run = asyncio.create_task(manager.run())
    await client.create(CONFIGMAPS, {"metadata": {"name": "cm", "namespace": namespace}})
    await asyncio.wait_for(stuck.wait(), 30)
    manager.stop()
    await run

    report = next(e for e in events if e.step is Step.STUCK)
    assert report.reason is CancelReason.DEADLINE_EXCEEDED
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and "did not stop" in r.getMessage()
    ]
    assert warnings and getattr(warnings[0], "object_name", None) == "cm"


async def test_blocking_reconcile_is_reported(
    client: Client, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="wukong")
    reconciler = BlocksTheLoop()
    manager = Manager(client=client, namespace=namespace, block_warning_seconds=0.5)
    manager.add(Controller(name="blocker", reconciler=reconciler, primary=CONFIGMAPS))
    run = asyncio.create_task(manager.run())
    await client.create(CONFIGMAPS, {"metadata": {"name": "cm", "namespace": namespace}})
    await eventually(lambda: reconciler.calls >= 1, what="the blocking reconcile")
    await eventually(
        lambda: manager.block_detector is not None and manager.block_detector.blocks >= 1,
        what="a block report",
    )
    manager.stop()
    await run
    reports = [r.getMessage() for r in caplog.records if "event loop blocked" in r.getMessage()]
    assert reports and f"reconcile blocker {namespace}/cm" in reports[0]
