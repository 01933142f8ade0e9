"""Machine instructions per reconcile in each mode of `telemetry_overhead.py`, counted
by valgrind: the figure a change to telemetry's hot path is judged by before its
CPU ratio is timed.

CPU time on a shared machine moves by a few percent from run to run; these
counts move by about 0.2k instructions in 1,100k (0.02 %), so a change of 1k
shows. For each mode, `valgrind --tool=cachegrind --cache-sim=no` runs one
process that reconciles the objects once to warm up and then `--rounds` times
(the rounds of `telemetry_overhead.py`: a fresh manager each, the mode's
registry and tracer provider made once), and another that only warms up; their
difference over the reconciles is the mode's cost per reconcile, all threads
(the span exporter's too), imports and set-up left out. Hash randomization is
off and trace ids are drawn from a seeded `random`, so two runs do the same work.
Spans go to `otlp_sink.py`, a process valgrind does not follow.

    .venv/bin/python bench/telemetry_instructions.py [--objects 300] [--rounds 9]
        [--modes none metrics+tracing]

Needs valgrind (Debian: `apt-get install valgrind`); about 15 s a mode.
"""

import argparse
import asyncio
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

from telemetry_overhead import MODES, SAMPLING, _round, _tracing, create_objects, start_sink

from wukong.devcluster import ephemeral_control_plane
from wukong.metrics.definitions import create_metrics

_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


async def _reconcile(kubeconfig: Path, objects: int, mode: str, rounds: int) -> None:
    """In the measured process: warm up, then `rounds` rounds of `mode`."""
    random.seed(7)
    provider = sink = None
    if mode in SAMPLING:
        sink, endpoint = start_sink()  # answers at once with its port
        provider = _tracing(endpoint)
    registry = create_metrics() if "metrics" in mode else None
    try:
        for _ in range(1 + rounds):
            await _round(kubeconfig, objects, mode, provider, registry=registry)
        if provider is not None:
            provider.force_flush()
    finally:
        if sink is not None:
            sink.kill()
            sink.wait()


def _instructions(kubeconfig: Path, objects: int, mode: str, rounds: int) -> int:
    """Instructions valgrind counts in a process that warms up and reconciles `rounds` times."""
    run = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--measured",
            f"--kubeconfig={kubeconfig}",
            f"--objects={objects}",
            f"--rounds={rounds}",
            f"--modes={mode}",
        ],
        env={**os.environ, "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
        check=False,
    )
    found = _REFS.search(run.stderr)
    if run.returncode != 0 or found is None:
        raise SystemExit(f"valgrind run of {mode} failed ({run.returncode}):\n{run.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=9, help="measured rounds (default 9)")
    parser.add_argument(
        "--modes", nargs="+", choices=MODES, default=list(MODES), help="default: every mode"
    )
    parser.add_argument("--measured", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measured:
        (mode,) = args.modes
        asyncio.run(_reconcile(args.kubeconfig, args.objects, mode, args.rounds))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    reconciles = args.rounds * args.objects
    per_reconcile: dict[str, float] = {}
    with ephemeral_control_plane(progress=lambda m: print(m, file=sys.stderr)) as plane:
        asyncio.run(create_objects(plane.kubeconfig, args.objects))
        for mode in args.modes:
            warm_only = _instructions(plane.kubeconfig, args.objects, mode, 0)
            measured = _instructions(plane.kubeconfig, args.objects, mode, args.rounds)
            per_reconcile[mode] = (measured - warm_only) / reconciles
            print(f"  {mode:28} {per_reconcile[mode] / 1000:8.1f}k instructions a reconcile")
    if "none" in per_reconcile:
        none = per_reconcile["none"]
        ratios = ", ".join(f"{mode} x{value / none:.3f}" for mode, value in per_reconcile.items())
        print(f"against none: {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
