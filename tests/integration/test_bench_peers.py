"""The benchmark's peers still work: each reconciles a handful of objects, same protocol.

Not a benchmark (no timing is asserted): it keeps `make bench` from breaking
unnoticed, building the controller-runtime peer the way the benchmark does.
"""

import sys
import uuid
from pathlib import Path

import pytest

from wukong.devcluster import ControlPlane
from wukong.runtime import Client
from wukong.runtime.resources import NAMESPACES

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from compare_peers import PEERS, create_objects, make_peer  # noqa: E402


@pytest.mark.parametrize("peer_name", PEERS)
async def test_peer_reconciles_every_object(
    control_plane: ControlPlane, client: Client, tmp_path: Path, peer_name: str
) -> None:
    namespace = f"peer-{uuid.uuid4().hex[:8]}"
    await client.create(NAMESPACES, {"metadata": {"name": namespace}})
    peer = make_peer(
        peer_name, kubeconfig=control_plane.kubeconfig, namespace=namespace, work_dir=tmp_path
    )
    await peer.start()
    try:
        assert peer.rss_bytes() > 0
        sent = await create_objects(client, namespace, 20)
        await peer.wait_first(set(sent), timeout=60)
    finally:
        await peer.stop()
    assert set(peer.first) == set(sent)
    assert all(peer.first[name] >= sent[name] for name in sent)
