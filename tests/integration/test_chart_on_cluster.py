"""The chart against the real API server: server-side dry runs, and RBAC proven by use.

RBAC is not assumed: the chart's ServiceAccount, ClusterRole and Role are
applied for real, a token for that ServiceAccount comes from the TokenRequest
API (`kubectl create token`), and the Wukong controller runs on a client that
authenticates with it: a Wukong's whole life works, with leader election in
the release namespace, while Secrets, other kinds and other namespaces' Leases
are forbidden.
"""

import asyncio
import subprocess
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.chart_tools import EVERYTHING_ON, monitoring_crds, render, values_file
from tests.integration.test_wukong_controller import FULL_SPEC, _create_shared_nad
from tests.integration.wukong_harness import StartWukong
from wukong.devcluster import ControlPlane
from wukong.operator.api import WUKONGS
from wukong.runtime import ApiError, Client, LeaderElectionConfig
from wukong.runtime.resources import CONFIGMAPS, LEASES, NAMESPACES, SECRETS


def _kubectl(kubectl: Path, plane: ControlPlane, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [str(kubectl), f"--kubeconfig={plane.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


def _dump(objects: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(objects)


async def _release_namespace(client: Client) -> str:
    name = f"wukong-system-{uuid.uuid4().hex[:6]}"
    await client.create(NAMESPACES, {"metadata": {"name": name}})
    return name


async def test_server_side_dry_run_of_defaults_and_everything_on(
    control_plane: ControlPlane,
    client: Client,
    infrastructure: None,
    tmp_path: Path,
    kubectl: Path,
) -> None:
    for crd in monitoring_crds():
        await asyncio.to_thread(
            _kubectl, kubectl, control_plane, "apply", "--server-side", "-f", str(crd)
        )
    for plural in ("servicemonitors", "podmonitors", "prometheusrules"):
        await asyncio.to_thread(
            _kubectl,
            kubectl,
            control_plane,
            "wait",
            "--for=condition=Established",
            f"crd/{plural}.monitoring.coreos.com",
        )
    namespace = await _release_namespace(client)
    for values in ({}, EVERYTHING_ON):
        # Without `helm test`'s pod: its ServiceAccount is not stored by a dry run, and
        # the API server refuses a pod whose account does not exist (tests/node runs it).
        objects = render(
            "--namespace",
            namespace,
            "--include-crds",
            "--skip-tests",
            "-f",
            str(values_file(tmp_path, values)),
        )
        out = await asyncio.to_thread(
            _kubectl,
            kubectl,
            control_plane,
            "apply",
            "--dry-run=server",
            "-f",
            "-",
            stdin=_dump(objects),
        )
        assert out.count("(server dry run)") == len(objects), out


def _token_kubeconfig(plane: ControlPlane, token: str, path: Path) -> Path:
    admin = yaml.safe_load(plane.kubeconfig.read_text())
    admin["users"] = [{"name": "chart-sa", "user": {"token": token}}]
    for context in admin["contexts"]:
        context["context"]["user"] = "chart-sa"
    path.write_text(yaml.safe_dump(admin))
    return path


async def _forbidden(call: Any) -> bool:
    try:
        await call
    except ApiError as exc:
        return exc.status == 403
    return False


async def test_the_operator_works_under_the_charts_rbac_and_nothing_more(
    control_plane: ControlPlane,
    client: Client,
    namespace: str,
    start_wukong: StartWukong,
    tmp_path: Path,
    kubectl: Path,
) -> None:
    release = await _release_namespace(client)
    rbac_kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    objects = [obj for obj in render("--namespace", release) if obj["kind"] in rbac_kinds]
    await asyncio.to_thread(
        _kubectl, kubectl, control_plane, "apply", "-f", "-", stdin=_dump(objects)
    )
    account = next(obj for obj in objects if obj["kind"] == "ServiceAccount")["metadata"]["name"]
    token = (
        await asyncio.to_thread(
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
    ).strip()
    kubeconfig = _token_kubeconfig(control_plane, token, tmp_path / "sa.kubeconfig")

    async with await Client.from_kubeconfig(kubeconfig) as as_operator:
        election = LeaderElectionConfig(
            name="wukong-operator",
            namespace=release,
            lease_duration=4,
            renew_deadline=3,
            retry_period=0.5,
        )
        run = await start_wukong(operator_client=as_operator, leader_election=election)
        await _create_shared_nad(run)
        await run.create("web", FULL_SPEC)
        await run.wait_for(
            "web", lambda obj: (obj.get("status") or {}).get("phase") == "Running", what="Running"
        )
        await run.client.delete(WUKONGS, "web", namespace=run.namespace)
        await run.wait_gone("web")
        lease = await as_operator.get(LEASES, "wukong-operator", namespace=release)
        assert lease["spec"]["holderIdentity"]

        assert await _forbidden(as_operator.list(SECRETS, namespace=namespace))
        assert await _forbidden(as_operator.get(SECRETS, "anything", namespace=release))
        assert await _forbidden(
            as_operator.create(CONFIGMAPS, {"metadata": {"name": "x", "namespace": namespace}})
        )
        assert await _forbidden(as_operator.list(LEASES, namespace=namespace))
        other_lease = {"metadata": {"name": "intrude", "namespace": namespace}, "spec": {}}
        assert await _forbidden(as_operator.create(LEASES, other_lease))
        await run.stop_operator()
