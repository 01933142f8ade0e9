"""Every write verb of the client against the real API server, and its time bound."""

from pathlib import Path

import pytest

from tests.integration.helpers import install_test_crd
from wukong.devcluster import ControlPlane
from wukong.devcluster.kubeconfig import kubeconfig_via
from wukong.devcluster.latency_proxy import LatencyProxy
from wukong.runtime import ApiTimeout, Client, Conflict, Invalid
from wukong.runtime._client import JSON_PATCH
from wukong.runtime.resources import CONFIGMAPS, NAMESPACES

GROUP = "verbs.test.novasphere.dev"


async def test_update_patch_apply_and_conflict(client: Client, namespace: str) -> None:
    created = await client.create(
        CONFIGMAPS, {"metadata": {"name": "cm", "namespace": namespace}, "data": {"a": "1"}}
    )
    created["data"]["a"] = "2"
    updated = await client.update(CONFIGMAPS, created)
    assert updated["data"] == {"a": "2"}
    with pytest.raises(Conflict):
        await client.update(CONFIGMAPS, created)  # stale resourceVersion

    merged = await client.patch(CONFIGMAPS, "cm", {"data": {"b": "3"}}, namespace=namespace)
    assert merged["data"] == {"a": "2", "b": "3"}
    patched = await client.patch(
        CONFIGMAPS,
        "cm",
        [{"op": "remove", "path": "/data/a"}],
        namespace=namespace,
        patch_type=JSON_PATCH,
    )
    assert patched["data"] == {"b": "3"}

    applied = await client.apply(
        CONFIGMAPS,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "applied", "namespace": namespace},
            "data": {"x": "y"},
        },
        field_manager="wukong-test",
    )
    managers = [m["manager"] for m in applied["metadata"]["managedFields"]]
    assert managers == ["wukong-test"]


async def test_status_subresource_and_invalid(client: Client, namespace: str) -> None:
    widgets = await install_test_crd(client, group=GROUP, kind="Widget", status_subresource=True)
    body = {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": namespace},
        "spec": {"size": 2},
    }
    created = await client.create(widgets, body)
    patched = await client.patch_status(
        widgets, "w", {"status": {"phase": "Running"}}, namespace=namespace
    )
    assert patched["status"] == {"phase": "Running"}
    assert patched["metadata"]["generation"] == created["metadata"]["generation"]
    with pytest.raises(Invalid):
        await client.create(
            widgets,
            {**body, "metadata": {"name": "bad", "namespace": namespace}, "spec": {"size": 0}},
        )


async def test_call_bounded_by_its_timeout_raises_api_timeout(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    proxy = LatencyProxy(target_host="127.0.0.1", target_port=control_plane.config.apiserver_port)
    await proxy.start()
    try:
        kubeconfig = kubeconfig_via(
            control_plane.kubeconfig,
            tmp_path / "kc",  # type: ignore[operator]
            port=proxy.port,
        )
        async with await Client.from_kubeconfig(kubeconfig) as slow:
            await slow.get(NAMESPACES, namespace, timeout=10)  # fast while no delay
            proxy.delay = 30
            with pytest.raises(ApiTimeout):
                await slow.list(CONFIGMAPS, namespace=namespace, timeout=0.5)
    finally:
        await proxy.close()
