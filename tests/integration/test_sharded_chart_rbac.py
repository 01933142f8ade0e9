"""The chart's RBAC with sharding on, proven by use: `wukong run --shards` authenticated
as the chart's ServiceAccount passes its start-up check (real SelfSubjectAccessReviews)
and takes every shard; so it does under the RBAC of a release without sharding, whose
leader election lists the Leases too (a rollout turning sharding on or off runs under
either)."""

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.chart_tools import render, values_file
from tests.integration.test_chart_on_cluster import (
    _dump,
    _kubectl,
    _release_namespace,
    _token_kubeconfig,
)
from tests.integration.test_shards import _shard_holders
from tests.polling import eventually
from wukong.devcluster import ControlPlane
from wukong.devcluster.apis import install_dev_apis
from wukong.runtime import Client

SHARDS = 4
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


async def _operator_kubeconfig(
    plane: ControlPlane, client: Client, kubectl: Path, tmp_path: Path, *, sharding: bool
) -> tuple[str, Path]:
    """A release namespace with the chart's RBAC applied, and a kubeconfig of its
    ServiceAccount's token."""
    release = await _release_namespace(client)
    values = {"operator": {"replicas": 3, "sharding": {"enabled": sharding}}}
    objects = [
        obj
        for obj in render("--namespace", release, "-f", str(values_file(tmp_path, values)))
        if obj["kind"] in RBAC_KINDS
    ]
    await asyncio.to_thread(_kubectl, kubectl, plane, "apply", "-f", "-", stdin=_dump(objects))
    account = next(obj for obj in objects if obj["kind"] == "ServiceAccount")["metadata"]["name"]
    token = await asyncio.to_thread(
        _kubectl, kubectl, plane, "create", "token", account, "-n", release, "--duration=1h"
    )
    path = tmp_path / f"{release}.kubeconfig"
    return release, _token_kubeconfig(plane, token.strip(), path)


def _sharded_run(kubeconfig: Path, release: str, log: Path) -> "subprocess.Popen[bytes]":
    with log.open("w") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "wukong.cli",
                "run",
                f"--kubeconfig={kubeconfig}",
                f"--leader-election-namespace={release}",
                f"--shards={SHARDS}",
                "--shard-by=namespace",
                "--metrics-bind=0",
                "--health-bind=0",
                "--webhook-bind=0",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.parametrize("sharding", [True, False], ids=["sharding-rbac", "leader-rbac-only"])
async def test_a_sharded_replica_runs_under_the_charts_rbac(
    control_plane: ControlPlane, client: Client, kubectl: Path, tmp_path: Path, sharding: bool
) -> None:
    """Listing the group's Leases comes with leader election (a single leader looks
    for live shard Leases before it leads), so the chart's sharding Role adds nothing
    a sharded replica lacks without it."""
    await install_dev_apis(client)
    release, kubeconfig = await _operator_kubeconfig(
        control_plane, client, kubectl, tmp_path, sharding=sharding
    )
    process = _sharded_run(kubeconfig, release, tmp_path / "sharded.log")
    try:

        async def holds_every_shard() -> bool:
            assert process.poll() is None, (tmp_path / "sharded.log").read_text()[-2000:]
            return len(await _shard_holders(client, release)) == SHARDS

        await eventually(holds_every_shard, what="the replica holding every shard", timeout=60)
    finally:
        process.terminate()
        code = await asyncio.to_thread(process.wait, 30)
    assert code == 0, (tmp_path / "sharded.log").read_text()[-2000:]
