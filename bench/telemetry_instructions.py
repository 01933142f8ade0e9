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

With `--cache-sim`, valgrind also simulates the caches and the branch
predictor (`--cache-sim=yes --branch-sim=yes`, about twice as slow): data
accesses, misses of the first-level instruction and data caches and of the
last level, and branch mispredictions, per reconcile. An instruction count leaves out what
makes telemetry's code dearer than its count where CPU time is concerned (its
code and data are new to the caches); these counts measure that part without
the machine's noise. Printed with them: two rough estimates of cycles from
them (KCachegrind's, `kcachegrind_cycles`; the one used to benchmark Python in
CI, `access_cycles`) and each count's ratio against none. Whatever each event
really costs, a sum of them weighted alike in every mode cannot be dearer,
against none, than the dearest of those ratios.

    .venv/bin/python bench/telemetry_instructions.py [--objects 300] [--rounds 9]
        [--modes none metrics+tracing] [--cache-sim]

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

# What valgrind's summary counts, by the label it prints (the first figure of its line).
_COUNTED = {
    "instructions": "I   refs:",
    "data accesses": "D   refs:",
    "I1 misses": "I1  misses:",
    "D1 misses": "D1  misses:",
    "LL misses": "LL misses:",
    "mispredictions": "Mispredicts:",
}


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


def _counts(
    kubeconfig: Path, objects: int, mode: str, rounds: int, *, cache_sim: bool
) -> dict[str, int]:
    """What valgrind counts in a process that warms up and reconciles `rounds` times:
    instructions, and with `cache_sim` the simulated misses and mispredictions."""
    simulate = "yes" if cache_sim else "no"
    run = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            f"--cache-sim={simulate}",
            f"--branch-sim={simulate}",
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
    wanted = _COUNTED if cache_sim else {"instructions": _COUNTED["instructions"]}
    counts: dict[str, int] = {}
    for name, label in wanted.items():
        found = re.search(re.escape(label) + r"\s+([\d,]+)", run.stderr)
        if found is not None:
            counts[name] = int(found.group(1).replace(",", ""))
    if run.returncode != 0 or len(counts) != len(wanted):
        raise SystemExit(f"valgrind run of {mode} failed ({run.returncode}):\n{run.stderr[-2000:]}")
    return counts


def _first_level_misses(counts: dict[str, float]) -> float:
    return counts["I1 misses"] + counts["D1 misses"]


def kcachegrind_cycles(counts: dict[str, float]) -> float:
    """KCachegrind's cycle estimate: every instruction a cycle, a first-level miss or a
    misprediction 10 more, a last-level miss 100."""
    return (
        counts["instructions"]
        + 10 * (_first_level_misses(counts) + counts["mispredictions"])
        + 100 * counts["LL misses"]
    )


def access_cycles(counts: dict[str, float]) -> float:
    """The estimate pythonspeed.com's "consistent benchmarking in CI" and Rust's iai give
    from the same counts: an access (instruction or data) served by the first level
    costs 1, by the last level 5, by memory 35; mispredictions are not counted."""
    first_level_misses = _first_level_misses(counts)
    accesses = counts["instructions"] + counts["data accesses"]
    return (
        accesses
        - first_level_misses
        + 5 * (first_level_misses - counts["LL misses"])
        + 35 * counts["LL misses"]
    )


def _describe(counts: dict[str, float]) -> str:
    line = f"{counts['instructions'] / 1000:8.1f}k instructions"
    if "I1 misses" not in counts:
        return line + " a reconcile"
    return (
        f"{line}, {counts['data accesses'] / 1000:.1f}k data accesses, "
        f"{counts['I1 misses'] / 1000:.2f}k I1 + {counts['D1 misses'] / 1000:.2f}k D1 "
        f"misses, {counts['LL misses']:.1f} LL misses, "
        f"{counts['mispredictions'] / 1000:.2f}k mispredictions a reconcile; cycles "
        f"estimated {kcachegrind_cycles(counts) / 1000:.1f}k (KCachegrind), "
        f"{access_cycles(counts) / 1000:.1f}k (by accesses)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=9, help="measured rounds (default 9)")
    parser.add_argument(
        "--modes", nargs="+", choices=MODES, default=list(MODES), help="default: every mode"
    )
    parser.add_argument(
        "--cache-sim",
        action="store_true",
        help="also simulate the caches and the branch predictor (about twice as slow)",
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
    per_reconcile: dict[str, dict[str, float]] = {}
    with ephemeral_control_plane(progress=lambda m: print(m, file=sys.stderr)) as plane:
        asyncio.run(create_objects(plane.kubeconfig, args.objects))
        for mode in args.modes:
            warm_only, measured = (
                _counts(plane.kubeconfig, args.objects, mode, rounds, cache_sim=args.cache_sim)
                for rounds in (0, args.rounds)
            )
            per_reconcile[mode] = {
                name: (measured[name] - warm_only[name]) / reconciles for name in measured
            }
            print(f"  {mode:28} {_describe(per_reconcile[mode])}")
    if "none" in per_reconcile:
        none = per_reconcile["none"]
        for mode, counts in per_reconcile.items():
            if mode == "none":
                continue
            ratios = [f"instructions x{counts['instructions'] / none['instructions']:.3f}"]
            if args.cache_sim:
                misses = _first_level_misses(counts) / _first_level_misses(none)
                ratios += [
                    f"data accesses x{counts['data accesses'] / none['data accesses']:.3f}",
                    f"first-level misses x{misses:.3f}",
                    f"mispredictions x{counts['mispredictions'] / none['mispredictions']:.3f}",
                    f"LL misses x{counts['LL misses'] / none['LL misses']:.3f}",
                    "cycles estimated "
                    f"x{kcachegrind_cycles(counts) / kcachegrind_cycles(none):.3f} (KCachegrind), "
                    f"x{access_cycles(counts) / access_cycles(none):.3f} (by accesses)",
                ]
            print(f"{mode} against none: {', '.join(ratios)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
