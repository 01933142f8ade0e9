"""Namespaced mode under the chart's namespaced RBAC, and nothing more.

The chart is rendered with `operator.watchNamespace` set to the test's
namespace and its RBAC applied for real (cluster-scoped names made unique per
test); the operator authenticates with a token of the chart's ServiceAccount.
What it may list and watch is then exactly what the chart grants: the
operator's rules in the watched namespace (a RoleBinding), StorageClasses, and
that one Namespace by name. A call outside that grant would be answered 403;
none is.
"""

import asyncio
import copy
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest

from tests.deploy.chart_tools import render, values_file
from tests.exposition import metric_samples
from tests.integration.helpers import RecordingObserver, running
from tests.integration.test_chart_on_cluster import (
    _dump,
    _kubectl,
    _release_namespace,
    _token_kubeconfig,
)
from tests.integration.wukong_harness import StartWukong, WukongRun
from tests.polling import eventually
from wukong.devcluster import ControlPlane
from wukong.devcluster.processes import free_port
from wukong.operator.rbac import namespaced_mode_cluster_rules, policy_rules
from wukong.runtime import (
    CancelReason,
    Client,
    Controller,
    LeaderElectionConfig,
    Manager,
    ManagerOptions,
    ReconcileContext,
    Request,
    Result,
)
from wukong.runtime.observe import Step
from wukong.runtime.resources import CONFIGMAPS, NAMESPACES

Objects = list[dict[str, Any]]
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
SPEC = {"disks": [{"name": "root", "size": "1Gi"}]}


def _is_running(obj: dict[str, Any]) -> bool:
    return (obj.get("status") or {}).get("phase") == "Running"


@dataclass
class NamespacedRbac:
    release: str  # where the ServiceAccount and its Lease are
    objects: Objects  # the chart's RBAC objects, as applied
    kubeconfig: Path  # authenticates as the chart's operator ServiceAccount


def _unique_cluster_names(objects: Objects, suffix: str) -> Objects:
    """Cluster-scoped RBAC names made unique, so tests never share (or break) a grant."""
    objects = copy.deepcopy(objects)
    for obj in objects:
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            obj["metadata"]["name"] += suffix
        if obj.get("roleRef", {}).get("kind") == "ClusterRole":
            obj["roleRef"]["name"] += suffix
    return objects


def _rules_of(objects: Objects, kind: str, name_suffix: str) -> list[dict[str, Any]]:
    (role,) = [
        o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)
    ]
    return list(role["rules"])


