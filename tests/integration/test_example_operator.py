"""The example operator in docs/ runs as written, against the public runtime API only."""

import ast
import importlib.util
from pathlib import Path
from types import ModuleType

from tests.integration.helpers import running
from tests.polling import eventually
from wukong import runtime
from wukong.runtime import Client
from wukong.runtime.resources import CONFIGMAPS

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "example_operator.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_operator", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_uses_only_the_public_api() -> None:
    tree = ast.parse(EXAMPLE.read_text())
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert {name for name in imported if name and name.startswith("wukong")} == {"wukong"}
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "rt"
    }
    assert used and used <= set(runtime.__all__), used - set(runtime.__all__)
    assert len(EXAMPLE.read_text().splitlines()) <= 45


async def test_the_example_operator_greets_labelled_configmaps(
    client: Client, namespace: str
) -> None:
    example = _load()
    manager = example.greeter_manager(client, namespace=namespace)
    async with running(manager):
        # The stranger first: one worker takes keys in order, so it has been
        # reconciled (and left alone) by the time the friend is greeted.
        await client.create(CONFIGMAPS, {"metadata": {"name": "stranger", "namespace": namespace}})
        await client.create(
            CONFIGMAPS,
            {"metadata": {"name": "friend", "namespace": namespace, "labels": {"greet": "yes"}}},
        )

        async def greeted() -> bool:
            cm = await client.get(CONFIGMAPS, "friend", namespace=namespace)
            return (cm.get("data") or {}).get("greeting") == "hello, friend"

        await eventually(greeted, what="the labelled ConfigMap to be greeted")
    stranger = await client.get(CONFIGMAPS, "stranger", namespace=namespace)
    assert "data" not in stranger or "greeting" not in stranger["data"]
