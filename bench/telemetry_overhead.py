"""Cost of telemetry per reconcile: metrics alone, tracing alone and metrics with
tracing as the operator runs it (default settings: plain reconciles' traces kept
at the default ratio), and metrics with every trace kept (100 %), each against
none.

On a real local control plane, a fresh manager reconciles N existing
ConfigMaps; each reconcile makes one GET through `ctx.client` (so a traced
reconcile produces two spans). Measured per mode, alternating, `--rounds`
times: process CPU time (all threads) and wall time until every object has been
reconciled. Tracing is set up as the chart sets up the operator: its
environment (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`,
the chart's `tracing.protocol`) read by `configure_tracing` (its resource, the
SDK's BatchSpanProcessor with its default batching, which exports every 5 s or
at 512 spans, and the OTLP/gRPC exporter), once per tracing mode for the whole
run, as the operator does once for its life; so is each metrics mode's registry
(`create_metrics`: its families, the process and GC collectors), each round's
observer recording into it. Spans go to a receiver in another
process (`otlp_sink`, so decoding spans is not billed to tracing). A batch
processor's exports run in its own thread whenever its batch is due, often
during another mode's round: each round's CPU leaves out every exporting
thread's, and each tracing mode's exporting over the measured rounds (its
thread's CPU, and the flush of what was left queued at their end) is billed
to that mode's rounds in equal shares, as a long-running operator's exports
are spread over its reconciles.
The modes are interleaved (their order rotates every round) and each mode's
cost is compared with the plain runtime *of the same round*: a machine that
slows down between rounds moves both sides of a ratio. Printed: the median of those per-round ratios
with their min and max, so the spread is visible next to the figure, and the
interval that holds the median with 95 % confidence (narrower with more
`--rounds`: on a noisy machine, what tells whether a goal's 0.01 is read); then
where tracing's time goes: a kept reconcile's spans made and exported apart
with the SDK, and a profile of as many rounds again of none, metrics and the
default settings (thread CPU in each observer and in the garbage collector), so
what metrics add and what tracing adds on top are told apart.

    .venv/bin/python bench/telemetry_overhead.py [--objects 300] [--rounds 15]
"""

import argparse
import asyncio
import collections
import dataclasses
import gc
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from results import median_interval, spread, write_fragment

from wukong.devcluster import ephemeral_control_plane
from wukong.metrics import RuntimeMetrics
from wukong.metrics.definitions import OperatorMetrics, create_metrics
from wukong.runtime import (
    Client,
    Controller,
    ControllerOptions,
    Manager,
    ManagerOptions,
    ReconcileContext,
    Request,
    Result,
    RuntimeObserver,
)
from wukong.runtime.resources import CONFIGMAPS, NAMESPACES
from wukong.tracing.sampling import TailSampling
from wukong.tracing.setup import configure_tracing
from wukong.tracing.spans import ReconcileTracer

NAMESPACE = "bench-tracing"


class GetOnce:
    def __init__(self, expected: int) -> None:
        self.done: set[str] = set()
        self.expected = expected
        self.all_done = asyncio.Event()

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        await ctx.client.get(CONFIGMAPS, request.name, namespace=request.namespace)
        self.done.add(request.name)
        if len(self.done) >= self.expected:
            self.all_done.set()
        return Result()


DEFAULT = "metrics+tracing"  # the operator's default settings
TRACING = "tracing"  # the default settings without metrics: tracing's own share
ALL_KEPT = "metrics+tracing, 100 % kept"
MODES = ("none", "metrics", TRACING, DEFAULT, ALL_KEPT)
# Each tracing mode's sampling: the operator's defaults (a keep ratio and a floor of
# one plain trace a controller a minute), or every trace kept.
_DEFAULT_SAMPLING = TailSampling.from_environ({})
SAMPLING = {
    TRACING: _DEFAULT_SAMPLING,
    DEFAULT: _DEFAULT_SAMPLING,
    ALL_KEPT: dataclasses.replace(_DEFAULT_SAMPLING, keep_ratio=1.0),
}


