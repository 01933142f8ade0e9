"""The cancel-storm drill: four scripted events, each diagnosed from telemetry alone.

0. a rolling restart under load: reconciles in flight are cancelled for
   shutdown, twice; the right answer is "no failure", and no alert may even be
   pending (it runs first, before the faults' storms fill the alert windows);
1. slow API server: the latency proxy between the operator and the API server
   holds every answer; new Wukongs need more round trips than the deadline allows;
2. deadline too tight: the operator restarts with a reconcile timeout far below
   what one reconcile needs, with the API as fast as ever;
3. leader-lease loss: another identity takes the operator's Lease while
   reconciles are in flight; the operator cancels them and exits (status 2).

Each fault runs on the live `DemoStack`; afterwards the report is built only
from what the operator exported (its spans in Jaeger and the cancel-storm
dashboard's panels on Prometheus) and names the cause with the rules
`wukong diagnose` applies (`wukong.diagnose.rules`); it lists the slowest API
calls split by where their time went (`wukong.diagnose.split`: the API
server's side is there when the control plane traces into the same Jaeger). The stack
is healed after each fault and every Wukong created converges to Running.
"""

import asyncio
import datetime
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from wukong.demo.samples import web_server
from wukong.demo.stack import JOB, NAMESPACE, SERVICE, DemoError, DemoStack, dashboard_variables
from wukong.demo.telemetry import TraceSummary, summarize_traces
from wukong.diagnose.panels import (
    EVIDENCE_PANELS,
    LEADER_PANEL,
    PanelReading,
    leader_dropped,
    panel_readings,
)
from wukong.diagnose.rules import (
    LEADER_LOST,
    ROLLING_RESTART,
    SLOW_API,
    TIGHT_DEADLINE,
    Diagnosis,
    diagnose,
)
from wukong.diagnose.split import CallSplit, slowest_calls
from wukong.operator.run import LEASE_NAME
from wukong.runtime import Client, Conflict
from wukong.runtime.resources import LEASES

Progress = Callable[[str], None]

HEALTHY_TIMEOUT = 3.0
SLOW_API_DELAY = 0.6
TIGHT_TIMEOUT = 0.02
# The demo's Prometheus scrapes the operator and evaluates the alert rules every
# second (devcluster.prometheus); a report waits for this many scrapes after
# its fault, so the panels and alerts it reads include the fault's last effects.
SCRAPE_INTERVAL = 1.0
SCRAPES_BEFORE_REPORT = 3


@dataclass(frozen=True)
class FaultReport:
    fault: str
    expected: str
    traces: TraceSummary
    panels: list[PanelReading]
    diagnosis: Diagnosis
    alerts: list[str]  # Wukong alerts pending or firing when the report was made
    calls: list[CallSplit]  # the slowest API calls, split by where their time went

    @property
    def correct(self) -> bool:
        return self.diagnosis.cause == self.expected

    def render(self) -> str:
        mark = "correct" if self.correct else f"WRONG (expected {self.expected})"
        lines = [
            f"fault: {self.fault}",
            f"  diagnosis: {self.diagnosis.cause} ({mark})",
            f"  why: {self.diagnosis.explanation}",
            f"  traces: {self.traces.describe()}",
            f"  alerts pending or firing: {', '.join(self.alerts) or 'none'}",
            *(f"  panel {reading.describe()}" for reading in self.panels),
            *(f"  slow call {call.describe()}" for call in self.calls),
        ]
        return "\n".join(lines)


