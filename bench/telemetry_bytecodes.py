"""What telemetry adds to a reconcile, counted rather than timed: Python bytecodes,
Python calls and C calls per reconcile in each mode of `telemetry_overhead.py`,
the same rounds on a real local control plane, and which functions the default
settings add them in.

CPU time on a shared machine moves by a few percent from run to run, as much as
a change to the telemetry's hot path saves; these counts move by under 0.1 %
(the trace ids are drawn from a seeded `random`; two runs of the same code
differed by 8 bytecodes in 11,900), so a change can be judged by them in
seconds, then confirmed by `telemetry_overhead.py`'s CPU ratio. They are a
proxy: a bytecode costs from a few machine instructions (a local load) to
thousands (a call into C that allocates), and the plain runtime spends most of
its time in C (TLS, the HTTP parser, JSON), which none of them counts.

Each mode: two rounds to warm up, then one round counted (the event loop's
thread only: the span exporter's thread is not on the reconcile's path).

    .venv/bin/python bench/telemetry_bytecodes.py [--objects 300] [--top 25]
"""

import argparse
import asyncio
import collections
import random
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from telemetry_overhead import (
    DEFAULT,
    SAMPLING,
    TRACING,
    _round,
    _tracing,
    create_objects,
    start_sink,
)

from wukong.devcluster import ephemeral_control_plane
from wukong.metrics.definitions import create_metrics

MODES = ("none", "metrics", TRACING, DEFAULT)
_SITE = "site-packages/"
_ROOT = str(Path(__file__).resolve().parents[1]) + "/"


def _where(frame: FrameType) -> str:
    code = frame.f_code
    path = code.co_filename.split(_SITE)[-1].replace(_ROOT, "")
    return f"{path}:{code.co_name}"


class Counts:
    """Bytecodes and Python calls by function, C calls by name, in this thread."""

    def __init__(self) -> None:
        self.bytecodes: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()
        self.c_calls: collections.Counter[str] = collections.Counter()

    def _trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        where = _where(frame)
        bytecodes = self.bytecodes

        def opcodes(frame: FrameType, event: str, arg: Any) -> Any:
            if event == "opcode":
                bytecodes[where] += 1
            return opcodes

        return opcodes

    def _profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            self.calls[_where(frame)] += 1
        elif event == "c_call":
            self.c_calls[getattr(arg, "__qualname__", str(arg))] += 1

    def start(self) -> None:
        sys.settrace(self._trace)
        sys.setprofile(self._profile)

    def stop(self) -> None:
        sys.settrace(None)
        sys.setprofile(None)


async def count(kubeconfig: Path, objects: int, endpoint: str) -> dict[str, Counts]:
    counted = {}
    providers = {mode: _tracing(endpoint) for mode in SAMPLING if mode in MODES}
    for mode in MODES:
        random.seed(7)  # the same trace ids, so the same traces kept, in every run
        registry = create_metrics() if "metrics" in mode else None
        for _ in range(2):
            await _round(kubeconfig, objects, mode, providers.get(mode), registry=registry)
        counts = counted[mode] = Counts()
        counts.start()
        try:
            await _round(kubeconfig, objects, mode, providers.get(mode), registry=registry)
        finally:
            counts.stop()
    for provider in providers.values():
        provider.shutdown()
    return counted


def report(counted: dict[str, Counts], objects: int, top: int) -> None:
    def per(counter: collections.Counter[str]) -> float:
        return sum(counter.values()) / objects

    none = counted["none"]
    print(f"per reconcile ({objects} reconciles), and against none:")
    for mode, counts in counted.items():
        figures = {
            "bytecodes": (per(counts.bytecodes), per(none.bytecodes)),
            "calls": (per(counts.calls), per(none.calls)),
            "C calls": (per(counts.c_calls), per(none.c_calls)),
        }
        print(
            f"  {mode:17} "
            + "   ".join(
                f"{what} {ours:7.0f} (x{ours / plain:.3f})"
                for what, (ours, plain) in figures.items()
            )
        )
    default = counted[DEFAULT]
    added = {
        where: (default.bytecodes[where] - none.bytecodes[where]) / objects
        for where in set(default.bytecodes) | set(none.bytecodes)
    }
    print(f"where {DEFAULT} adds bytecodes (and Python calls), per reconcile:")
    for where, bytecodes in sorted(added.items(), key=lambda item: -abs(item[1]))[:top]:
        calls = (default.calls[where] - none.calls[where]) / objects
        print(f"  {bytecodes:+7.1f} ({calls:+.2f} calls)  {where}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--top", type=int, default=25, help="functions listed (default 25)")
    args = parser.parse_args()
    sink, endpoint = start_sink()
    try:
        with ephemeral_control_plane(progress=lambda m: print(m, file=sys.stderr)) as plane:
            asyncio.run(create_objects(plane.kubeconfig, args.objects))
            counted = asyncio.run(count(plane.kubeconfig, args.objects, endpoint))
    finally:
        sink.kill()
        sink.wait()
    report(counted, args.objects, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