@pytest.fixture
async def namespaced_rbac(
    control_plane: ControlPlane, client: Client, namespace: str, kubectl: Path, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    """Applies the chart's RBAC for `operator.watchNamespace=<namespace>`, after
    `edit(objects)` when given; deleted again at the end."""
    applied: list[str] = []

    async def apply(edit: Callable[[Objects], None] | None = None) -> NamespacedRbac:
        release = await _release_namespace(client)
        values = values_file(tmp_path, {"operator": {"watchNamespace": namespace}})
        rendered = render("--namespace", release, "-f", str(values))
        objects = _unique_cluster_names(
            [o for o in rendered if o["kind"] in RBAC_KINDS], f"-{uuid.uuid4().hex[:6]}"
        )
        if edit is not None:
            edit(objects)
        manifest = _dump(objects)
        await asyncio.to_thread(
            _kubectl, kubectl, control_plane, "apply", "-f", "-", stdin=manifest
        )
        applied.append(manifest)
        account = "wukong"  # the operator's (the release is named wukong)
        token = await asyncio.to_thread(
            _kubectl,
            kubectl,
            control_plane,
            "create",
            "token",
            account,
            "-n",
            release,
            "--duration=1h",
        )
        path = tmp_path / f"{release}.kubeconfig"
        return NamespacedRbac(
            release, objects, _token_kubeconfig(control_plane, token.strip(), path)
        )

    yield apply
    for manifest in applied:
        await _delete(kubectl, control_plane, manifest)


async def _delete(kubectl: Path, control_plane: ControlPlane, manifest: str) -> None:
    await asyncio.to_thread(
        _kubectl, kubectl, control_plane, "delete", "--ignore-not-found", "-f", "-", stdin=manifest
    )


def test_the_charts_namespaced_grants_are_the_codes(tmp_path: Path) -> None:
    values = values_file(tmp_path, {"operator": {"watchNamespace": "shop"}})
    objects = [o for o in render("--namespace", "wukong-system", "-f", str(values))]
    operator_account = {"kind": "ServiceAccount", "name": "wukong", "namespace": "wukong-system"}
    bindings = [
        o
        for o in objects
        if o["kind"] in ("RoleBinding", "ClusterRoleBinding") and operator_account in o["subjects"]
    ]
    cluster_wide = {o["roleRef"]["name"] for o in bindings if o["kind"] == "ClusterRoleBinding"}
    # The operator's own rules are bound in the watched namespace only (and its
    # Lease's in the release namespace).
    (in_shop,) = [o for o in bindings if o["metadata"].get("namespace") == "shop"]
    assert in_shop["kind"] == "RoleBinding" and in_shop["roleRef"]["name"] == "wukong"
    assert {o["metadata"].get("namespace") for o in bindings if o["kind"] == "RoleBinding"} == {
        "shop",
        "wukong-system",
    }
    # Cluster-wide: the two reads rbac.py names, and /metrics' reviews (create only).
    assert cluster_wide == {"wukong-cluster-reads", "wukong-metrics-auth"}
    assert _rules_of(objects, "ClusterRole", "-cluster-reads") == policy_rules(
        namespaced_mode_cluster_rules("shop")
    )
    for rule in _rules_of(objects, "ClusterRole", "-metrics-auth"):
        assert rule["verbs"] == ["create"]
    # The webhook reviews the watched namespace's Wukongs only: elsewhere the operator
    # could read no reference (and another release may watch that namespace).
    (webhooks,) = [o for o in objects if o["kind"] == "ValidatingWebhookConfiguration"]
    assert [w.get("namespaceSelector") for w in webhooks["webhooks"]] == [
        {"matchLabels": {"kubernetes.io/metadata.name": "shop"}}
    ]


async def test_the_manager_lists_and_watches_only_in_its_namespace(
    namespace: str, start_wukong: StartWukong, namespaced_rbac: Callable[..., Any]
) -> None:
    rbac: NamespacedRbac = await namespaced_rbac()
    async with await Client.from_kubeconfig(rbac.kubeconfig) as as_operator:
        election = LeaderElectionConfig(name="wukong-operator", namespace=rbac.release)
        run: WukongRun = await start_wukong(operator_client=as_operator, leader_election=election)
        await run.create("web", SPEC)
        await run.wait_for("web", _is_running, what="web Running")
        await run.stop_operator()
    reads = [c for c in run.calls if c.verb in ("list", "watch")]
    # Besides its namespace, it reads only cluster-wide StorageClasses and its own
    # Namespace, and lists the Leases of its election's namespace (a single leader
    # looks for live shard Leases of its group before it reconciles).
    outside = {
        (c.verb, c.resource, c.namespace)
        for c in reads
        if c.namespace != namespace
        and c.resource not in ("storageclasses", "namespaces")
        and (c.verb, c.resource, c.namespace) != ("list", "leases", rbac.release)
    }
    assert not outside, f"listed or watched outside {namespace}: {sorted(outside)}"
    # The Namespace watch is by name (RBAC grants no other) and was not refused.
    assert {c.resource for c in reads} >= {"namespaces", "storageclasses", "wukongs"}
    refused = [(c.verb, c.path) for c in run.calls if c.status_code in (401, 403)]
    assert not refused, refused


def _wukong_run(
    kubeconfig: Path, namespace: str, release: str, log: IO[str], *flags: str
) -> "subprocess.Popen[bytes]":
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wukong.cli",
            "--log-format=json",
            "--log-level=debug",
            "run",
            f"--kubeconfig={kubeconfig}",
            f"--namespace={namespace}",
            f"--leader-election-namespace={release}",
            "--webhook-bind=0",
            *flags,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _drop_namespace_by_name(objects: Objects) -> None:
    for obj in objects:
        if obj["kind"] == "ClusterRole" and "-cluster-reads" in obj["metadata"]["name"]:
            obj["rules"] = [r for r in obj["rules"] if r.get("resources") != ["namespaces"]]


@pytest.mark.parametrize("namespace_by_name", [True, False], ids=["full", "no-namespace-read"])
async def test_wukong_run_in_namespaced_mode_reconciles_under_the_charts_rbac(
    namespace: str,
    start_wukong: StartWukong,
    namespaced_rbac: Callable[..., Any],
    tmp_path: Path,
    namespace_by_name: bool,
) -> None:
    rbac: NamespacedRbac = await namespaced_rbac(
        None if namespace_by_name else _drop_namespace_by_name
    )
    run = await start_wukong()  # the simulator; its in-process operator is stopped
    await run.stop_operator()
    metrics_port, health_port = free_port(), free_port()
    log = (tmp_path / "operator.log").open("w+")
    process = _wukong_run(
        rbac.kubeconfig,
        namespace,
        rbac.release,
        log,
        f"--metrics-bind=127.0.0.1:{metrics_port}",
        "--no-metrics-secure",
        f"--health-bind=127.0.0.1:{health_port}",
    )
    try:
        await run.create("web", SPEC)
        await run.wait_for("web", _is_running, what="web Running under `wukong run`", timeout=60)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response,
        ):
            text = await response.text()
    finally:
        process.terminate()
        code = await asyncio.to_thread(process.wait, 30)
    log.seek(0)
    lines = [json.loads(line) for line in log if line.startswith("{")]
    assert code == 0, lines[-5:]
    # Every call the operator made was permitted: none outside the grant.
    codes = {labels["code"] for labels, _ in metric_samples(text, "rest_client_requests_total")}
    assert codes and not codes & {"401", "403"}, codes
    assert not [line for line in lines if line["level"] == "ERROR"]
    warnings = [line["message"] for line in lines if line["level"] == "WARNING"]
    if namespace_by_name:
        assert not warnings
    else:  # degraded, with one line saying what and why
        (warning,) = [w for w in warnings if "may not" in w]
        assert f"list, watch namespaces named {namespace}" in warning
        assert "deleted namespace" in warning


