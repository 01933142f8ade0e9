"""Where the project's shared tools live (they are not part of this repository).

`metrics_contract.py` checks an exposition against DESIGN.md's metric contract.
It sits in the project's shared folder: next to the checkout (`../shared`), or
at /work/shared on the project's machines (where CI clones elsewhere), or where
$WUKONG_SHARED_DIR points.
"""

import os
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]


def metrics_contract() -> Path | None:
    candidates = [
        Path(os.environ["WUKONG_SHARED_DIR"]) if os.environ.get("WUKONG_SHARED_DIR") else None,
        _REPO.parent / "shared",
        Path("/work/shared"),
    ]
    for shared in candidates:
        if shared is not None and (shared / "tools/metrics_contract.py").is_file():
            return shared / "tools/metrics_contract.py"
    return None
