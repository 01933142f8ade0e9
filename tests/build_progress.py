"""Progress of the builds a test session makes on first use, shown as they happen.

`make setup` builds only etcd and kube-apiserver; kubectl, helm, the node's
programs and Prometheus 3 are built by the fixtures that first need them, which
takes minutes on a fresh clone. pytest captures what fixtures print and shows it
only for a failing test, so those lines go past the capture to the terminal.
A plugin (tests/conftest.py lists it): `progress` needs the session's config.
"""

import sys

import pytest

_config: pytest.Config | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _config
    _config = config


def progress(message: str) -> None:
    """Print one line of a build's progress on stderr, past pytest's capture."""
    capture = _config.pluginmanager.getplugin("capturemanager") if _config else None
    if capture is None:
        print(message, file=sys.stderr, flush=True)
        return
    with capture.global_and_fixture_disabled():
        print(message, file=sys.stderr, flush=True)
