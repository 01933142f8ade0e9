"""Dashboards as code: the committed JSON is fresh and every panel keeps the rules.

The rules: every panel reads the `${datasource}` variable, has a unit and a
description; every query filters by the template variables, uses
`$__rate_interval` instead of a fixed range, and reads only metric families of
the contract (wukong.metrics.definitions plus the node agent's family).
"""

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from wukong.cli import main
from wukong.dashboards.alerts import ALERT_RULES_FILE, render_alert_rules
from wukong.dashboards.cancel_storm import (
    REPLICA_VARIABLE,
    SPACE_CONFLICT_PANEL,
    TENANT_RECONCILES_PANEL,
)
from wukong.dashboards.cancel_storm import UID as CANCEL_STORM_UID
from wukong.dashboards.node_cancellations import UID as NODE_CANCELLATIONS_UID
from wukong.dashboards.promql import metric_names
from wukong.dashboards.reading import (
    concrete_targets,
    iter_panels,
    panel_queries,
    variable_queries,
)
from wukong.dashboards.render import render_dashboards
from wukong.dashboards.shipped import RENDERED_DIR, shipped_dashboard
from wukong.ebpf.agent import Agent
from wukong.ebpf.discovery import Discovery
from wukong.metrics import create_metrics
from wukong.runtime import DEFAULT_RECONCILE_TIMEOUT

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "dashboards"
FIXED_RANGE = re.compile(r"\[\d+[smhd]\]")
SELECTORS = {
    CANCEL_STORM_UID: ('namespace=~"$namespace"', 'job=~"$job"'),
    NODE_CANCELLATIONS_UID: ('node=~"$node"', 'namespace=~"$namespace"', 'job=~"$job"'),
}
# Agent families without a namespace label (a lost event never reached attribution,
# an untraced process has no series of its own, an overflow is past the pods' series).
NO_NAMESPACE = {
    "wukong_node_events_lost_total",
    "wukong_node_untraced_processes_total",
    "wukong_node_series_overflow_total",
}
# Families without a `controller` label: the API client, leader election, the shards,
# the WukongSets.
PROCESS_WIDE = (
    "rest_client_",
    "leader_election_",
    "wukong_api_request_",
    "wukong_shard",
    "wukong_wukongset_",
)
VARIABLES = {
    CANCEL_STORM_UID: {
        "datasource",
        "trace_datasource",
        "namespace",
        "job",
        "controller",
        "replica",
    },
    NODE_CANCELLATIONS_UID: {"datasource", "node", "namespace", "job"},
}


def _families(registry: CollectorRegistry) -> set[str]:
    """The series names a registry's families expose (counters with `_total`)."""
    names = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    return names


# The node agent's families (docs/contract.md): the agent registers them, not create_metrics().
AGENT_FAMILIES = _families(Agent(node="n", discovery=Discovery()).registry)


def _contract_samples() -> set[str]:
    return AGENT_FAMILIES | _families(create_metrics().registry)


def _dashboards() -> dict[str, dict[str, Any]]:
    return {name: json.loads(text) for name, text in render_dashboards().items()}


# The panels each dashboard has today (19 and 6): fewer means one went missing.
MIN_PANELS = {f"{CANCEL_STORM_UID}.json": 19, f"{NODE_CANCELLATIONS_UID}.json": 6}


def _content_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in iter_panels(board) if panel.get("type") != "row"]


def test_renders_both_dashboards() -> None:
    boards = _dashboards()
    assert sorted(boards) == [f"{CANCEL_STORM_UID}.json", f"{NODE_CANCELLATIONS_UID}.json"]
    assert boards[f"{CANCEL_STORM_UID}.json"]["title"] == "Wukong / Cancel storm"
    assert boards[f"{NODE_CANCELLATIONS_UID}.json"]["title"] == "Wukong / Node cancellations"


def test_render_is_stable_and_ends_with_newline() -> None:
    first, second = render_dashboards(), render_dashboards()
    assert first == second
    for text in first.values():
        assert text.endswith("}\n")
        assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"


# The committed renders: the repository's and the copy the package ships.
@pytest.mark.parametrize("directory", [COMMITTED, RENDERED_DIR], ids=["repository", "package"])
@pytest.mark.parametrize("name", sorted(render_dashboards()))
def test_committed_json_is_fresh(directory: Path, name: str) -> None:
    committed = directory / name
    assert committed.is_file(), f"{committed} is missing; run `wukong dashboards render`"
    assert committed.read_text(encoding="utf-8") == render_dashboards()[name], (
        f"{committed} is stale; run `wukong dashboards render` and commit the result"
    )


