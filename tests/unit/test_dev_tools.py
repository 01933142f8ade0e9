"""`kubectl` and `helm` as README's commands use them, and what `wukong dev build` builds.

`make setup` writes .venv/bin/kubectl and .venv/bin/helm: each runs the tool at its
pinned release, building it the first time. `wukong dev build` (what `make run`
needs) builds only etcd and kube-apiserver.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from wukong.cli import build_parser
from wukong.devcluster import binaries, tool

VENV_BIN = Path(sys.executable).parent


def _run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    assert Path(argv[0]).exists(), f"{argv[0]} is missing: `make setup` writes it"
    return subprocess.run([str(arg) for arg in argv], capture_output=True, text=True, timeout=600)


def test_install_writes_one_executable_script_per_tool_once(tmp_path: Path) -> None:
    written = tool.install(tmp_path)
    assert sorted(path.name for path in written) == sorted(binaries.TOOLS)
    for path in written:
        assert path.stat().st_mode & 0o111
        assert f"-m wukong.devcluster.tool {path.name} " in path.read_text()
    assert tool.install(tmp_path) == []  # already there: nothing rewritten


def test_venv_kubectl_is_the_api_servers_release(kubectl: Path) -> None:
    ran = _run(VENV_BIN / "kubectl", "version", "--client")
    assert ran.returncode == 0, ran.stderr
    assert f"Client Version: {binaries.kubernetes_version()}" in ran.stdout


def test_venv_kubectl_passes_its_exit_status_and_errors_through(kubectl: Path) -> None:
    ran = _run(VENV_BIN / "kubectl", "no-such-verb")
    assert ran.returncode == 1
    assert 'unknown command "no-such-verb"' in ran.stderr


def test_venv_helm_is_the_pinned_release() -> None:
    ran = _run(VENV_BIN / "helm", "version", "--short")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith(binaries.HELM_VERSION)


def test_wukong_dev_tool_runs_the_same_kubectl(kubectl: Path) -> None:
    ran = _run(VENV_BIN / "wukong", "dev", "tool", "kubectl", "version", "--client")
    assert ran.returncode == 0, ran.stderr
    assert f"Client Version: {binaries.kubernetes_version()}" in ran.stdout


@pytest.mark.parametrize("name", sorted(binaries.TOOLS))
def test_wukong_dev_tool_takes_each_tool_and_its_arguments(name: str) -> None:
    args = build_parser().parse_args(["dev", "tool", name, "version", "--short"])
    assert (args.name, args.args) == (name, ["version", "--short"])


def test_wukong_dev_tool_refuses_another_program() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["dev", "tool", "kind"])


def test_dev_build_builds_only_what_the_control_plane_needs() -> None:
    ran = _run(VENV_BIN / "wukong", "dev", "build")
    assert ran.returncode == 0, ran.stderr
    built = [Path(line).name for line in ran.stdout.splitlines()]
    assert [name.split("-v")[0] for name in built] == ["etcd", "kube-apiserver"]
