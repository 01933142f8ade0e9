"""The chart's active-active mode (operator.sharding), rendered with the real helm: every
replica gets the shard flags `wukong run` takes, the Lease Role grants what a sharded
replica's preflight asks, and with sharding off the chart renders as before."""

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.chart_tools import CHART, helm, render, values_file
from tests.deploy.test_chart_operations import _notes
from wukong.cli import build_parser
from wukong.deploy.chart import ChartError
from wukong.operator.rbac import Permission, permissions

Objects = list[dict[str, Any]]
NAMESPACE = "ops"
SHARDED = {"replicas": 3, "sharding": {"enabled": True}}


def _render(tmp_path: Path, values: dict[str, Any]) -> Objects:
    return render("--namespace", NAMESPACE, "-f", str(values_file(tmp_path, values)))


def _of_kind(objects: Objects, kind: str) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def _operator_args(objects: Objects) -> list[str]:
    (container,) = _of_kind(objects, "Deployment")["wukong"]["spec"]["template"]["spec"][
        "containers"
    ]
    args: list[str] = container["args"]
    return args


def _grants(rules: list[dict[str, Any]], permission: Permission) -> bool:
    return any(
        permission.resource.group in rule.get("apiGroups", [])
        and permission.resource.plural in rule.get("resources", [])
        and permission.verb in rule["verbs"]
        and (not rule.get("resourceNames") or permission.name in rule["resourceNames"])
        for rule in rules
    )


def _lease_permissions(*, sharded: bool) -> list[Permission]:
    """What `wukong run`'s preflight asks for in the Lease namespace."""
    required, _ = permissions(
        namespace=None, lease_namespace=NAMESPACE, metrics_auth=False, sharded=sharded
    )
    return [p for p in required if p.namespace == NAMESPACE]


def test_every_replica_runs_sharded(tmp_path: Path) -> None:
    objects = _render(tmp_path, {"operator": SHARDED})
    deployment = _of_kind(objects, "Deployment")["wukong"]
    assert deployment["spec"]["replicas"] == 3  # one pod template: every replica the same
    args = _operator_args(objects)
    assert "--shards=12" in args and "--shard-by=namespace" in args
    # The flags are ones `wukong run` takes, beside leader election, not instead of it.
    parsed = build_parser().parse_args(args)
    assert (parsed.shards, parsed.shard_by, parsed.leader_elect) == (12, "namespace", True)
    assert parsed.leader_election_namespace == NAMESPACE
    # Several replicas keep their disruption budget.
    assert "wukong" in _of_kind(objects, "PodDisruptionBudget")


def test_the_shard_count_is_a_value(tmp_path: Path) -> None:
    values = {"operator": {"replicas": 5, "sharding": {"enabled": True, "shards": 40}}}
    parsed = build_parser().parse_args(_operator_args(_render(tmp_path, values)))
    assert parsed.shards == 40


def test_the_lease_role_grants_what_a_sharded_replica_asks(tmp_path: Path) -> None:
    sharded_role = _of_kind(_render(tmp_path, {"operator": SHARDED}), "Role")
    rules = sharded_role["wukong-leader-election"]["rules"]
    asked = _lease_permissions(sharded=True)
    assert {p.verb for p in asked if p.resource.plural == "leases"} == {
        "get",
        "create",
        "update",
        "list",
    }
    assert [p for p in asked if not _grants(rules, p)] == []

    # A single leader lists the Leases too (it never leads while shard Leases are
    # live): the grant is what the code uses, with sharding on or off.
    plain_role = _of_kind(_render(tmp_path, {}), "Role")["wukong-leader-election"]
    plain = _lease_permissions(sharded=False)
    assert [p for p in plain if not _grants(plain_role["rules"], p)] == []
    assert "list" in {p.verb for p in plain if p.resource.plural == "leases"}


def test_sharding_off_changes_nothing(tmp_path: Path) -> None:
    # The webhook off: its certificate is made anew on every render.
    off = {"webhook": {"enabled": False}}
    default = _render(tmp_path, off)
    assert not [arg for arg in _operator_args(default) if arg.startswith("--shard")]
    unused = {**off, "operator": {"sharding": {"enabled": False, "shards": 7}}}
    assert _render(tmp_path, unused) == default


@pytest.mark.parametrize(
    ("operator", "message"),
    [
        (
            {"sharding": {"enabled": True}, "leaderElection": {"enabled": False}},
            "operator.sharding.enabled needs operator.leaderElection.enabled",
        ),
        ({"sharding": {"enabled": True, "shardBy": "uid"}}, "/operator/sharding/shardBy"),
        ({"sharding": {"enabled": True, "shards": 0}}, "/operator/sharding/shards"),
    ],
)
def test_sharding_values_are_checked(
    tmp_path: Path, operator: dict[str, Any], message: str
) -> None:
    with pytest.raises(ChartError) as error:
        _render(tmp_path, {"operator": operator})
    assert message in str(error.value)


def test_the_notes_say_every_replica_reconciles(tmp_path: Path) -> None:
    notes = _notes(tmp_path, {"operator": SHARDED})
    assert (
        "Deployment wukong, 3 replica(s) (all reconcile, each its share of 12 shards by " in notes
    )
    assert "one leads" not in notes
    assert "kubectl get leases -n ops -l shards.wukong.io/group=wukong-operator" in notes
    plain = _notes(tmp_path, {})
    assert "(one leads, Lease wukong-operator)" in plain and "shards" not in plain


def test_helm_lint_with_sharding(tmp_path: Path) -> None:
    values = values_file(tmp_path, {"operator": SHARDED})
    result = subprocess.run(
        [
            str(helm()),
            "lint",
            str(CHART),
            "--strict",
            "--kube-version",
            "1.36.3",
            "-f",
            str(values),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
