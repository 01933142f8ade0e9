"""The Wukong CRD, generated from the API types, enforced by the real API server."""

import asyncio
import subprocess
from pathlib import Path

import pytest

from wukong.devcluster import ControlPlane
from wukong.devcluster.crds import install_crds
from wukong.operator.api import WUKONGS
from wukong.operator.crd import wukong_crd
from wukong.runtime import Client, Invalid, Object


@pytest.fixture
async def installed(client: Client) -> None:
    await install_crds(client, [wukong_crd()])  # shared by the session's tests


def _wukong(namespace: str, name: str, spec: Object) -> Object:
    return {
        "apiVersion": WUKONGS.api_version,
        "kind": "Wukong",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


async def test_defaults_and_printer_columns(
    control_plane: ControlPlane, client: Client, namespace: str, installed: None, kubectl: Path
) -> None:
    created = await client.create(WUKONGS, _wukong(namespace, "vm", {}))
    assert created["spec"] == {"cpu": 1, "memory": "1Gi", "running": True}
    await client.patch_status(
        WUKONGS,
        "vm",
        {
            "status": {
                "phase": "Running",
                "nodeName": "node-1",
                "conditions": [{"type": "Ready", "status": "True"}],
            }
        },
        namespace=namespace,
    )
    command = [
        str(kubectl),
        f"--kubeconfig={control_plane.kubeconfig}",
        "-n",
        namespace,
        "get",
        "wk",
    ]
    listed = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, check=True
    )
    table = listed.stdout.split()
    assert table[:5] == ["NAME", "PHASE", "NODE", "READY", "AGE"]
    assert table[5:9] == ["vm", "Running", "node-1", "True"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"memory": "lots"}, "memory must be a quantity"),
        ({"disks": [{"name": "root", "size": "0"}]}, "size must be greater than zero"),
        (
            {"disks": [{"name": "root", "size": "1Gi"}, {"name": "root", "size": "2Gi"}]},
            "Duplicate value",
        ),
        (
            {"networks": [{"name": "net", "nadName": "a", "config": "{}"}]},
            "set exactly one of nadName (reuse) and config (create)",
        ),
        ({"networks": [{"name": "Bad_Name", "nadName": "a"}]}, "should match"),
        ({"cpu": 0}, "should be greater than or equal to 1"),
    ],
)
async def test_invalid_specs_are_rejected_at_admission(
    client: Client, namespace: str, installed: None, spec: Object, message: str
) -> None:
    with pytest.raises(Invalid) as error:
        await client.create(WUKONGS, _wukong(namespace, "bad", spec))
    assert message in error.value.message


async def test_disks_only_grow_and_keep_their_class(
    client: Client, namespace: str, installed: None
) -> None:
    spec = {"disks": [{"name": "root", "size": "10Gi", "storageClassName": "fast"}]}
    await client.create(WUKONGS, _wukong(namespace, "grow", spec))
    grown = {"spec": {"disks": [{"name": "root", "size": "20Gi", "storageClassName": "fast"}]}}
    await client.patch(WUKONGS, "grow", grown, namespace=namespace)
    with pytest.raises(Invalid, match="disk size can only grow"):
        shrunk = {"spec": {"disks": [{"name": "root", "size": "5Gi", "storageClassName": "fast"}]}}
        await client.patch(WUKONGS, "grow", shrunk, namespace=namespace)
    with pytest.raises(Invalid, match="storageClassName is immutable"):
        moved = {"spec": {"disks": [{"name": "root", "size": "20Gi", "storageClassName": "slow"}]}}
        await client.patch(WUKONGS, "grow", moved, namespace=namespace)