class _Keep(SpanExporter):
    """Keeps the spans of one round, to time their export apart."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


class _Profile:
    """Thread CPU, over profiled rounds, spent in each observer's calls and in the GC."""

    def __init__(self) -> None:
        self.seconds: collections.Counter[str] = collections.Counter()
        self.cpu = 0.0  # the rounds' process CPU (all threads; "loop": the event loop's)
        self.reconciles = 0
        self._gc_started = 0.0

    def watch(self, observer: RuntimeObserver) -> None:
        """Time the methods `observer` overrides (the only ones the manager calls)."""
        key = getattr(observer, "name", type(observer).__name__)
        for method in vars(RuntimeObserver):
            own = getattr(type(observer), method, None)
            if method.startswith("_") or own is getattr(RuntimeObserver, method):
                continue
            call = getattr(observer, method)

            def timed(*args: Any, _call: Any = call) -> Any:
                started = time.thread_time()
                try:
                    return _call(*args)
                finally:
                    self.seconds[key] += time.thread_time() - started

            setattr(observer, method, timed)

    def collecting(self, phase: str, info: dict[str, int]) -> None:
        """A gc.callbacks hook: time spent collecting garbage (in whichever thread)."""
        if phase == "start":
            self._gc_started = time.thread_time()
        else:
            self.seconds["gc"] += time.thread_time() - self._gc_started

    def us(self, key: str) -> float:
        return self.seconds[key] / self.reconciles * 1e6


# The chart's `tracing.protocol` (deploy/chart/wukong/values.yaml).
PROTOCOL = "grpc"


def _tracing(endpoint: str) -> TracerProvider:
    """The operator's own tracing setup, from the environment the chart gives it,
    exporting to `endpoint`."""
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": PROTOCOL}
    os.environ.update(environ)  # the SDK's exporter reads its endpoint from there
    provider = configure_tracing(environ)
    assert provider is not None
    return provider


class _Exporting:
    """The CPU each tracing mode's provider spends exporting: its batch processor's
    thread (found as it starts), and flushes made here."""

    def __init__(self) -> None:
        self._threads: dict[str, threading.Thread] = {}
        self.flushed: collections.Counter[str] = collections.Counter()

    def provider(self, mode: str, endpoint: str) -> TracerProvider:
        before = set(threading.enumerate())
        provider = _tracing(endpoint)
        (thread,) = (
            thread
            for thread in threading.enumerate()
            if thread not in before and "Batch" in thread.name
        )
        self._threads[mode] = thread
        return provider

    def cpu(self) -> dict[str, float]:
        """Each mode's exporting thread's CPU so far, seconds."""
        assert all(thread.ident is not None for thread in self._threads.values())
        return {
            mode: time.clock_gettime(time.pthread_getcpuclockid(thread.ident))  # type: ignore[arg-type]
            for mode, thread in self._threads.items()
        }

    def flush(self, mode: str, provider: TracerProvider) -> None:
        """Export what `mode` left queued, here (the SDK's flush exports in its caller)."""
        started = time.thread_time()
        provider.force_flush()
        self.flushed[mode] += time.thread_time() - started


