"""Package boundaries: the dev simulator plays other systems and never imports the operator;
the runtime is machinery but for its public modules, nothing outside the runtime (and its
tests) imports its machinery, and its modules import one another without a cycle. The
names it exports are `test_public_api`'s."""

import ast
from pathlib import Path

import wukong
import wukong.devcluster.simulator as simulator
import wukong.runtime as runtime

REPO = Path(wukong.__file__).parent.parent
PUBLIC_MODULES = {"resources", "apis", "serving", "observe", "probes"}


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


def _runtime_imports() -> dict[str, set[str]]:
    """Each runtime module -> the runtime modules it imports (type-checking imports too)."""
    package = Path(runtime.__file__).parent
    graph: dict[str, set[str]] = {}
    for path in sorted(package.glob("*.py")):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "wukong.runtime":
                imported.update(alias.name for alias in node.names)  # a module or a name
            else:
                for module in _imported_modules_of(node):
                    if module.startswith("wukong.runtime."):
                        imported.add(module.split(".")[2])
        graph[path.stem] = imported & {p.stem for p in package.glob("*.py")}
    return graph


def _imported_modules_of(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module:
        return [node.module]
    return []


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of `graph` (module names, the first repeated last), or []."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str]:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return []
        for imported in sorted(graph.get(module, ())):
            found = visit(imported, [*path, module])
            if found:
                return found
        done.add(module)
        return []

    for module in sorted(graph):
        found = visit(module, [])
        if found:
            return found
    return []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_runtime() -> None:
    graph = _runtime_imports()
    assert {"_client", "_context", "_calls"} <= graph.keys()
    assert _cycle(graph) == []


def test_the_client_knows_no_reconcile_nor_observer() -> None:
    # The call layer (_calls) applies deadlines, the fence and observers; the client
    # only sends (the reconcile's identity travels in contextvars).
    assert _runtime_imports()["_client"] <= {"_transport", "_errors", "resources"}
