"""Package boundaries: the dev simulator plays other systems and never imports the operator."""

import ast
from pathlib import Path

import wukong.devcluster.simulator as simulator


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
