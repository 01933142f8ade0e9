"""The rendered dashboards the package ships, for reading without the Grafana SDK.

`wukong diagnose` reads the cancel-storm dashboard's panels on a plain install,
where the dashboards cannot be built (the SDK comes with the `devtools` extra),
so `wukong dashboards render` also writes every dashboard into `rendered/`
here, which is package data; unit tests fail when that copy is stale.
"""

import json
from importlib import resources
from pathlib import Path
from typing import Any

# Where `wukong dashboards render` writes the shipped copy: this package's own files.
RENDERED_DIR = Path(__file__).parent / "rendered"


def shipped_dashboard(name: str) -> dict[str, Any]:
    """The shipped dashboard `name` (`<uid>.json`), parsed."""
    shipped = resources.files("wukong.dashboards").joinpath("rendered", name)
    dashboard: dict[str, Any] = json.loads(shipped.read_text(encoding="utf-8"))
    return dashboard
