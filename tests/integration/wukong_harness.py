"""Runs the Wukong controller and the simulated infrastructure for a test.

`infrastructure` installs the Wukong CRD and the simulated systems' CRDs and
StorageClasses (once per session, idempotent). `start_wukong(...)` starts the
simulator and an operator manager scoped to the test namespace; both stop at
the end of the test.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.integration.helpers import RecordingObserver
from tests.polling import eventually
from wukong.devcluster.apis import install_dev_apis
from wukong.devcluster.simulator import SimulationConfig, simulator_manager
from wukong.operator.api import WUKONGS
from wukong.operator.controller import add_wukong_controller
from wukong.runtime import (
    DEFAULT_RECONCILE_TIMEOUT,
    Client,
    LeaderElectionConfig,
    Manager,
    ManagerOptions,
    NotFound,
    Object,
)
from wukong.runtime.apis import NETWORK_ATTACHMENT_DEFINITIONS
from wukong.runtime.observe import ApiCall, LifecycleEvent
from wukong.runtime.resources import EVENTS, Resource


@pytest.fixture
async def infrastructure(client: Client) -> None:
    await install_dev_apis(client)


@dataclass
class WukongRun:
    client: Client
    namespace: str
    operator: Manager
    lifecycle: list[LifecycleEvent] = field(default_factory=list)  # the operator's reconciles
    calls: list[ApiCall] = field(default_factory=list)  # the operator's API calls
    operator_task: "asyncio.Task[Any] | None" = None
    # Starts a fresh operator (same settings), for tests that stop it for a while.
    start_operator: Callable[[], None] = lambda: None

    async def stop_operator(self) -> None:
        """Stop the operator (before closing a client it uses); the simulator goes on."""
        self.operator.stop()
        if self.operator_task is not None:
            await asyncio.wait_for(self.operator_task, timeout=30)

    async def create(self, name: str, spec: Object) -> Object:
        body = {
            "apiVersion": WUKONGS.api_version,
            "kind": WUKONGS.kind,
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": spec,
        }
        return await self.client.create(WUKONGS, body)

    async def create_nad(self, name: str, *, config: str = '{"type": "bridge"}') -> None:
        """A NetworkAttachmentDefinition made by someone else (no owner)."""
        await self.client.create(
            NETWORK_ATTACHMENT_DEFINITIONS,
            {
                "apiVersion": NETWORK_ATTACHMENT_DEFINITIONS.api_version,
                "kind": NETWORK_ATTACHMENT_DEFINITIONS.kind,
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": {"config": config},
            },
        )

    async def get(self, name: str) -> Object:
        return await self.client.get(WUKONGS, name, namespace=self.namespace)

    async def wait_for(
        self, name: str, check: Callable[[Object], bool], *, what: str, timeout: float = 30.0
    ) -> Object:
        latest: dict[str, Object] = {}

        async def done() -> bool:
            latest["object"] = await self.get(name)
            return check(latest["object"])

        try:
            await eventually(done, timeout=timeout, interval=0.1, what=what)
        except AssertionError as error:
            status = latest.get("object", {}).get("status")
            raise AssertionError(f"{error}; last status: {status}") from None
        return latest["object"]

    async def wait_until(
        self, check: Callable[[], Awaitable[bool]], *, what: str, timeout: float = 30.0
    ) -> None:
        await eventually(check, timeout=timeout, interval=0.1, what=what)

    async def wait_gone(self, name: str, *, timeout: float = 30.0) -> None:
        async def gone() -> bool:
            try:
                await self.get(name)
            except NotFound:
                return True
            return False

        await eventually(gone, timeout=timeout, interval=0.1, what=f"Wukong {name} to be deleted")

    async def warnings(self, name: str) -> list[str]:
        """Reasons of the Warning events about `name`, once there is one (events
        follow the status write of the same reconcile)."""
        reasons: list[str] = []

        async def warned() -> bool:
            reasons[:] = [e["reason"] for e in await self.events(name) if e["type"] == "Warning"]
            return bool(reasons)

        await eventually(warned, interval=0.1, what=f"a Warning event about {name}")
        return reasons

    async def first_call(self, verb: str, resource: str, *, since: float) -> ApiCall:
        """The operator's first `verb` of `resource` that started after `since` (time.time()).

        Waits for it: the server may show the call's effect before the operator has
        read the answer and recorded the call.
        """
        found: list[ApiCall] = []

        def recorded() -> bool:
            found[:] = [
                c
                for c in self.calls
                if (c.verb, c.resource) == (verb, resource) and c.started >= since
            ]
            return bool(found)

        await eventually(recorded, interval=0.05, what=f"the operator's {verb} of {resource}")
        return min(found, key=lambda call: call.started)

    async def events(self, name: str) -> list[Object]:
        listed = await self.client.list(
            EVENTS, namespace=self.namespace, field_selector=f"involvedObject.name={name}"
        )
        return list(listed["items"])


WATCH_EVENT = "a watch event"


def started_by(call: ApiCall) -> str:
    """What started the reconcile that made `call`: `WATCH_EVENT`, or a requeue (the
    work queue gives a reconcile a `due_at` only for a RequeueAfter or a retry)."""
    if call.reconcile is None:
        return f"no reconcile ({call.verb} {call.path})"
    if call.reconcile.due_at is not None:
        return f"a requeue ({call.verb} {call.path}, due at {call.reconcile.due_at:.3f})"
    return WATCH_EVENT


def condition(obj: Object, type: str) -> dict[str, Any]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type), {})


StartWukong = Callable[..., Awaitable[WukongRun]]


@pytest.fixture
async def start_wukong(
    client: Client, namespace: str, infrastructure: None
) -> AsyncIterator[StartWukong]:
    managers: list[Manager] = []
    tasks: list[asyncio.Task[Any]] = []

    async def start(
        *,
        simulation: SimulationConfig | None = None,
        operator_client: Client | None = None,
        reconcile_timeout: float = DEFAULT_RECONCILE_TIMEOUT,
        leader_election: LeaderElectionConfig | None = None,
        sync_period: float | None = None,
    ) -> WukongRun:
        simulator = simulator_manager(client=client, config=simulation or SimulationConfig())
        managers.append(simulator)
        tasks.append(asyncio.create_task(simulator.run()))
        # One recorder across operator restarts: the whole history of the test.
        recorder = RecordingObserver()

        def operator() -> Manager:
            manager = Manager(
                client=operator_client or client,
                observers=[recorder],
                options=ManagerOptions(
                    namespace=namespace,
                    reconcile_timeout=reconcile_timeout,
                    shutdown_grace=5.0,
                    leader_election=leader_election,
                    sync_period=sync_period,
                ),
            )
            add_wukong_controller(manager)
            return manager

        run = WukongRun(
            client=client,
            namespace=namespace,
            operator=operator(),
            lifecycle=recorder.events,
            calls=recorder.calls,
        )

        def start_operator() -> None:
            if run.operator_task is not None:
                run.operator = operator()
            managers.append(run.operator)
            tasks.append(asyncio.create_task(run.operator.run()))
            run.operator_task = tasks[-1]

        run.start_operator = start_operator
        start_operator()
        return run

    yield start
    for manager in managers:
        manager.stop()
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=30)


class WatchRecorder:
    """Every version of `resource` objects in a namespace, as watch events, from now on."""

    def __init__(self, client: Client, resource: Resource, namespace: str) -> None:
        self.events: list[tuple[str, Object]] = []
        self._client, self._resource, self._namespace = client, resource, namespace
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> "WatchRecorder":
        listed = await self._client.list(self._resource, namespace=self._namespace)
        version = listed["metadata"]["resourceVersion"]
        self._task = asyncio.create_task(self._watch(version))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _watch(self, version: str) -> None:
        async for event in self._client.watch(
            self._resource, namespace=self._namespace, resource_version=version
        ):
            if event.type != "BOOKMARK":
                self.events.append((event.type, event.object))

    def versions(self, name: str) -> list[Object]:
        return [obj for _, obj in self.events if obj["metadata"]["name"] == name]
