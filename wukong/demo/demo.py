"""`wukong demo`: the whole system on one machine, until Ctrl-C.

Brings up the demo stack on a local control plane, runs the operator, applies
the sample Wukongs and shows their progress until all are Running, then says
where to look. `--storm` then makes the API server slow and shows the storm
and its diagnosis live; `--drill` runs a rolling restart and the three scripted
faults and prints a report for each.
"""

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from wukong.demo.drill import HEALTHY_TIMEOUT, SLOW_API_DELAY, Drill
from wukong.demo.samples import DEMO_WUKONGS, web_server
from wukong.demo.stack import NAMESPACE, SERVICE, DemoStack, dashboard_variables
from wukong.demo.telemetry import summarize_traces
from wukong.devcluster import ControlPlane
from wukong.devcluster.jaeger import LocalJaeger
from wukong.diagnose.panels import EVIDENCE_PANELS, LEADER_PANEL, leader_dropped, panel_readings
from wukong.diagnose.rules import diagnose
from wukong.diagnose.split import slowest_calls
from wukong.operator.api import WUKONGS

Progress = Callable[[str], None]
STORM_SECONDS = 30


async def run_demo(
    plane: ControlPlane,
    *,
    work_dir: Path,
    storm: bool,
    drill: bool,
    exit_when_ready: bool,
    progress: Progress,
    jaeger: LocalJaeger | None = None,
) -> int:
    async with DemoStack(plane=plane, work_dir=work_dir, jaeger=jaeger) as stack:
        progress(f"starting the operator (logs: {work_dir})")
        await stack.start_operator(reconcile_timeout=HEALTHY_TIMEOUT)
        for name, spec in DEMO_WUKONGS.items():
            await stack.apply(name, spec)
        progress(f"applied {len(DEMO_WUKONGS)} Wukongs: {', '.join(DEMO_WUKONGS)}")
        await watch_until_running(stack, list(DEMO_WUKONGS), progress=progress)
        progress("all Wukongs Running")
        progress(await where_to_look(stack))
        code = 0
        if drill:
            reports = await Drill(stack=stack, progress=progress).run()
            code = 0 if all(report.correct for report in reports) else 1
        elif storm:
            await show_storm(stack, progress=progress)
        if exit_when_ready:
            return code
        progress("running; Ctrl-C stops the operator, Prometheus and the control plane")
        await asyncio.Event().wait()
    return code


async def watch_until_running(
    stack: DemoStack, names: list[str], *, progress: Progress, timeout: float = 180.0
) -> None:
    """Print each Wukong's phase and Ready reason when they change, until all are Running."""
    seen: dict[str, str] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        listed = await stack.api.list(WUKONGS, namespace=NAMESPACE)
        states = {}
        for item in listed["items"]:
            status = item.get("status") or {}
            ready: dict[str, str] = next(
                (c for c in status.get("conditions") or [] if c["type"] == "Ready"), {}
            )
            states[item["metadata"]["name"]] = f"{status.get('phase') or 'Pending'}" + (
                f" ({ready.get('reason')}: {ready.get('message')})" if ready else ""
            )
        for name in names:
            state = states.get(name, "not created")
            if seen.get(name) != state:
                progress(f"  {name:<10} {state}")
                seen[name] = state
        if all(states.get(name, "").startswith("Running") for name in names):
            return
        if loop.time() > deadline:
            raise TimeoutError(f"Wukongs not Running after {timeout:.0f}s")
        await asyncio.sleep(0.5)


async def where_to_look(stack: DemoStack) -> str:
    spans = await stack.operator_spans()
    traces = summarize_traces(spans)
    kubectl = f'kubectl --kubeconfig "{stack.plane.kubeconfig}"'
    operator_log = stack.operator.log_file if stack.operator else "-"
    return "\n".join(
        [
            "where to look:",
            f"  kubectl     {kubectl} get wukongs,vm,vmi,pvc,dv,net-attach-def",
            f"              {kubectl} describe wukong web-1",
            f"  metrics     http://127.0.0.1:{stack.metrics_port}/metrics",
            f"  health      http://127.0.0.1:{stack.health_port}/readyz",
            f"  Prometheus  {stack.prometheus.url}/graph?g0.expr="
            "sum%20by%20(reason)(rate(wukong_reconcile_cancellations_total%5B1m%5D))",
            f"  traces      {stack.jaeger.query_url}/api/traces?service={SERVICE}",
            f"              {len(spans)} spans; {traces.describe()}",
            f"  operator    {operator_log}",
        ]
    )


async def show_storm(stack: DemoStack, *, progress: Progress) -> None:
    """Slow the API server, create Wukongs, and show the storm and its diagnosis live."""
    baseline = summarize_traces(await stack.operator_spans()).api_p50_ms
    progress(f"storm: every API answer now takes {SLOW_API_DELAY} s; creating 4 Wukongs")
    started = time.time_ns() // 1000
    stack.proxy.delay = SLOW_API_DELAY
    names = [f"storm-{index}" for index in range(1, 5)]
    for name in names:
        await stack.apply(name, web_server(name))
    variables = dashboard_variables(rate_interval="30s")
    for _ in range(STORM_SECONDS // 5):
        await asyncio.sleep(5)
        traces = summarize_traces(await stack.operator_spans(since_us=started))
        panels = await asyncio.to_thread(
            panel_readings, stack.prometheus, EVIDENCE_PANELS, variables=variables
        )
        leader = await asyncio.to_thread(
            panel_readings, stack.prometheus, [LEADER_PANEL], variables=variables
        )
        alerts = await asyncio.to_thread(stack.prometheus.query, 'ALERTS{alertstate="firing"}')
        diagnosis = diagnose(
            traces.signals(baseline_api_p50_ms=baseline, leader_dropped=leader_dropped(leader))
        )
        progress(f"  traces: {traces.describe()}")
        for reading in panels:
            progress(f"  panel {reading.describe()}")
        firing = sorted({alert["metric"].get("alertname", "?") for alert in alerts})
        progress(f"  alerts firing: {', '.join(firing) or 'none yet'}")
        progress(f"  diagnosis: {diagnosis.cause}: {diagnosis.explanation}")
    calls = await asyncio.to_thread(slowest_calls, stack.jaeger, service=SERVICE, start_us=started)
    for call in calls:
        progress(f"  slow call {call.describe()}")
    progress("healing: the API server answers at full speed again")
    stack.proxy.delay = 0.0
    await watch_until_running(stack, names, progress=progress)
