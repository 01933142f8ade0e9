"""The API reference builds from the docstrings without a warning and covers the public API.

`make docs` builds the same sources into build/docs; here into a temporary
directory, so `make test` fails on a docstring Sphinx cannot read or a public
name the reference leaves out.
"""

import re
import subprocess
import sys
from pathlib import Path

import wukong.runtime

REPO = Path(__file__).resolve().parents[2]
PUBLIC_MODULES = ("resources", "apis", "serving", "probes")
SPHINX = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]


def test_the_api_reference_builds_and_documents_every_public_name(tmp_path: Path) -> None:
    built = subprocess.run(
        [*SPHINX, str(REPO / "docs/api"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr

    html = "".join(page.read_text() for page in tmp_path.glob("*.html"))
    documented = set(re.findall(r'id="(wukong\.runtime[\w.]*)"', html))
    missing = {f"wukong.runtime.{name}" for name in wukong.runtime.__all__} - documented
    assert not missing, f"not in the API reference: {sorted(missing)}"
    for module in PUBLIC_MODULES:
        assert f"module-wukong.runtime.{module}" in html, module
