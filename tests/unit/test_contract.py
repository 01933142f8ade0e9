"""The telemetry contract: the checker catches each breach, the product and its doc keep it."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from tests.contract import (
    AGENT_CANCEL_REASONS,
    AGENT_FAMILIES,
    CANCEL_REASONS,
    OPERATOR_FAMILIES,
    RECONCILE_SPAN_ATTRIBUTES,
    check_exposition,
)
from wukong.ebpf.agent import Agent
from wukong.ebpf.discovery import Discovery
from wukong.metrics.definitions import create_metrics
from wukong.runtime import CancelReason

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs/contract.md"

# A small exposition on contract, as a Go operator or Wukong serves it.
ON_CONTRACT = """\
# TYPE wukong_reconcile_cancellations_total counter
wukong_reconcile_cancellations_total{controller="c",reason="deadline_exceeded"} 2.0
# TYPE workqueue_depth gauge
workqueue_depth{controller="c",name="c",priority=""} 0.0
workqueue_depth{controller="c",name="c",priority="10"} 1.0
# TYPE wukong_requeue_delay_seconds histogram
wukong_requeue_delay_seconds_bucket{controller="c",le="+Inf"} 1.0
wukong_requeue_delay_seconds_count{controller="c"} 1.0
wukong_requeue_delay_seconds_sum{controller="c"} 0.5
"""


def _operator_exposition() -> str:
    return generate_latest(create_metrics().registry).decode()


def _problems(text: str) -> list[str]:
    """Problems other than the families this small exposition leaves out."""
    return [p for p in check_exposition(text) if not p.startswith("missing: ")]


def test_the_operator_and_agent_registries_meet_the_contract() -> None:
    assert check_exposition(_operator_exposition()) == []
    agent = Agent(node="n", discovery=Discovery())
    assert check_exposition(generate_latest(agent.registry).decode(), agent=True) == []


def test_each_family_is_stated_once() -> None:
    names = [family.name for family in OPERATOR_FAMILIES + AGENT_FAMILIES]
    assert len(names) == len(set(names))


def test_the_product_cancel_reasons_are_the_contract() -> None:
    assert {str(reason) for reason in CancelReason} == CANCEL_REASONS


def test_a_small_exposition_on_contract_has_no_problem() -> None:
    assert _problems(ON_CONTRACT) == []
    missing = check_exposition(ON_CONTRACT)
    assert "missing: controller_runtime_reconcile_total (counter)" in missing
    assert len(missing) == len(OPERATOR_FAMILIES) - 3


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            ("# TYPE workqueue_depth gauge", "# TYPE workqueue_depth counter"),
            "workqueue_depth: type counter, the contract says gauge",
        ),
        (
            ('reason="deadline_exceeded"', 'reason="timeout"'),
            "wukong_reconcile_cancellations_total: reasons outside the contract: ['timeout']",
        ),
        (
            ('{controller="c",reason', "{reason"),
            "wukong_reconcile_cancellations_total: labels ['reason'], "
            "the contract says ['controller', 'reason']",
        ),
        (
            ('priority="10"', 'shard="10"'),
            "workqueue_depth: labels ['controller', 'name', 'shard'], "
            "the contract says ['controller', 'name', 'priority']",
        ),
        (
            ("# TYPE wukong_requeue_delay_seconds histogram", "# TYPE wukong_requeue_delay gauge"),
            "missing: wukong_requeue_delay_seconds (histogram)",
        ),
    ],
)
def test_each_breach_is_named(change: tuple[str, str], problem: str) -> None:
    broken = ON_CONTRACT.replace(*change)
    assert broken != ON_CONTRACT
    assert problem in check_exposition(broken)


def test_the_node_agent_may_report_a_cancel_without_cause() -> None:
    line = (
        'wukong_node_cancellations_total{container="",namespace="",node="n",pod="",'
        'reason="canceled",runtime="go"} 1.0'
    )
    text = f"# TYPE wukong_node_cancellations_total counter\n{line}\n"
    assert check_exposition(text, agent=True, require_samples=True) == [
        f"missing: {family.name} ({family.type})" for family in AGENT_FAMILIES[1:]
    ]
    operator = text.replace("wukong_node_", "wukong_api_request_")
    assert any(
        "reasons outside the contract: ['canceled']" in p for p in check_exposition(operator)
    )


def test_require_samples_names_the_empty_families() -> None:
    problems = check_exposition(_operator_exposition(), require_samples=True)
    assert "wukong_reconcile_cancellations_total: no samples" in problems


def test_the_command_line_exits_1_on_a_breach(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.prom", tmp_path / "bad.prom"
    good.write_text(_operator_exposition())
    bad.write_text(_operator_exposition().replace("counter", "gauge"))

    def run(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tests.contract", str(path)],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=False,
        )

    assert run(good).returncode == 0
    failed = run(bad)
    assert failed.returncode == 1
    assert "wukong_reconcile_cancellations_total: type gauge" in failed.stdout


def test_the_doc_states_the_contract_the_checker_holds() -> None:
    doc = DOC.read_text()
    names = set(re.findall(r"`([a-z0-9_.]+)`", doc))
    for family in OPERATOR_FAMILIES + AGENT_FAMILIES:
        assert family.name in names, family.name
        row = next(line for line in doc.splitlines() if line.startswith(f"| `{family.name}`"))
        assert family.type in row, row
        for label in family.labels:
            assert f"`{label}`" in row, (family.name, label)
    assert AGENT_CANCEL_REASONS <= names
    assert RECONCILE_SPAN_ATTRIBUTES <= names