async def _round(
    kubeconfig: Path,
    objects: int,
    mode: str,
    provider: TracerProvider | None = None,
    profile: _Profile | None = None,
    exporting: _Exporting | None = None,
    registry: OperatorMetrics | None = None,
) -> tuple[float, float]:
    """(cpu seconds, wall seconds) for one manager to reconcile every object once,
    tracing into `provider` (the mode's, made once) when given, recording metrics
    into `registry` (the mode's, made once; a fresh one if None); the CPU without
    that of the exporting threads of `exporting` (billed apart)."""
    async with await Client.from_kubeconfig(kubeconfig) as client:
        reconciler = GetOnce(objects)
        observers: list[RuntimeObserver] = []
        if provider is not None:
            observers.append(ReconcileTracer(provider=provider, sampling=SAMPLING[mode]))
        if "metrics" in mode:
            observers.append(RuntimeMetrics(metrics=registry))
        if profile is not None:
            for observer in observers:
                profile.watch(observer)
            gc.callbacks.append(profile.collecting)
        manager = Manager(
            client=client,
            observers=observers,
            options=ManagerOptions(namespace=NAMESPACE, block_warning_seconds=None),
        )
        manager.add(
            Controller(
                name="bench",
                reconciler=reconciler,
                primary=CONFIGMAPS,
                options=ControllerOptions(max_concurrent_reconciles=4),
            )
        )
        exported = sum(exporting.cpu().values()) if exporting is not None else 0.0
        cpu, wall, loop_cpu = time.process_time(), time.monotonic(), time.thread_time()
        running = asyncio.create_task(manager.run())
        await asyncio.wait_for(reconciler.all_done.wait(), timeout=600)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        if exporting is not None:
            cpu -= sum(exporting.cpu().values()) - exported
        if profile is not None:
            gc.callbacks.remove(profile.collecting)
            profile.cpu += cpu
            profile.seconds["loop"] += time.thread_time() - loop_cpu
            profile.reconciles += objects
        manager.stop()
        await running
    return cpu, wall


def _span_costs(endpoint: str, spans: list[ReadableSpan]) -> tuple[float, float]:
    """Where a kept trace's time goes, per reconcile (its span and one API call's span),
    in us: creating and ending two spans with these attributes with the SDK alone;
    exporting a round's real spans over OTLP/gRPC with the SDK's exporter."""
    reconciles = sum(1 for span in spans if span.parent is None)
    parent = next(span for span in spans if span.parent is None)
    child = next(span for span in spans if span.parent is not None)

    def create() -> float:
        tracer = TracerProvider().get_tracer("bench")
        started = time.process_time()
        for _ in range(reconciles):
            span = tracer.start_span(parent.name, attributes=parent.attributes)
            with trace.use_span(span, end_on_exit=True):
                tracer.start_span(child.name, attributes=child.attributes).end()
        return (time.process_time() - started) / reconciles * 1e6

    def export(exporter: SpanExporter) -> float:
        exporter.export(spans[:10])  # connect first
        started = time.process_time()
        for start in range(0, len(spans), 512):  # the BatchSpanProcessor's batches
            assert exporter.export(spans[start : start + 512]) is SpanExportResult.SUCCESS
        used = time.process_time() - started
        exporter.shutdown()
        return used / reconciles * 1e6

    return (
        min(create() for _ in range(3)),
        min(export(OTLPSpanExporter(endpoint=endpoint)) for _ in range(3)),
    )


async def create_objects(kubeconfig: Path, objects: int) -> None:
    """The ConfigMaps every round reconciles, in their namespace."""
    async with await Client.from_kubeconfig(kubeconfig) as client:
        await client.create(NAMESPACES, {"metadata": {"name": NAMESPACE}})
        for index in range(objects):
            await client.create(
                CONFIGMAPS, {"metadata": {"name": f"obj-{index:05d}", "namespace": NAMESPACE}}
            )


def start_sink() -> tuple["subprocess.Popen[str]", str]:
    """`otlp_sink.py` in its own process, and the OTLP endpoint it listens on."""
    sink = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("otlp_sink.py")), PROTOCOL],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sink.stdout is not None
    return sink, f"http://127.0.0.1:{sink.stdout.readline().split()[1]}"