async def test_wukong_run_names_the_missing_permission_in_one_line(
    namespace: str, infrastructure: None, namespaced_rbac: Callable[..., Any], tmp_path: Path
) -> None:
    def drop_claim_watch(objects: Objects) -> None:
        # The operator's rules, bound in the watched namespace.
        (rule,) = [
            rule
            for o in objects
            if o["kind"] == "ClusterRole"
            for rule in o["rules"]
            if rule.get("resources") == ["persistentvolumeclaims"]
        ]
        rule["verbs"].remove("watch")

    rbac: NamespacedRbac = await namespaced_rbac(drop_claim_watch)
    result = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "wukong.cli",
            "run",
            f"--kubeconfig={rbac.kubeconfig}",
            f"--namespace={namespace}",
            f"--leader-election-namespace={rbac.release}",
            "--webhook-bind=0",
            "--metrics-bind=0",
            "--health-bind=0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    (error,) = [line for line in result.stderr.splitlines() if "error" in line]
    assert error == (
        f"wukong: error: the operator's identity may not: watch persistentvolumeclaims in "
        f"{namespace} (install the chart's RBAC, see deploy/)"
    )


async def test_a_namespaced_manager_sees_its_namespace_deleted_through_a_grant_by_name(
    control_plane: ControlPlane, client: Client, kubectl: Path, tmp_path: Path
) -> None:
    # Granted: ConfigMaps in the namespace, and that Namespace by name; nothing else.
    doomed = f"test-{uuid.uuid4().hex[:10]}"
    await client.create(NAMESPACES, {"metadata": {"name": doomed}})
    grants: Objects = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "op", "namespace": doomed},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "op", "namespace": doomed},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list", "watch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "op", "namespace": doomed},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "op"},
            "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": doomed}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": doomed},
            "rules": [
                rule.as_policy_rule()
                for rule in namespaced_mode_cluster_rules(doomed)
                if rule.resource == NAMESPACES
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": doomed},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": doomed,
            },
            "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": doomed}],
        },
    ]
    manifest = _dump(grants)
    await asyncio.to_thread(_kubectl, kubectl, control_plane, "apply", "-f", "-", stdin=manifest)
    try:
        token = await asyncio.to_thread(
            _kubectl, kubectl, control_plane, "create", "token", "op", "-n", doomed
        )
        kubeconfig = _token_kubeconfig(control_plane, token.strip(), tmp_path / "op.kubeconfig")
        await client.create(CONFIGMAPS, {"metadata": {"name": "held"}}, namespace=doomed)
        release = asyncio.Event()

        class Hold:
            async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
                await release.wait()
                return Result()

        recorder = RecordingObserver()
        async with await Client.from_kubeconfig(kubeconfig) as as_op:
            manager = Manager(
                client=as_op,
                observers=[recorder],
                options=ManagerOptions(namespace=doomed, block_warning_seconds=None),
            )
            manager.add(Controller(name="held", reconciler=Hold(), primary=CONFIGMAPS))
            async with running(manager):
                await eventually(
                    lambda: any(c.in_flight() for c in manager.controllers), what="a reconcile"
                )
                await client.delete(NAMESPACES, doomed)
                await eventually(
                    lambda: (
                        [e.reason for e in recorder.steps(Step.CANCEL_REQUESTED)]
                        == [CancelReason.DELETED]
                    ),
                    what="the reconcile cancelled by the namespace's deletion",
                )
                release.set()
        refused = [(c.verb, c.path) for c in recorder.calls if c.status_code in (401, 403)]
        assert not refused, refused
        assert {(c.verb, c.resource, c.namespace) for c in recorder.calls} >= {
            ("watch", "namespaces", None),
            ("watch", "configmaps", doomed),
        }
    finally:
        await _delete(kubectl, control_plane, _dump(grants[3:]))
