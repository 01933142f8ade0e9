"""Sphinx configuration of the API reference (`make docs`), built from the docstrings.

The page of `wukong.runtime` is written here from its `__all__`, so the reference
follows the package: a name added to `__all__` is documented without touching
these files. A constant or type alias is documented by the `#:` comment (or the
string) beside its assignment in the module that defines it.
"""

import ast
import inspect
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.pycode import ModuleAnalyzer

import wukong.runtime

project = "Wukong"
extensions = ["sphinx.ext.autodoc"]
# The docstrings are written for `help()` and editors: `name` in backticks is code.
default_role = "code"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_preserve_defaults = True
html_theme = "alabaster"
html_title = "Wukong API reference"


def _defined_in() -> dict[str, str]:
    """The module each name `wukong.runtime` imports comes from."""
    tree = ast.parse(Path(inspect.getfile(wukong.runtime)).read_text())
    return {
        alias.asname or alias.name: node.module
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
    }


def _directive(value: object) -> str:
    if isinstance(value, type) and inspect.isclass(value) and value.__module__ != "typing":
        return "autoclass"
    return "autofunction" if inspect.isfunction(value) else "autodata"


def _runtime_page() -> str:
    lines = ["wukong.runtime", "==============", "", ".. automodule:: wukong.runtime", ""]
    for name in wukong.runtime.__all__:
        directive = _directive(getattr(wukong.runtime, name))
        lines += [f".. {directive}:: {name}"]
        lines += ["   :members:", ""] if directive == "autoclass" else [""]
    return "\n".join(lines)


def _read(app: Sphinx, docname: str, source: list[str]) -> None:
    if docname == "runtime":
        source[0] = _runtime_page()


def _data_docs(app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    # A value has no docstring of its own (autodoc would show its type's, `dict`'s
    # for an alias of dict[...]): take the comment beside its assignment, where
    # the name is defined.
    module, _, short = name.rpartition(".")
    if what != "data" or module != "wukong.runtime":
        return
    docs: list[str] = []
    for source in ("wukong.runtime", _defined_in().get(short)):
        if source is not None and not docs:
            docs = ModuleAnalyzer.for_module(source).find_attr_docs().get(("", short), [])
    lines[:] = docs


def setup(app: Sphinx) -> None:
    app.connect("source-read", _read)
    app.connect("autodoc-process-docstring", _data_docs)
