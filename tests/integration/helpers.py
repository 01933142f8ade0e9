"""Helpers for integration tests."""

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from wukong.devcluster.crds import wait_crd_established
from wukong.runtime import (
    CancelReason,
    Client,
    Manager,
    Object,
    Resource,
    RuntimeObserver,
)
from wukong.runtime.observe import ApiCall, LifecycleEvent, Step
from wukong.runtime.resources import CUSTOM_RESOURCE_DEFINITIONS


@contextlib.asynccontextmanager
async def running(manager: Manager) -> AsyncIterator["asyncio.Task[CancelReason]"]:
    """Run `manager` for the body of the block; stop it and wait for `run()` on the way out.

    Yields the `run()` task (for tests that expect it to end by itself). A
    failure of `run()` surfaces when the block ends, so it is never lost.
    """
    task = asyncio.create_task(manager.run(), name="manager under test")
    try:
        yield task
    finally:
        manager.stop()
        await task


class RecordingObserver(RuntimeObserver):
    """An observer that keeps what the runtime reports (reconciles, API calls, leadership,
    watch restarts, loop blocks), for assertions."""

    name = "test recorder"

    def __init__(self) -> None:
        self.events: list[LifecycleEvent] = []
        self.calls: list[ApiCall] = []
        self.blocks: list[tuple[float, str | None]] = []  # (seconds, task name)
        self.leadership: list[tuple[str, bool]] = []
        self.watch_restarts: list[tuple[str, str]] = []  # (resource, cause)
        self.relists: list[tuple[str, str]] = []
        self.standbys: list[str] = []

    def standing_by(self, lease: str) -> None:
        self.standbys.append(lease)

    def watch_restarted(self, resource: str, cause: str) -> None:
        self.watch_restarts.append((resource, cause))

    def relisted(self, resource: str, cause: str) -> None:
        self.relists.append((resource, cause))

    def leadership_changed(self, lease: str, leading: bool) -> None:
        self.leadership.append((lease, leading))

    def loop_blocked(self, seconds: float, task: str | None) -> None:
        self.blocks.append((seconds, task))

    def reconcile(self, event: LifecycleEvent) -> None:
        self.events.append(event)

    def api_call(self, call: ApiCall) -> None:
        self.calls.append(call)

    def steps(self, step: Step, *, controller: str | None = None) -> list[LifecycleEvent]:
        return [e for e in self.events if e.step is step and controller in (None, e.controller)]

    def finished(self, *, controller: str | None = None) -> list[LifecycleEvent]:
        return self.steps(Step.FINISHED, controller=controller)


async def install_test_crd(
    client: Client, *, group: str, kind: str, status_subresource: bool = False
) -> Resource:
    """A namespaced custom resource `kind` (spec.size >= 1, status.phase), established.

    Kinds must be unique within a group: give each test its own.
    """
    plural = f"{kind.lower()}s"
    version: Object = {
        "name": "v1",
        "served": True,
        "storage": True,
        "schema": {
            "openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {
                        "type": "object",
                        "properties": {"size": {"type": "integer", "minimum": 1}},
                    },
                    "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
                },
            }
        },
    }
    if status_subresource:
        version["subresources"] = {"status": {}}
    crd: Object = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {
                "plural": plural,
                "singular": kind.lower(),
                "kind": kind,
                "listKind": f"{kind}List",
            },
            "versions": [version],
        },
    }
    await client.create(CUSTOM_RESOURCE_DEFINITIONS, crd)
    await wait_crd_established(client, crd["metadata"]["name"])
    return Resource(group=group, version="v1", plural=plural, kind=kind)


def _kubectl(kubectl: Path, kubeconfig: Path, *args: str) -> str:
    result = subprocess.run(
        [str(kubectl), f"--kubeconfig={kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


def service_account_token(kubectl: Path, kubeconfig: Path, namespace: str, name: str) -> str:
    """A token of ServiceAccount `namespace/name`, from the TokenRequest API."""
    return _kubectl(kubectl, kubeconfig, "create", "token", name, "-n", namespace).strip()


def metrics_reader_token(kubectl: Path, kubeconfig: Path, namespace: str) -> str:
    """A token of a new ServiceAccount `prometheus` in `namespace`, granted what the chart's
    metrics-reader ClusterRole grants: get on /metrics."""
    role = f"metrics-reader-{namespace}"
    for args in (
        ("create", "serviceaccount", "prometheus", "-n", namespace),
        ("create", "clusterrole", role, "--non-resource-url=/metrics", "--verb=get"),
        ("create", "clusterrolebinding", role, f"--clusterrole={role}",
         f"--serviceaccount={namespace}:prometheus"),
    ):  # fmt: skip
        _kubectl(kubectl, kubeconfig, *args)
    return service_account_token(kubectl, kubeconfig, namespace, "prometheus")


async def scrape(url: str, token: str | None) -> tuple[int, str]:
    """GET `url` with `token` as bearer (none: no header), not verifying the certificate
    (a secure /metrics serves a self-signed one by default, as scrapers expect)."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers=headers, ssl=False) as response,
    ):
        return response.status, await response.text()
