"""The runtime's public API: at most 40 names, none of them machinery, each documented
(a docstring of its own, or a `#:` comment or string at its assignment); the client
offers the verbs and nothing else."""

import ast
import inspect
from pathlib import Path

import wukong.runtime as runtime


def test_every_public_runtime_name_has_a_docstring_of_its_own() -> None:
    undocumented = []
    for name in runtime.__all__:
        value = getattr(runtime, name)
        if not (inspect.isclass(value) or inspect.isfunction(value)):
            continue  # constants and type aliases: documented where they are defined
        # A class's own docstring, not one inherited from a base.
        doc = (value.__dict__.get("__doc__") if inspect.isclass(value) else value.__doc__) or ""
        # A dataclass without a docstring gets its signature as one.
        if not doc.strip() or doc.startswith(f"{value.__name__}("):
            undocumented.append(name)
    assert undocumented == []


# The runtime's moving parts, never part of its API.
MACHINERY = ("_fanout", "_fence", "_heap", "_loopwatch", "_running", "_scopes", "_workqueue")


def test_the_public_runtime_names_are_not_machinery() -> None:
    private = [
        name
        for name in runtime.__all__
        if name.startswith("_")
        or getattr(getattr(runtime, name), "__module__", "").rsplit(".", 1)[-1] in MACHINERY
    ]
    assert private == []


def test_the_public_runtime_names_are_at_most_40() -> None:
    assert len(runtime.__all__) <= 40, sorted(runtime.__all__)
    assert len(set(runtime.__all__)) == len(runtime.__all__)


def test_every_public_runtime_name_is_documented_where_it_is_defined() -> None:
    """Constants and type aliases too: a comment or docstring right above or after the
    assignment in the module that defines them."""
    undocumented = []
    for name in runtime.__all__:
        value = getattr(runtime, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            continue  # checked by test_every_public_runtime_name_has_a_docstring_of_its_own
        if not _assignment_is_documented(name):
            undocumented.append(name)
    assert undocumented == []


def _assignment_is_documented(name: str) -> bool:
    package = Path(runtime.__file__).parent
    for path in sorted(package.glob("*.py")):
        if path.stem == "__init__":
            continue
        body = ast.parse(path.read_text()).body
        lines = path.read_text().splitlines()
        for index, node in enumerate(body):
            targets = (
                [t.id for t in node.targets if isinstance(t, ast.Name)]
                if isinstance(node, ast.Assign)
                else [node.target.id]
                if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                else []
            )
            if name not in targets:
                continue
            following = body[index + 1] if index + 1 < len(body) else None
            docstring_after = (
                isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            )
            # `#:`, the comment Sphinx's autodoc reads (a plain `#` is not published).
            comment_above = lines[node.lineno - 2].lstrip().startswith("#:")
            return docstring_after or comment_above
    return False


def test_the_client_offers_the_verbs_and_nothing_else() -> None:
    public = sorted(name for name in vars(runtime.Client) if not name.startswith("_"))
    constructors = ["configured", "from_environment", "from_kubeconfig"]
    verbs = ["apply", "create", "delete", "get", "list", "patch", "patch_status", "update"]
    verbs += ["update_status", "watch"]
    assert public == sorted([*constructors, *verbs, "close"])
    # Built plainly: over an ApiClient alone, no internal arguments.
    parameters = list(inspect.signature(runtime.Client).parameters)
    assert parameters == ["api_client"]
