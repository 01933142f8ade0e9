"""Reconcilers that ignore cancellation are detected and reported, never waited on silently."""

import asyncio
import logging
import time

import pytest

from tests.integration.helpers import RecordingObserver, running
from tests.polling import eventually
from wukong.runtime import (
    CancelReason,
    Client,
    Controller,
    ControllerOptions,
    Manager,
    ManagerOptions,
    ReconcileContext,
    Request,
    Result,
)
from wukong.runtime.observe import Step
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
    recorder = RecordingObserver()
    manager = Manager(
        client=client, observers=[recorder], options=ManagerOptions(namespace=namespace)
    )
    manager.add(
        Controller(
            name="swallower",
            reconciler=SwallowsCancellation(),
            primary=CONFIGMAPS,
            options=ControllerOptions(reconcile_timeout=0.5, cancel_grace=0.5),
        )
    )
    async with running(manager):
        await client.create(CONFIGMAPS, {"metadata": {"name": "cm", "namespace": namespace}})
        await eventually(
            lambda: bool(recorder.steps(Step.STUCK)), timeout=30, what="a STUCK report"
        )

    report = recorder.steps(Step.STUCK)[0]
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
    recorder = RecordingObserver()
    manager = Manager(
        client=client,
        observers=[recorder],
        options=ManagerOptions(namespace=namespace, block_warning_seconds=0.5),
    )
    manager.add(Controller(name="blocker", reconciler=reconciler, primary=CONFIGMAPS))
    async with running(manager):
        await client.create(CONFIGMAPS, {"metadata": {"name": "cm", "namespace": namespace}})
        await eventually(lambda: reconciler.calls >= 1, what="the blocking reconcile")
        await eventually(lambda: bool(recorder.blocks), what="a block report to the observers")
    reports = [r.getMessage() for r in caplog.records if "event loop blocked" in r.getMessage()]
    assert reports and f"reconcile blocker {namespace}/cm" in reports[0]
    seconds, task = recorder.blocks[0]
    assert seconds >= 0.5 and task == f"reconcile blocker {namespace}/cm"
