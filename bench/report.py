"""Assemble bench/RESULTS.md from the fragments of one `make bench` run.

Adds what the numbers depend on: the machine (CPU model, cores, memory,
kernel) and the versions of everything measured.

`report.py NAME...` writes only those benchmarks' tables anew (a benchmark
rerun alone), keeping every other table of RESULTS.md as it is.
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
from typing import Any

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
    "agent_attach_latency",
    "tenant_fairness",
    "sharding",
    "diagnose",
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


def _source(name: str, fragment: dict[str, Any]) -> str:
    """What measured a fragment: its benchmark, or the test it names (`source`)."""
    return str(fragment.get("source", f"bench/{name}.py"))


def section(name: str, fragment: dict[str, Any], measured_at: str) -> list[str]:
    """One benchmark's table and notes, as RESULTS.md lists them (a blank line first)."""
    lines = ["", f"## {fragment['title']}", ""]
    lines.append("| " + " | ".join(fragment["header"]) + " |")
    lines.append("|" + "---|" * len(fragment["header"]))
    lines += ["| " + " | ".join(row) + " |" for row in fragment["rows"]]
    lines.append("")
    lines.append(f"- Measured {measured_at} (`{_source(name, fragment)}`).")
    lines += [f"- {note}" for note in fragment["notes"]]
    return lines


def _order(name: str) -> tuple[int, str]:
    return ORDER.index(name) if name in ORDER else 99, name


def _chunks() -> list[str]:
    """RESULTS.md as it is: the header, then one chunk per "## " section."""
    return re.split(r"\n(?=## )", (BENCH / "RESULTS.md").read_text())


def _measured_by(chunk: str, fragments: dict[str, Any]) -> str | None:
    """The benchmark (or test) whose table a chunk of RESULTS.md is, if any."""
    found = re.search(r"^- Measured [^\n]*\(`([\w/]+\.py)`", chunk, re.MULTILINE)
    if found is None:
        return None
    by_source = {_source(name, fragment): name for name, fragment in fragments.items()}
    return by_source.get(found.group(1), Path(found.group(1)).stem)


def _rewrite(names: list[str], fragments: dict[str, Any], measured_at: dict[str, str]) -> None:
    """RESULTS.md with the tables of `names` written anew (in their place, or
    where ORDER puts them), every other part as it was."""
    path = BENCH / "RESULTS.md"
    chunks = _chunks()

    for name in names:
        new = "\n".join(section(name, fragments[name], measured_at[name])[1:]) + "\n"
        benches = [_measured_by(chunk, fragments) for chunk in chunks]
        if name in benches:
            chunks[benches.index(name)] = new
            continue
        later = [
            index
            for index, other in enumerate(benches)
            if other is not None and _order(other) > _order(name)
        ]
        where_the_time_goes = next(
            index for index, chunk in enumerate(chunks) if chunk.startswith("## Where the time")
        )
        chunks.insert(min([*later, where_the_time_goes]), new)
    path.write_text("\n".join(chunks))


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
    names = sys.argv[1:]
    if names:
        missing = [name for name in names if name not in fragments]
        if missing:
            print(f"no results in bench/.results for {', '.join(missing)}", file=sys.stderr)
            return 1
        _rewrite(names, fragments, measured_at)
        print(BENCH / "RESULTS.md")
        return 0
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
    # Tables this run did not measure (a benchmark not run, or one measured by a node
    # test: the diagnosis) stay as they were, in their order.
    kept = {
        measured_by: chunk.rstrip("\n")
        for chunk in _chunks()
        if (measured_by := _measured_by(chunk, fragments)) is not None
        and measured_by not in fragments
    }
    for name in sorted([*fragments, *kept], key=_order):
        lines += (
            section(name, fragments[name], measured_at[name])
            if name in fragments
            else ["", kept[name]]
        )
    # The profiles behind the goals not met: written by hand, kept across runs.
    notes = (BENCH / "WHERE_THE_TIME_GOES.md").read_text().split("\n", 1)[1]
    lines += ["", "## Where the time goes, for the goals not met", notes.rstrip("\n")]
    (BENCH / "RESULTS.md").write_text("\n".join(lines) + "\n")
    print(BENCH / "RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
