"""What `.venv/bin/kubectl` and `.venv/bin/helm` run: the tool, built on first use.

    python -P -m wukong.devcluster.tool kubectl get ns
    python -P -m wukong.devcluster.tool --install .venv/bin   # writes those two scripts

kubectl is the one at the local control plane's Kubernetes release and helm the
pinned one (`binaries.TOOLS`). This module loads only `binaries`, never the
`wukong` command, so a kubectl call does not pay for importing the operator.
"""

import sys
from pathlib import Path

from wukong.devcluster.binaries import TOOLS, exec_tool
from wukong.devcluster.errors import DevClusterError

_SCRIPT = """#!/bin/sh
# {name} for Wukong's README commands, built on first use (written by `make setup`).
exec "$(dirname "$0")/python" -P -m wukong.devcluster.tool {name} "$@"
"""


def install(bin_dir: Path) -> list[Path]:
    """Write a script per tool into `bin_dir` (a virtualenv's bin), unless it is there."""
    written = []
    for name in TOOLS:
        script = bin_dir / name
        text = _SCRIPT.format(name=name)
        if not script.is_file() or script.read_text() != text:
            script.write_text(text)
            script.chmod(0o755)
            written.append(script)
    return written


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--install":
        for script in install(Path(argv[1])):
            _progress(f"wrote {script}")
        return 0
    if not argv or argv[0] not in TOOLS:
        _progress(f"usage: python -m wukong.devcluster.tool {{{','.join(TOOLS)}}} [ARGS...]")
        return 2
    try:
        exec_tool(argv[0], argv[1:], progress=_progress)
    except DevClusterError as exc:
        _progress(f"{argv[0]}: error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
