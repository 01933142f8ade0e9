"""Helpers for integration tests: polling, kubeconfigs through a proxy."""

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import yaml

from wukong.runtime.client import Client
from wukong.runtime.resources import CUSTOM_RESOURCE_DEFINITIONS


async def eventually(
    check: Callable[[], Awaitable[bool] | bool],
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
) -> None:
    """Poll `check` until it is true; fail with `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def kubeconfig_via(source: Path, target: Path, *, port: int) -> Path:
    """A copy of `source` whose server is 127.0.0.1:`port` (e.g. a latency proxy)."""
    config = yaml.safe_load(source.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{port}"
    target.write_text(yaml.safe_dump(config))
    return target


async def wait_crd_established(client: Client, name: str) -> None:
    """Wait until the CRD `name` is Established (its resource is served); fail otherwise."""

    async def established() -> bool:
        crd = await client.get(CUSTOM_RESOURCE_DEFINITIONS, name)
        conditions = (crd.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    await eventually(established, timeout=10, what=f"CRD {name} to become Established")
