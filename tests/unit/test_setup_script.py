"""scripts/setup.sh checks Go's version before it does anything else."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _setup_with_go(tmp_path: Path, goversion: str | None) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if goversion is not None:
        go = bin_dir / "go"
        go.write_text(f'#!/bin/sh\n[ "$*" = "env GOVERSION" ] && echo {goversion}\n')
        go.chmod(0o755)
    # Only the shell's basics besides that go: nothing setup might install or call.
    for tool in ("dirname", "sort", "head", "printf", "id"):
        found = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        if found:
            (bin_dir / tool).symlink_to(found)
    return subprocess.run(
        ["/bin/bash", str(ROOT / "scripts" / "setup.sh")],
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("goversion", "says"),
    [
        (None, "Go is not on PATH; install Go >= 1.26"),
        ("go1.25.9", "Go 1.25.9 is too old; Wukong's builds need Go >= 1.26"),
    ],
)
def test_setup_stops_first_thing_without_a_recent_go(
    tmp_path: Path, goversion: str | None, says: str
) -> None:
    ran = _setup_with_go(tmp_path, goversion)
    assert ran.returncode == 1
    # The error is all it printed: no package, venv or build step ran before it.
    assert ran.stderr.startswith(f"setup: error: {says}")
    assert ran.stderr.count("\n") == 1


def test_setup_names_the_go_it_found_as_its_first_step(tmp_path: Path) -> None:
    if os.geteuid() != 0 and subprocess.run(["sudo", "-n", "true"]).returncode != 0:
        pytest.skip("setup needs root or sudo past the Go check")
    ran = subprocess.run(
        ["/bin/bash", str(ROOT / "scripts" / "setup.sh")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stderr
    steps = [line for line in ran.stderr.splitlines() if line.startswith("==> ")]
    assert steps[0].startswith("==> Go 1.")
    assert steps[-1].startswith("==> etcd and kube-apiserver")
    built = [Path(line).name.split("-v")[0] for line in ran.stdout.splitlines()]
    assert built == ["etcd", "kube-apiserver"]  # nothing the demo does not need
