"""ManagerOptions: one frozen dataclass, every field documented with its default."""

import ast
import dataclasses
import inspect

import pytest

from wukong.runtime import ManagerOptions


def _field_docstrings() -> dict[str, str]:
    body = ast.parse(inspect.getsource(ManagerOptions)).body[0]
    assert isinstance(body, ast.ClassDef)
    docs = {}
    for node, following in zip(body.body, body.body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
        ):
            docs[node.target.id] = str(following.value.value)
    return docs


def test_every_field_says_what_it_does_and_its_default() -> None:
    docs = _field_docstrings()
    fields = [field.name for field in dataclasses.fields(ManagerOptions)]
    assert len(fields) >= 13
    assert [name for name in fields if "default" not in docs.get(name, "")] == []


def test_options_are_frozen_and_checked() -> None:
    options = ManagerOptions(namespace="tenant-a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.namespace = "tenant-b"  # type: ignore[misc]
    assert dataclasses.replace(options, shutdown_grace=5.0).namespace == "tenant-a"
    with pytest.raises(ValueError, match="reconcile_timeout"):
        ManagerOptions(reconcile_timeout=0)
