"""Assemble bench/RESULTS.md from the fragments of one `make bench` run.

Adds what the numbers depend on: the machine (CPU model, cores, memory,
kernel) and the versions of everything measured.
"""

import json
import os
import platform
import re
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

from results import RESULTS_DIR

from wukong.devcluster.binaries import etcd_version, kubernetes_version

BENCH = Path(__file__).resolve().parent
ORDER = [
    "reconcile_throughput",
    "compare_peers",
    "requeue_profile",
    "reconcile_capacity",
    "cache_scale",
    "telemetry_overhead",
    "agent_overhead",
    "agent_program_profile",
    "tenant_fairness",
]


def _machine() -> list[str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    meminfo = Path("/proc/meminfo").read_text()
    memory = re.search(r"MemTotal:\s+(\d+)", meminfo)
    memory_kib = int(memory.group(1)) if memory else 0
    return [
        f"- CPU: {model.group(1) if model else 'unknown'}, {os.cpu_count()} cores",
        f"- memory: {memory_kib / 2**20:.1f} GiB; kernel {platform.release()}",
    ]


def _versions() -> list[str]:
    go = subprocess.run(["go", "version"], capture_output=True, text=True).stdout.strip()
    go_mod = (BENCH / "peers/controller-runtime/go.mod").read_text()
    runtime = re.search(r"sigs.k8s.io/controller-runtime (v\S+)", go_mod)
    return [
        f"- Python {platform.python_version()} (Debian's interpreter), "
        f"wukong {version('wukong-operator')}, kopf {version('kopf')}",
        f"- {go}; controller-runtime {runtime.group(1) if runtime else '?'}",
        f"- kube-apiserver {kubernetes_version()} + etcd {etcd_version()} "
        "(local, built by `make setup`)",
    ]


def main() -> int:
    paths = sorted(RESULTS_DIR.glob("*.json"))
    fragments = {path.stem: json.loads(path.read_text()) for path in paths}
    # A benchmark rerun alone replaces its own table: say when each table was measured.
    measured_at = {
        path.stem: time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(path.stat().st_mtime))
        for path in paths
    }
    if not fragments:
        print("no results in bench/.results; run the benchmarks first", file=sys.stderr)
        return 1
    lines = [
        "# Benchmark results",
        "",
        f"Written by `bench/report.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        "from the latest run of each benchmark (`make bench` runs them all; each table says "
        "when it was measured). "
        "Every ratio compares two things measured in the same run on the same local API "
        "server; absolute numbers move with the machine's load, ratios much less.",
        "",
        "## Machine and versions",
        "",
        *_machine(),
        *_versions(),
    ]
    for name in sorted(fragments, key=lambda n: (ORDER.index(n) if n in ORDER else 99, n)):
        fragment = fragments[name]
        lines += ["", f"## {fragment['title']}", ""]
        lines.append("| " + " | ".join(fragment["header"]) + " |")
        lines.append("|" + "---|" * len(fragment["header"]))
        lines += ["| " + " | ".join(row) + " |" for row in fragment["rows"]]
        lines.append("")
        lines.append(f"- Measured {measured_at[name]} (`bench/{name}.py`).")
        lines += [f"- {note}" for note in fragment["notes"]]
    # The profiles behind the goals not met: written by hand, kept across runs.
    notes = (BENCH / "WHERE_THE_TIME_GOES.md").read_text().split("\n", 1)[1]
    lines += ["", "## Where the time goes, for the goals not met", notes.rstrip("\n")]
    (BENCH / "RESULTS.md").write_text("\n".join(lines) + "\n")
    print(BENCH / "RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