@pytest.mark.parametrize("name", sorted(render_dashboards()))
def test_template_variables(name: str) -> None:
    board = _dashboards()[name]
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    uid = board["uid"]
    assert set(variables) == VARIABLES[uid]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    if "trace_datasource" in variables:
        assert variables["trace_datasource"]["query"] == "tempo"
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == "${datasource}"
            assert variable["query"].startswith("label_values(")
            assert variable["multi"] and variable["includeAll"]


@pytest.mark.parametrize("name", sorted(render_dashboards()))
def test_every_panel_has_datasource_unit_and_description(name: str) -> None:
    panels = _content_panels(_dashboards()[name])
    # Every panel is checked below; a dashboard that lost its panels must fail here.
    assert len(panels) >= MIN_PANELS[name], [p["title"] for p in panels]
    for panel in panels:
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{title}: no unit"
        assert panel.get("description", "").strip(), f"{title}: no description"
        assert panel["targets"], f"{title}: no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", title
            assert target["refId"], title


@pytest.mark.parametrize("name", sorted(render_dashboards()))
def test_queries_filter_by_variables_and_use_rate_interval(name: str) -> None:
    board = _dashboards()[name]
    queries = panel_queries(board)
    assert len(queries) >= MIN_PANELS[name]
    for query in queries:
        assert not FIXED_RANGE.search(query), f"hard-coded range in {query}"
        if "rate(" in query:
            assert "[$__rate_interval]" in query, query
        for selector in SELECTORS[board["uid"]]:
            if selector.startswith("namespace=") and metric_names(query) <= NO_NAMESPACE:
                continue
            assert selector in query, f"{query} does not filter by {selector}"


def test_every_agent_family_is_on_the_node_dashboard() -> None:
    board = _dashboards()[f"{NODE_CANCELLATIONS_UID}.json"]
    shown = set().union(*(metric_names(query) for query in panel_queries(board)))
    agent = Agent(node="n", discovery=Discovery()).registry.collect()
    series = {f"{f.name}_total" if f.type == "counter" else f.name for f in agent}
    assert series - shown == set(), "agent families on no panel of the node dashboard"


def test_controller_families_filter_by_controller() -> None:
    board = _dashboards()[f"{CANCEL_STORM_UID}.json"]
    for query in panel_queries(board):
        names = metric_names(query)
        if all(name.startswith(PROCESS_WIDE) for name in names):
            assert "controller=" not in query, query
        else:
            assert 'controller=~"$controller"' in query, query


@pytest.mark.parametrize("name", sorted(render_dashboards()))
def test_queries_use_only_contract_metrics(name: str) -> None:
    contract = _contract_samples()
    for query in panel_queries(_dashboards()[name]):
        names = metric_names(query)
        assert names, f"no metric in {query}"
        assert names <= contract, f"{sorted(names - contract)} not in the metric contract"


def test_latency_panels_link_exemplars_to_traces() -> None:
    board = _dashboards()[f"{CANCEL_STORM_UID}.json"]
    with_exemplars = [
        panel
        for panel in _content_panels(board)
        if any(target.get("exemplar") for target in panel["targets"])
    ]
    titles = {panel["title"] for panel in with_exemplars}
    assert {"Reconcile duration (p50/p99)", "API latency p99 by verb"} <= titles
    for panel in with_exemplars:
        links = panel["fieldConfig"]["defaults"]["links"]
        assert any("${trace_datasource}" in link["url"] for link in links), panel["title"]
        assert any("trace_id" in link["url"] for link in links), panel["title"]


def test_reconciles_by_tenant_sit_beside_the_cancellations_by_tenant() -> None:
    titles = [p["title"] for p in _content_panels(_dashboards()[f"{CANCEL_STORM_UID}.json"])]
    cancellations = titles.index("Namespaces with the most cancellations (top 5)")
    assert titles[cancellations + 1] == TENANT_RECONCILES_PANEL
    (panel,) = [
        p
        for p in _content_panels(_dashboards()[f"{CANCEL_STORM_UID}.json"])
        if p["title"] == TENANT_RECONCILES_PANEL
    ]
    (target,) = panel["targets"]
    assert target["expr"].startswith("topk(5, sum by (object_namespace) (rate(")
    assert metric_names(target["expr"]) == {"wukong_top_namespace_reconciles_total"}
    assert "noisy tenant" in panel["description"] and "wukong diagnose" in panel["description"]


