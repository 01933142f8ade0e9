"""The alert rules: the committed rule file is current, promtool accepts and tests it,
and every rule has a runbook and uses only metrics and labels of the contract.

promtool is required, not optional: `make test` installs it (Debian's `prometheus`
package puts it at /usr/bin/promtool), and a missing promtool fails these tests
instead of silently skipping the only check that the alerts really fire.
"""

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from wukong.dashboards import alerts, cancel_storm
from wukong.dashboards.alerts import alert_rules, render_alert_rules
from wukong.dashboards.promql import grouping_labels, metric_names
from wukong.dashboards.render import iter_panels, render_dashboards
from wukong.metrics.definitions import create_metrics

ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = ROOT / "dashboards" / "wukong-alerts.rules.yaml"
PROMTOOL_TESTS = ROOT / "tests" / "promtool" / "alerts_test.yaml"
REGENERATE = "wukong dashboards render --out dashboards"
# Labels Prometheus adds at scrape time (kubernetes SD relabelling), and histograms' `le`.
SCRAPE_LABELS = {"job", "namespace", "pod", "instance", "le"}


def _promtool() -> str:
    found = shutil.which("promtool") or (
        "/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None
    )
    if found is None:
        pytest.fail("promtool not found: run `make test` (scripts/setup.sh installs `prometheus`)")
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def _rules() -> list[dict[str, Any]]:
    return [rule for group in alert_rules()["groups"] for rule in group["rules"]]


def _contract() -> tuple[set[str], set[str]]:
    """Series names and label names of every family `create_metrics()` registers."""
    metrics = create_metrics()
    names: set[str] = set()
    labels: set[str] = set()
    for family in metrics.registry.collect():
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_count", "_sum"),
        }.get(family.type, ("",))
        names.update(family.name + suffix for suffix in suffixes)
    for attribute in vars(metrics).values():
        labels.update(getattr(attribute, "_labelnames", ()))
    labels.update({"name", "controller"})  # the scrape-time collector's queue labels
    return names, labels


def test_committed_rule_file_is_current() -> None:
    committed = RULES_FILE.read_text() if RULES_FILE.exists() else ""
    assert committed == render_alert_rules(), (
        f"{RULES_FILE.relative_to(ROOT)} is stale; regenerate it from the repository root:\n"
        f"  {REGENERATE}"
    )


def test_promtool_check_rules_accepts_the_file() -> None:
    result = _run("check", "rules", str(RULES_FILE.relative_to(ROOT)))
    assert result.returncode == 0, f"promtool check rules failed:\n{result.stdout}{result.stderr}"
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = _run("test", "rules", str(PROMTOOL_TESTS.relative_to(ROOT)))
    assert result.returncode == 0, f"promtool test rules failed:\n{result.stdout}{result.stderr}"


def test_every_alert_is_tested_firing_and_quiet_by_promtool() -> None:
    cases = yaml.safe_load(PROMTOOL_TESTS.read_text())["tests"]
    checks = [check for case in cases for check in case["alert_rule_test"]]
    for rule in _rules():
        mine = [check for check in checks if check["alertname"] == rule["alert"]]
        assert any(check["exp_alerts"] for check in mine), f"{rule['alert']} never fires"
        assert any(not check["exp_alerts"] for check in mine), f"{rule['alert']} never quiet"


def test_every_alert_has_severity_for_and_a_concrete_runbook() -> None:
    for rule in _rules():
        assert rule["for"], rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook"} <= annotations.keys(), rule["alert"]
        runbook = annotations["runbook"]
        assert "panel" in runbook, f"{rule['alert']}: runbook names no dashboard panel"
        assert "wukong.cancel.reason" in runbook, f"{rule['alert']}: no span attribute"
        assert "reason=" in runbook, f"{rule['alert']}: no log line to grep"
        assert any(name in runbook for name in _contract()[0]), f"{rule['alert']}: no metric"


def test_expressions_use_only_contract_metrics_and_labels() -> None:
    names, labels = _contract()
    for rule in _rules():
        used = metric_names(rule["expr"])
        assert used, f"{rule['alert']}: no metric found in {rule['expr']!r}"
        assert used <= names, f"{rule['alert']}: not in the metrics contract: {used - names}"
        grouping = grouping_labels(rule["expr"])
        unknown = grouping - labels - SCRAPE_LABELS
        assert not unknown, f"{rule['alert']}: unknown labels {unknown}"


def test_runbooks_send_people_to_panels_that_exist() -> None:
    board = json.loads(render_dashboards()[f"{cancel_storm.UID}.json"])
    titles = {panel["title"] for panel in iter_panels(board)}
    named = {value for name, value in vars(alerts).items() if name.startswith("PANEL_")}
    assert alerts.DASHBOARD == board["title"] == cancel_storm.TITLE
    assert "Reconcile duration (p50/p99)" in named
    assert named <= titles, f"runbooks name panels the dashboard lacks: {named - titles}"
