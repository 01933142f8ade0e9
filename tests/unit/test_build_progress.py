"""A build's progress printed by a fixture reaches the terminal past pytest's capture."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SESSION = """
import pytest

from tests import build_progress


@pytest.fixture(scope="session")
def built() -> str:
    build_progress.progress("  [7/9] packages compiled, 15s")
    print("captured, shown only on failure")
    return "tool"


def test_uses_it(built: str) -> None:
    assert built == "tool"
"""


def test_progress_is_shown_while_ordinary_output_stays_captured(tmp_path: Path) -> None:
    (tmp_path / "test_session.py").write_text(SESSION)
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.build_progress",
            "-q",
            "-p",
            "no:cacheprovider",
            str(tmp_path / "test_session.py"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "[7/9] packages compiled, 15s" in ran.stderr
    assert "captured, shown only on failure" not in ran.stdout + ran.stderr