def test_each_replicas_row_shows_whether_it_waits_for_another_shard_space() -> None:
    panels = _dashboards()[f"{CANCEL_STORM_UID}.json"]["panels"]
    (row,) = [i for i, p in enumerate(panels) if p.get("repeat") == REPLICA_VARIABLE]
    end = next(i for i in range(row + 1, len(panels)) if panels[i]["type"] == "row")
    (panel,) = [p for p in panels[row + 1 : end] if p["title"] == SPACE_CONFLICT_PANEL]
    (target,) = panel["targets"]
    assert metric_names(target["expr"]) == {"wukong_shard_space_conflict"}
    assert f'pod=~"${REPLICA_VARIABLE}"' in target["expr"]
    defaults = panel["fieldConfig"]["defaults"]
    assert (defaults["min"], defaults["max"]) == (0, 1)


def test_reconcile_duration_shows_the_deadline() -> None:
    board = _dashboards()[f"{CANCEL_STORM_UID}.json"]
    (panel,) = [p for p in _content_panels(board) if p["title"].startswith("Reconcile duration")]
    defaults = panel["fieldConfig"]["defaults"]
    # The deadline is defined once (runtime.DEFAULT_RECONCILE_TIMEOUT); the panel reads it.
    deadline = DEFAULT_RECONCILE_TIMEOUT
    assert [step["value"] for step in defaults["thresholds"]["steps"]] == [None, deadline]
    assert defaults["custom"]["thresholdsStyle"]["mode"] == "dashed"
    assert f"default reconcile deadline ({deadline:g} s)" in panel["description"]


def test_panel_queries_reads_nested_rows() -> None:
    board = {
        "panels": [
            {"type": "row", "panels": [{"targets": [{"expr": "a"}, {"expr": ""}]}]},
            {"targets": [{"expr": "b"}]},
        ]
    }
    assert panel_queries(board) == ["a", "b"]


def test_concrete_targets_set_every_variable_or_name_the_one_left() -> None:
    # `$1`, a label_replace group, is not a variable.
    expr = 'sum(rate(x{job=~"$job", pod=~"${pod}"}[$__rate_interval])) + label_replace(y, "$1")'
    board = {"panels": [{"title": "X", "targets": [{"expr": expr, "legendFormat": "{{pod}}"}]}]}
    variables = {"job": "j", "pod": ".*", "__rate_interval": "1m"}
    (target,) = concrete_targets(board, variables)
    assert (target.title, target.legend) == ("X", "{{pod}}")
    assert target.expr == ('sum(rate(x{job=~"j", pod=~".*"}[1m])) + label_replace(y, "$1")')
    with pytest.raises(ValueError, match=r"panel 'X': no value for \$\{pod\}"):
        concrete_targets(board, {"job": "j", "__rate_interval": "1m"})


def test_variable_queries_in_order() -> None:
    board = _dashboards()["wukong-node-cancellations.json"]
    queries = variable_queries(board)
    assert list(queries) == ["job", "node", "namespace"]
    assert queries["job"] == "label_values(wukong_node_cancellations_total, job)"


def test_cli_render_writes_files_and_prints_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, package = tmp_path / "out", tmp_path / "package"
    argv = ["dashboards", "render", "--out", str(out), "--package-copy", str(package)]
    assert main(argv) == 0
    printed = capsys.readouterr().out.split()
    dashboards = render_dashboards()
    expected = {**dashboards, ALERT_RULES_FILE: render_alert_rules()}
    assert printed == [str(out / name) for name in expected] + [
        str(package / name) for name in dashboards
    ]
    for name, text in expected.items():
        assert (out / name).read_text(encoding="utf-8") == text
    assert sorted(path.name for path in package.iterdir()) == sorted(dashboards)
    for name, text in dashboards.items():
        assert (package / name).read_text(encoding="utf-8") == text


def test_the_package_reads_its_shipped_dashboards() -> None:
    for name, text in render_dashboards().items():
        assert shipped_dashboard(name) == json.loads(text)


@pytest.mark.parametrize("blocked", ["--out", "--package-copy"])
def test_cli_render_reports_unwritable_out(
    blocked: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    dirs = {"--out": str(tmp_path / "out"), "--package-copy": str(tmp_path / "package")}
    dirs[blocked] = str(blocker)
    assert main(["dashboards", "render", *(arg for pair in dirs.items() for arg in pair)]) == 1
    said = capsys.readouterr().err
    assert said.startswith(f"wukong: error: cannot write dashboards to {blocker}")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["dashboards", "--help"], "render"),
        (["dashboards", "render", "--help"], "--out"),
    ],
)
def test_cli_help(argv: list[str], says: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wukong.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert says in result.stdout
