"""Package boundaries: the dev simulator plays other systems and never imports the operator;
the runtime's public API is the documented names of `wukong.runtime.__all__` and its
public modules, and nothing outside the runtime (and its tests) imports its machinery."""

import ast
import inspect
from pathlib import Path

import wukong
import wukong.devcluster.simulator as simulator
import wukong.runtime as runtime

REPO = Path(wukong.__file__).parent.parent
PUBLIC_MODULES = {"resources", "apis", "serving", "probes"}


def _imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


def test_the_simulator_does_not_import_the_operator() -> None:
    package = Path(simulator.__file__).parent
    offenders = {
        f"{path.name}: {module}"
        for path in sorted(package.glob("*.py"))
        for module in _imported_modules(path)
        if module == "wukong.operator" or module.startswith("wukong.operator.")
    }
    assert sorted(offenders) == []
    assert "wukong.runtime.apis" in _imported_modules(package / "crds.py")


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


def test_the_runtime_is_machinery_but_for_its_public_modules() -> None:
    package = Path(runtime.__file__).parent
    modules = {path.stem for path in package.glob("*.py")} - {"__init__"}
    assert sorted(m for m in modules if not m.startswith("_")) == sorted(PUBLIC_MODULES)


def test_nothing_outside_the_runtime_imports_its_machinery() -> None:
    sources = [
        path
        for directory in ("wukong", "bench", "docs")
        for path in sorted((REPO / directory).rglob("*.py"))
        if "wukong/runtime/" not in path.as_posix()
    ]
    assert len(sources) > 50
    offenders = sorted(
        f"{path.relative_to(REPO)}: {module}"
        for path in sources
        for module in _imported_modules(path)
        if module.startswith("wukong.runtime._")
    )
    assert offenders == []
