"""What `pip install wukong-operator` installs: what `wukong run` and `wukong agent` need.

The development tools (the Grafana SDK) are the
`devtools` extra of pyproject.toml, and the images install the package without
it. These tests run Wukong in a fresh interpreter where the extra's modules
cannot be imported, as in the images: the operator and the agent start, every
module outside the development packages imports, `wukong diagnose` reads the
cancel-storm dashboard's panels, and a development command says in one line
which extra it needs. The images install a wheel, not an editable checkout, so
every file the code reads must also be package data.
"""

import fnmatch
import importlib.metadata
import json
import pkgutil
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import wukong

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
EXTRA = "devtools"
# The packages that only development commands use; nothing else may import them,
# except the dashboards' SDK-free reading side that `wukong diagnose` uses.
DEVELOPMENT_PACKAGES = ("wukong.devcluster", "wukong.demo", "wukong.dashboards", "wukong.deploy")

# Run as `python -c WITHOUT_EXTRA <blocked,modules> <code> [args...]`: makes the
# listed top-level modules unimportable, then runs <code> with the args in sys.argv.
WITHOUT_EXTRA = """
import importlib.abc, sys
blocked = set(sys.argv[1].split(","))
class WithoutExtra(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, WithoutExtra())
code, sys.argv = sys.argv[2], sys.argv[2:]
exec(code)
"""
RUN_CLI = "from wukong.cli import main; sys.exit(main(sys.argv[1:]))"


def _distribution(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert name, requirement
    return re.sub(r"[-_.]+", "-", name.group()).lower()


def _extra_modules() -> set[str]:
    """Top-level modules installed by the distributions of the extra."""
    extra = {_distribution(r) for r in PYPROJECT["project"]["optional-dependencies"][EXTRA]}
    return {
        module
        for module, distributions in importlib.metadata.packages_distributions().items()
        if extra & {_distribution(d) for d in distributions}
    }


def _without_extra(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRA, ",".join(sorted(_extra_modules())), code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_extra_holds_the_development_tools_and_dev_includes_it() -> None:
    project = PYPROJECT["project"]
    assert {"grafana_foundation_sdk"} <= _extra_modules()
    required = {_distribution(r) for r in project["dependencies"]}
    extra = {_distribution(r) for r in project["optional-dependencies"][EXTRA]}
    assert not required & extra
    assert f"wukong-operator[{EXTRA}]" in project["optional-dependencies"]["dev"]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["run", "--help"], "--reconcile-timeout SECONDS"),
        (["agent", "--help"], "--metrics-bind"),
        (["trace", "--help"], "--sort"),
        (["--help"], "dashboards"),
    ],
)
def test_operator_and_agent_commands_work_without_the_extra(argv: list[str], says: str) -> None:
    result = _without_extra(RUN_CLI, *argv)
    assert result.returncode == 0, result.stderr
    assert says in result.stdout


def test_every_module_outside_the_development_packages_imports_without_the_extra() -> None:
    modules = [
        module.name
        for module in pkgutil.walk_packages(wukong.__path__, "wukong.")
        if not module.name.startswith(DEVELOPMENT_PACKAGES)
        and not module.name.endswith(".__main__")  # runs the command
    ]
    assert {"wukong.operator.run", "wukong.ebpf.agent", "wukong.cli.dev"} <= set(modules)
    code = "import importlib\nfor name in sys.argv[1:]: importlib.import_module(name)"
    result = _without_extra(code, *modules)
    assert result.returncode == 0, result.stderr


# Reads the evidence panels as `wukong diagnose` does, from a Prometheus stand-in
# answering every query with one series, and prints the readings and the queries asked.
READ_PANELS = """
import json
from wukong.diagnose.live import Target
from wukong.diagnose.panels import EVIDENCE_PANELS, panel_readings
class StandIn:
    asked = []
    def query(self, expr):
        self.asked.append(expr)
        return [{"metric": {"reason": "deadline"}, "value": [0, "2.5"]}]
try:
    import grafana_foundation_sdk
    sdk = "importable"
except ModuleNotFoundError:
    sdk = "blocked"
variables = Target(namespace="ops").dashboard_variables(window="5m")
readings = panel_readings(StandIn(), EVIDENCE_PANELS, variables=variables)
print(json.dumps({
    "sdk": sdk,
    "asked": StandIn.asked,
    "readings": [[r.title, r.expr, r.series] for r in readings],
}))
"""


def test_diagnose_reads_the_dashboards_panels_without_the_extra() -> None:
    from wukong.dashboards.promql import substitute_variables
    from wukong.dashboards.reading import panel_targets
    from wukong.dashboards.render import render_dashboards
    from wukong.diagnose.live import Target
    from wukong.diagnose.panels import CANCEL_STORM_DASHBOARD, EVIDENCE_PANELS

    result = _without_extra(READ_PANELS)
    assert result.returncode == 0, result.stderr
    read = json.loads(result.stdout)
    assert read["sdk"] == "blocked"
    variables = Target(namespace="ops").dashboard_variables(window="5m")
    expected = [
        (target.title, substitute_variables(target.expr, variables))
        for target in panel_targets(json.loads(render_dashboards()[CANCEL_STORM_DASHBOARD]))
        if target.title in EVIDENCE_PANELS
    ]
    assert {title for title, _ in expected} == set(EVIDENCE_PANELS)
    assert read["asked"] == [expr for _, expr in expected]
    assert [(title, expr) for title, expr, _ in read["readings"]] == expected
    for _, expr, series in read["readings"]:
        assert 'namespace=~"ops"' in expr and "$" not in expr
        assert series == [[{"reason": "deadline"}, 2.5]]


def test_a_development_command_names_the_extra_it_needs() -> None:
    argv = ["dashboards", "render", "--out", "/nonexistent"]
    result = _without_extra(RUN_CLI, *argv)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"wukong: error: `wukong {argv[0]}` needs the {EXTRA} extra (")
    assert line.endswith(f"pip install 'wukong-operator[{EXTRA}]'")


@pytest.mark.parametrize("image", ["operator", "agent"])
def test_images_install_the_package_without_extras(image: str) -> None:
    dockerfile = (REPO / f"deploy/images/{image}.Dockerfile").read_text()
    installs = re.findall(r"pip install [^\n]*", dockerfile)
    assert installs == ["pip install --no-cache-dir /src"]


def test_the_wheel_ships_every_file_the_code_reads() -> None:
    data_files = [
        path.relative_to(REPO)
        for path in (REPO / "wukong").rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"}
    ]
    assert Path("wukong/ebpf/go_probe.c") in data_files
    package_data = PYPROJECT["tool"]["setuptools"]["package-data"]
    for path in data_files:
        shipped = any(
            path.is_relative_to(Path(*package.split(".")))
            and any(
                fnmatch.fnmatch(str(path.relative_to(Path(*package.split(".")))), pattern)
                for pattern in patterns
            )
            for package, patterns in package_data.items()
        )
        assert shipped, f"{path} is not package data in pyproject.toml"