async def run(kubeconfig: Path, objects: int, rounds: int) -> None:
    await create_objects(kubeconfig, objects)
    sink, endpoint = start_sink()  # answers at once with its port, before any work
    samples: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    # Each tracing mode's provider, made once as the operator makes its own.
    exporting = _Exporting()
    providers = {mode: exporting.provider(mode, endpoint) for mode in SAMPLING}
    # And each metrics mode's registry.
    registries = {mode: create_metrics() for mode in MODES if "metrics" in mode}

    async def flush_all() -> dict[str, float]:
        """Export what every mode left queued; each mode's exporting CPU so far."""
        for mode, provider in providers.items():
            await asyncio.to_thread(exporting.flush, mode, provider)
        cpu = exporting.cpu()
        return {mode: cpu[mode] + exporting.flushed[mode] for mode in providers}

    try:
        # Warm-up: imports, connections (the exporters' too), each registry's series.
        for mode in MODES:
            await _round(
                kubeconfig, objects, mode, providers.get(mode), registry=registries.get(mode)
            )
        started = await flush_all()
        for round_index in range(rounds):
            shift = round_index % len(MODES)
            for mode in MODES[shift:] + MODES[:shift]:
                samples[mode].append(
                    await _round(
                        kubeconfig,
                        objects,
                        mode,
                        providers.get(mode),
                        exporting=exporting,
                        registry=registries.get(mode),
                    )
                )
        # Each mode's exporting over its rounds, billed to them in equal shares (CPU only).
        ended = await flush_all()
        exported = {mode: ended[mode] - started[mode] for mode in providers}
        for mode, cpu in exported.items():
            samples[mode] = [(ours + cpu / rounds, wall) for ours, wall in samples[mode]]
        # Untimed above: where the time goes inside the process (as many rounds
        # again, of three modes), then one round's spans, to time their export apart.
        profiles = {"none": _Profile(), "metrics": _Profile(), DEFAULT: _Profile()}
        for _ in range(rounds):
            for mode, profile in profiles.items():
                await _round(
                    kubeconfig,
                    objects,
                    mode,
                    providers.get(mode),
                    profile,
                    exporting,
                    registries.get(mode),
                )
        profiles[DEFAULT].cpu += (await flush_all())[DEFAULT] - ended[DEFAULT]
        keep = _Keep()
        kept = _tracing(endpoint)
        kept.add_span_processor(SimpleSpanProcessor(keep))
        await _round(kubeconfig, objects, ALL_KEPT, kept)
        kept.shutdown()
        create_us, export_us = await asyncio.to_thread(_span_costs, endpoint, keep.spans)
    finally:
        for provider in providers.values():
            provider.shutdown()
        sink.terminate()
        received = sink.communicate(timeout=30)[0].strip()

    def per_reconcile_us(mode: str, index: int) -> list[float]:
        return [sample[index] / objects * 1e6 for sample in samples[mode]]

    def ratios(mode: str, index: int) -> list[float]:
        return [
            ours / base
            for ours, base in zip(
                per_reconcile_us(mode, index), per_reconcile_us("none", index), strict=True
            )
        ]

    print(f"objects: {objects}, rounds: {rounds}, {received} received")
    rows = []
    for mode in MODES:
        cpu = spread(per_reconcile_us(mode, 0), "{:.0f}")
        cpu_ratios = ratios(mode, 0)
        cpu_ratio = spread(cpu_ratios, "x{:.2f}")
        # How well the rounds pin the median ratio down: on a noisy machine a
        # goal's 0.01 can lie inside it, and more rounds narrow it.
        low, high = median_interval(cpu_ratios)
        interval = f"x{low:.3f}-x{high:.3f}"
        wall = spread(per_reconcile_us(mode, 1), "{:.0f}")
        wall_ratio = spread(ratios(mode, 1), "x{:.2f}")
        print(
            f"  {mode:<28} cpu {cpu} us ({cpu_ratio}; median in {interval})"
            f"   wall {wall} us ({wall_ratio})"
        )
        rows.append([mode, f"{cpu} us", cpu_ratio, interval, f"{wall} us", wall_ratio])
    where = (
        f"Where a kept trace's time goes (same run, apart, per reconcile): creating and "
        f"ending its two spans with the SDK alone {create_us:.0f} us; exporting them "
        f"(the SDK's protobuf encoding and the gRPC call, in the exporter's thread) "
        f"{export_us:.0f} us. Exporting in the measured rounds, billed to them in equal "
        f"shares (the batch processor's thread, and the flush of what was queued at their "
        f"end), per reconcile: "
        + ", ".join(
            f"{mode} {cpu / rounds / objects * 1e6:.1f} us" for mode, cpu in exported.items()
        )
        + "."
    )
    # What each profiled mode adds over none, by part; tracing's = the default's - metrics'.
    parts = {
        "tracing": "the tracing observer's calls (ids, a non-recording span and side "
        "records for every reconcile; the SDK making and queueing spans for the kept ones)",
        "metrics": "the metrics observer's (with a span current: a bucket's exemplar renewed "
        "at most once a second)",
        "gc": "more garbage collection",
        "threads": "other threads (the span exporter's)",
        "rest": "the rest of the event loop's thread (the runtime's reports to observers, "
        "each API call's traceparent)",
    }

    def added(mode: str) -> dict[str, float]:
        ours, base = profiles[mode], profiles["none"]
        total = (ours.cpu / ours.reconciles - base.cpu / base.reconciles) * 1e6
        loop = ours.us("loop") - base.us("loop")
        gc_us = ours.us("gc") - base.us("gc")
        observers = ours.us("tracing") + ours.us("metrics")
        return {
            "total": total,
            "tracing": ours.us("tracing"),
            "metrics": ours.us("metrics"),
            "gc": gc_us,
            "threads": total - loop,
            "rest": loop - observers - gc_us,
        }

    metrics_only, default = added("metrics"), added(DEFAULT)
    profiled = (
        f"Profile in the process ({rounds} more rounds each of none, metrics and {DEFAULT}, "
        f"thread CPU per reconcile over none's): metrics adds {metrics_only['total']:.0f} us, "
        f"{DEFAULT} {default['total']:.0f} us, so tracing "
        f"{default['total'] - metrics_only['total']:.0f} us; by part (metrics / {DEFAULT}): "
        + "; ".join(
            f"{what} {metrics_only[part]:.0f} / {default[part]:.0f} us"
            for part, what in parts.items()
        )
        + "."
    )
    print(f"  {where}\n  {profiled}")
    write_fragment(
        "telemetry_overhead",
        title=f"Telemetry cost per reconcile ({objects} reconciles x {rounds} rounds)",
        header=[
            "telemetry",
            "CPU/reconcile, median (min-max)",
            "CPU ratio",
            "CPU ratio's median, 95 % interval",
            "wall/reconcile",
            "wall ratio",
        ],
        rows=rows,
        notes=[
            'Ratios: each round against the plain runtime ("none") of the same round, '
            "modes interleaved in a rotating order; median (min-max) of the rounds. "
            "The interval holds the median of such rounds' ratios with 95 % confidence, "
            "from the rounds' order alone (the j-th smallest to the j-th largest; "
            "`median_interval` in bench/results.py).",
            "Each reconcile makes one GET, so a kept trace is two spans, exported as the "
            "chart sets the operator up: OTLP/gRPC, the SDK's batch processor at its "
            f"defaults (a batch every 5 s or at 512 spans). {DEFAULT}: the operator's "
            "default settings (none of these reconciles fails or is slow: "
            f"{SAMPLING[DEFAULT].keep_ratio:.1%} of their traces kept, by trace id, and one "
            f"a controller every {SAMPLING[DEFAULT].keep_every:g} s at least, more than a "
            f"round lasts); {TRACING}: the same without metrics; {ALL_KEPT}: every trace "
            "kept and exported.",
            where,
            profiled,
        ],
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with ephemeral_control_plane(progress=lambda m: print(m, file=sys.stderr)) as plane:
        asyncio.run(run(plane.kubeconfig, args.objects, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
