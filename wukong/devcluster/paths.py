"""Where the local control plane keeps things.

Built binaries are cached per user (they survive `dev down` and fresh clones);
the running cluster's state (certificates, kubeconfig, pid files, logs) lives in
a state directory, by default also per user so `wukong dev status` finds it
from any working directory.
"""

import os
from pathlib import Path


def cache_dir() -> Path:
    """Root of Wukong's cache: $WUKONG_CACHE_DIR, else $XDG_CACHE_HOME/wukong."""
    explicit = os.environ.get("WUKONG_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "wukong"


def default_state_dir() -> Path:
    """State of the default dev cluster: $WUKONG_DEV_STATE_DIR, else under the cache."""
    explicit = os.environ.get("WUKONG_DEV_STATE_DIR")
    return Path(explicit) if explicit else cache_dir() / "dev"
