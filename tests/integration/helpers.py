"""Helpers for integration tests: polling, kubeconfigs through a proxy."""

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import yaml


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
