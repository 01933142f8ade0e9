"""The API reference builds from the docstrings without a warning and covers the public API.

`make docs` builds the same sources into build/docs; here into a temporary
directory, so `make test` fails on a docstring Sphinx cannot read, a public
name the reference leaves out, or a public name it shows without a description.
"""

import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

import wukong.runtime

REPO = Path(__file__).resolve().parents[2]
PUBLIC_MODULES = ("resources", "apis", "serving", "probes")
SPHINX = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]


class _Descriptions(HTMLParser):
    """The first paragraph Sphinx writes under each documented name, by its anchor id.

    A name's entry is `<dt id=...>signature</dt><dd>description...</dd>`; the
    description is the text of the paragraphs directly in that `<dd>`, before any
    field list or member. "alias of ..." is what autodoc adds for a type alias by
    itself, not a description.
    """

    def __init__(self) -> None:
        super().__init__()
        self.descriptions: dict[str, str] = {}
        self._entries: list[str | None] = []  # the id of each open <dd>, innermost last
        self._last_id: str | None = None
        self._paragraph: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "dt":
            self._last_id = dict(attrs).get("id")
        elif tag == "dd":
            self._entries.append(self._last_id)
            if self._last_id is not None:
                self.descriptions.setdefault(self._last_id, "")
        elif tag == "p" and self._entries and self._entries[-1] is not None:
            self._paragraph = []

    def handle_data(self, data: str) -> None:
        if self._paragraph is not None:
            self._paragraph.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "dd" and self._entries:
            self._entries.pop()
        elif tag == "p" and self._paragraph is not None:
            text = " ".join("".join(self._paragraph).split())
            self._paragraph = None
            entry = self._entries[-1]
            if entry is None or self.descriptions[entry] or text.startswith("alias of"):
                return
            self.descriptions[entry] = text


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The built reference's HTML, every page concatenated."""
    out = tmp_path_factory.mktemp("api")
    built = subprocess.run(
        [*SPHINX, str(REPO / "docs/api"), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    return "".join(page.read_text() for page in out.glob("*.html"))


def test_the_api_reference_builds_and_documents_every_public_name(reference: str) -> None:
    documented = set(re.findall(r'id="(wukong\.runtime[\w.]*)"', reference))
    missing = {f"wukong.runtime.{name}" for name in wukong.runtime.__all__} - documented
    assert not missing, f"not in the API reference: {sorted(missing)}"
    for module in PUBLIC_MODULES:
        assert f"module-wukong.runtime.{module}" in reference, module


def test_every_public_name_is_shown_with_its_description(reference: str) -> None:
    parser = _Descriptions()
    parser.feed(reference)
    undescribed = [
        name
        for name in wukong.runtime.__all__
        if not parser.descriptions.get(f"wukong.runtime.{name}")
    ]
    assert not undescribed, f"shown without a description (docstring or `#:`): {undescribed}"
