"""Sphinx configuration of the API reference (`make docs`), built from the docstrings.

The page of `wukong.runtime` is written here from its `__all__`, so the reference
follows the package: a name added to `__all__` is documented without touching
these files. A constant or type alias is documented by the `#:` comment (or the
string) beside its assignment in the module that defines it.
"""

import ast
import importlib
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


def _imported_from(module: str, name: str) -> str | None:
    """The module `module` imports `name` from, if it imports it."""
    tree = ast.parse(Path(inspect.getfile(importlib.import_module(module))).read_text())
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            if any((alias.asname or alias.name) == name for alias in node.names):
                return node.module
    return None


def _attribute_doc(module: str, name: str) -> list[str]:
    """The `#:` comment (or string) beside the assignment of `<module>.<name>`.

    Followed through re-exports (`wukong.runtime.Object` is imported by `_client`
    from `_transport`) to the module that assigns it; empty if none is written.
    """
    source: str | None = module
    while source is not None:
        docs = ModuleAnalyzer.for_module(source).find_attr_docs().get(("", name))
        if docs:
            return list(docs)
        source = _imported_from(source, name)
    return []


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
    # for an alias of dict[...]): take the comment beside its assignment.
    module, _, short = name.rpartition(".")
    if what != "data" or not (module + ".").startswith("wukong.runtime."):
        return
    lines[:] = _attribute_doc(module, short)


def setup(app: Sphinx) -> None:
    app.connect("source-read", _read)
    app.connect("autodoc-process-docstring", _data_docs)