class Drill:
    def __init__(self, *, stack: DemoStack, progress: Progress) -> None:
        self.stack = stack
        self.progress = progress
        self.baseline_api_p50_ms = 0.0

    async def run(self) -> list[FaultReport]:
        await self.stack.start_operator(reconcile_timeout=HEALTHY_TIMEOUT)
        await self._baseline()
        reports = [
            await self.rolling_restart(),
            await self.slow_api_server(),
            await self.tight_deadline(),
            await self.lease_loss(),
        ]
        for report in reports:
            self.progress(report.render())
        return reports

    async def _baseline(self) -> None:
        started = _now_us()
        await self._create_and_wait("drill-base", count=2, what="healthy baseline")
        traces = summarize_traces(await self.stack.operator_spans(since_us=started))
        self.baseline_api_p50_ms = traces.api_p50_ms
        self.progress(f"baseline: {traces.describe()}")

    async def rolling_restart(self) -> FaultReport:
        self.progress("event 0: a rolling restart while reconciles are in flight (twice)")
        started = _now_us()
        self.stack.proxy.delay = 0.3  # keeps reconciles in flight when a replica stops
        names = await self._create("drill-restart", count=4)
        for _ in range(2):
            await self._until_reconciling()
            await self.stack.start_operator(reconcile_timeout=HEALTHY_TIMEOUT)
        self.stack.proxy.delay = 0.0
        await self._wait_running(names)
        await self._scraped()

        async def nothing_to_heal() -> None:
            return None

        return await self._report(
            "rolling restart under load", ROLLING_RESTART, started, heal=nothing_to_heal
        )

    async def slow_api_server(self) -> FaultReport:
        self.progress(f"fault 1: the API server answers {SLOW_API_DELAY} s late")
        started = _now_us()
        self.stack.proxy.delay = SLOW_API_DELAY
        names = await self._create("drill-slow", count=4)
        await self._until_cancelled(started, at_least=4)
        report = await self._report(
            "slow API server (latency proxy)", SLOW_API, started, heal=self._heal_latency
        )
        await self._wait_running(names)
        return report

    async def tight_deadline(self) -> FaultReport:
        self.progress(f"fault 2: the operator restarts with --reconcile-timeout={TIGHT_TIMEOUT}")
        await self.stack.start_operator(reconcile_timeout=TIGHT_TIMEOUT)
        started = _now_us()
        names = await self._create("drill-tight", count=4)
        await self._until_cancelled(started, at_least=8)

        async def heal() -> None:
            await self.stack.start_operator(reconcile_timeout=HEALTHY_TIMEOUT)

        report = await self._report("deadline too tight", TIGHT_DEADLINE, started, heal=heal)
        await self._wait_running(names)
        return report

    async def lease_loss(self) -> FaultReport:
        self.progress("fault 3: another identity takes the operator's Lease mid-reconcile")
        started = _now_us()
        self.stack.proxy.delay = 0.3  # keeps reconciles in flight when the Lease goes
        names = await self._create("drill-lease", count=4)
        await self._until_reconciling()
        await take_lease(
            self.stack.api, name=LEASE_NAME, namespace=NAMESPACE, holder="drill-intruder"
        )
        # The spans it flushes at exit are in Jaeger once it has exited (Jaeger
        # answers an export once it took the batch).
        code = await self.stack.wait_operator_exit(timeout=30)
        self.progress(f"  the operator exited with status {code}")
        self.stack.proxy.delay = 0.0
        await self._scraped()

        async def heal() -> None:
            await self.stack.api.delete(LEASES, LEASE_NAME, namespace=NAMESPACE)
            await self.stack.start_operator(reconcile_timeout=HEALTHY_TIMEOUT)

        report = await self._report("leader-lease loss", LEADER_LOST, started, heal=heal)
        await self._wait_running(names)
        return report

    # -- steps -------------------------------------------------------------------------

    async def _report(
        self,
        fault: str,
        expected: str,
        started: int,
        *,
        heal: Callable[[], Awaitable[None]],
    ) -> FaultReport:
        traces = summarize_traces(await self.stack.operator_spans(since_us=started))
        calls = await asyncio.to_thread(
            slowest_calls, self.stack.jaeger, service=SERVICE, start_us=started
        )
        window = f"{max(10, round((_now_us() - started) / 1e6) + 5)}s"
        variables = dashboard_variables(rate_interval=window)
        panels = await asyncio.to_thread(
            panel_readings, self.stack.prometheus, EVIDENCE_PANELS, variables=variables
        )
        leader = await asyncio.to_thread(
            panel_readings, self.stack.prometheus, [LEADER_PANEL], variables=variables
        )
        alerts = await asyncio.to_thread(self.stack.prometheus.query, "ALERTS")
        await heal()
        diagnosis = diagnose(
            traces.signals(
                baseline_api_p50_ms=self.baseline_api_p50_ms, leader_dropped=leader_dropped(leader)
            )
        )
        self.progress(f"  diagnosis: {diagnosis.cause}")
        return FaultReport(
            fault=fault,
            expected=expected,
            traces=traces,
            panels=panels,
            diagnosis=diagnosis,
            calls=calls,
            alerts=sorted(
                f"{alert['metric']['alertname']} ({alert['metric']['alertstate']})"
                for alert in alerts
            ),
        )

    async def _heal_latency(self) -> None:
        self.stack.proxy.delay = 0.0

    async def _create(self, prefix: str, *, count: int) -> list[str]:
        names = [f"{prefix}-{index}" for index in range(1, count + 1)]
        for name in names:
            await self.stack.apply(name, web_server(name))
        return names

    async def _create_and_wait(self, prefix: str, *, count: int, what: str) -> None:
        names = await self._create(prefix, count=count)
        self.progress(f"{what}: {', '.join(names)}")
        await self._wait_running(names)

    async def _until(
        self,
        check: Callable[[], Awaitable[bool]],
        *,
        timeout: float,
        interval: float,
        failure: Callable[[], str],
    ) -> None:
        """Poll `check` until it holds; a DemoError saying `failure()` after `timeout` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await check():
            if loop.time() > deadline:
                raise DemoError(f"{failure()} after {timeout:.0f}s")
            await asyncio.sleep(interval)

    async def _wait_running(self, names: list[str], *, timeout: float = 90.0) -> None:
        phases: dict[str, str] = {}

        async def all_running() -> bool:
            phases.update(await self.stack.phases())
            return all(phases.get(name) == "Running" for name in names)

        await self._until(
            all_running, timeout=timeout, interval=0.5, failure=lambda: f"not Running: {phases}"
        )

    async def _until_reconciling(self, *, timeout: float = 30.0) -> None:
        """Wait until the operator has reconciles in flight, for a fault to cut into."""

        async def reconciling() -> bool:
            return await self.stack.reconciles_in_flight() > 0

        await self._until(
            reconciling,
            timeout=timeout,
            interval=0.1,
            failure=lambda: "the operator had no reconcile in flight",
        )

    async def _until_cancelled(self, started: int, *, at_least: int, timeout: float = 40.0) -> None:
        """Let the fault act until the traces show `at_least` cancelled reconciles."""
        cancelled = 0

        async def enough() -> bool:
            nonlocal cancelled
            traces = summarize_traces(await self.stack.operator_spans(since_us=started))
            cancelled = sum(traces.cancellations.values())
            return cancelled >= at_least

        await self._until(
            enough,
            timeout=timeout,
            interval=1.0,
            failure=lambda: f"{cancelled} of {at_least} cancelled reconciles in the traces",
        )
        await self._scraped()

    async def _scraped(self, *, timeout: float = 30.0) -> None:
        """Wait until Prometheus has scraped the operator `SCRAPES_BEFORE_REPORT` times
        from now (a scrape of an exited operator counts: it records `up` 0)."""
        # The scrapes after `mark` start at most an interval apart, so a scrape that
        # started later than (n - 1) intervals after `mark` is the n-th or later.
        after = time.time() + (SCRAPES_BEFORE_REPORT - 1) * SCRAPE_INTERVAL
        last = 0.0

        async def scraped() -> bool:
            nonlocal last
            query = f'max(timestamp(up{{job="{JOB}"}}))'
            result = await asyncio.to_thread(self.stack.prometheus.query, query)
            last = float(result[0]["value"][1]) if result else 0.0
            return last > after

        await self._until(
            scraped,
            timeout=timeout,
            interval=0.2,
            failure=lambda: (
                f"Prometheus scraped the operator last at {last:.1f}, not after {after:.1f}"
            ),
        )


async def take_lease(client: Client, *, name: str, namespace: str, holder: str) -> None:
    """Make `holder` the Lease's holder from now, as another replica taking it would.

    The holder's renewals may land between the read and the write (409 Conflict):
    read again and retry, up to a bound."""
    for _ in range(20):
        lease = await client.get(LEASES, name, namespace=namespace)
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lease["spec"].update({"holderIdentity": holder, "renewTime": now, "acquireTime": now})
        try:
            await client.update(LEASES, lease)
            return
        except Conflict:
            continue
    raise DemoError(f"could not take Lease {namespace}/{name}: its holder kept renewing it")


def _now_us() -> int:
    return time.time_ns() // 1000
