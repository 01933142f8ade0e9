"""The agent on a real Wukong operator in a cancel storm: its counts match the operator's own.

`wukong run` (Debian's python3, with USDT probes) reconciles Wukongs through
a latency proxy under a 1 s deadline, so reconciles are cut short
(deadline_exceeded, or api_timeout when a call runs out of its share); the
agent, attached to the already running process, counts them from the
python:audit probe. After the storm heals, its counts by reason equal the
operator's wukong_reconcile_cancellations_total, and each event names the
trace and span of the reconcile it reports, as the operator exported them.
"""

import asyncio
import gc
import io
import json
import subprocess
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.ebpf.agent_helpers import Running, usdt_semaphore
from tests.exposition import metric_samples
from tests.polling import eventually, wait_until
from wukong.demo.samples import web_server
from wukong.demo.stack import DemoStack
from wukong.devcluster import ControlPlane
from wukong.diagnose.jaeger import JaegerSpan
from wukong.ebpf import python_probe
from wukong.ebpf.agent import Agent
from wukong.ebpf.discovery import PYTHON, Discovery, Target
from wukong.ebpf.live import write_json
from wukong.ebpf.preflight import StageFailed
from wukong.ebpf.python_probe import PythonProbe
from wukong.ebpf.records import Cancellation


def _operator_counts(port: int) -> Counter[str]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    counts: Counter[str] = Counter()
    for labels, value in metric_samples(text, "wukong_reconcile_cancellations_total"):
        if "reason" in labels and value:
            counts[labels["reason"]] += int(value)
    return counts


@pytest.mark.skipif(not Path("/usr/bin/prometheus").exists(), reason="needs Debian's prometheus")
async def test_agent_counts_match_the_operators_own_metric(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    seen: list[Cancellation] = []
    async with DemoStack(plane=control_plane, work_dir=tmp_path) as stack:
        operator = await stack.start_operator(reconcile_timeout=1.0)
        pid = operator.process.pid
        agent = Agent(node="test-node", discovery=Discovery(pids={pid}), on_cancel=seen.append)
        with Running(agent) as running:
            await asyncio.to_thread(wait_until, lambda: pid in running.agent.probes, "attach")
            stack.proxy.delay = 0.3
            for index in range(3):
                await stack.apply(f"storm-{index}", web_server(f"storm-{index}"))
            await asyncio.to_thread(
                wait_until, lambda: len(seen) >= 5, "5 cancellations", timeout=60
            )
            stack.proxy.delay = 0.0

            async def all_running() -> bool:
                return set((await stack.phases()).values()) == {"Running"}

            await eventually(all_running, timeout=60, interval=0.5, what="the storm to heal")
            # Quiet: no cancellation for 2 s, so both sides have counted the same storm.
            count = -1
            while count != len(seen):
                count = len(seen)
                await asyncio.sleep(2.0)
            operator_counts = await asyncio.to_thread(_operator_counts, stack.metrics_port)
        await stack.stop_operator()  # flushes its spans
        sample = next(c for c in seen if c.reason in ("deadline_exceeded", "api_timeout"))
        spans: dict[tuple[str, str], JaegerSpan] = {}

        async def sample_span_stored() -> bool:
            spans.update(
                ((span.trace_id, span.span_id), span)
                for span in await stack.operator_spans()
                if span.name == "reconcile Wukong"
            )
            return (sample.trace_id, sample.span_id) in spans

        await eventually(sample_span_stored, timeout=30, interval=1.0, what="the span in Jaeger")
    agent_counts = Counter(c.reason for c in seen)
    assert agent_counts["deadline_exceeded"] + agent_counts["api_timeout"] >= 5
    assert agent_counts == operator_counts, (agent_counts, operator_counts)
    # The event links to the very reconcile span, which says the same.
    span = spans[(sample.trace_id, sample.span_id)]
    assert span.tags["wukong.cancel.reason"] == sample.reason
    assert f"default/{span.tags['wukong.object.name']}" == sample.object_key
    assert sample.runtime == "python" and sample.controller == "wukong"
    assert sample.object_key.startswith("default/storm-")
    assert sample.object_namespace == "default"  # the tenant, on every Python event
    assert sample.budget_ms == 1000 and sample.elapsed_ms is not None
    # `wukong trace --json` prints the ids that lead to that span.
    printed = io.StringIO()
    write_json(sample, printed)
    line = json.loads(printed.getvalue())
    assert (line["trace_id"], line["span_id"]) == (span.trace_id, span.span_id)
    assert line["reason"] == span.tags["wukong.cancel.reason"]


def test_a_probe_that_fails_to_load_puts_the_semaphore_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The USDT probe is enabled before the BPF program loads: when the load fails (as
    it does without CAP_BPF), the semaphore goes back at once, so an agent exiting on
    that error leaves the operator not paying for audit events nobody reads."""
    process = subprocess.Popen(
        ["/usr/bin/python3", "-c", "import time; print('up', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        # Running its own code: before its exec, the child is still this interpreter.
        assert process.stdout is not None and process.stdout.readline() == "up\n"
        monkeypatch.setattr(python_probe, "SOURCE", b"int on_audit(struct pt_regs *ctx) {")
        target = Target(process.pid, "python3", PYTHON, None)
        with pytest.raises(StageFailed) as failed:
            PythonProbe(target, on_cancel=lambda _: None, on_lost=lambda _: None)
        assert failed.value.stage == "load"
        # The exception (and with it the probe) is still alive here: nothing waits for GC.
        assert usdt_semaphore(process.pid) == 0
        del failed
        gc.collect()  # the USDT object's destructor: closing the context twice is harmless
        assert usdt_semaphore(process.pid) == 0
    finally:
        process.kill()
        process.wait()
