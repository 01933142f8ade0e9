"""Status that tells the truth: from the first reconcile to a lost node."""

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.integration.wukong_harness import StartWukong, WatchRecorder, condition
from tests.polling import eventually
from wukong.devcluster.simulator import SimulationConfig
from wukong.operator.api import WUKONGS
from wukong.runtime import ApiError, Client, Object
from wukong.runtime.resources import NODES, PERSISTENT_VOLUME_CLAIMS, Resource

POLICIES = Resource(
    group="admissionregistration.k8s.io",
    version="v1",
    plural="validatingadmissionpolicies",
    kind="ValidatingAdmissionPolicy",
    namespaced=False,
)
BINDINGS = Resource(
    group="admissionregistration.k8s.io",
    version="v1",
    plural="validatingadmissionpolicybindings",
    kind="ValidatingAdmissionPolicyBinding",
    namespaced=False,
)


def _phase(obj: Object) -> str | None:
    return (obj.get("status") or {}).get("phase")


async def test_the_first_reconcile_writes_pending_and_unknown_conditions_before_any_child(
    start_wukong: StartWukong,
) -> None:
    run = await start_wukong()
    async with (
        WatchRecorder(run.client, WUKONGS, run.namespace) as wukongs,
        WatchRecorder(run.client, PERSISTENT_VOLUME_CLAIMS, run.namespace) as claims,
    ):
        await run.create("fresh", {"disks": [{"name": "root", "size": "1Gi"}]})
        await run.wait_for("fresh", lambda o: _phase(o) == "Running", what="Running")

    first = next(o for o in wukongs.versions("fresh") if o.get("status"))
    assert first["status"]["phase"] == "Pending"
    assert first["status"]["observedGeneration"] == 1
    assert sorted((c["type"], c["status"]) for c in first["status"]["conditions"]) == [
        ("NetworksConfigured", "Unknown"),
        ("Ready", "Unknown"),
        ("VolumesBound", "Unknown"),
    ]
    created = [o for kind, o in claims.events if kind == "ADDED"]
    assert [o["metadata"]["name"] for o in created] == ["fresh-root"]
    # etcd revisions order every write in the cluster: the status came first.
    assert int(created[0]["metadata"]["resourceVersion"]) > int(
        first["metadata"]["resourceVersion"]
    )


async def test_a_vmi_going_unknown_is_an_error_and_recovers(
    start_wukong: StartWukong,
) -> None:
    node = f"node-{uuid.uuid4().hex[:8]}"
    run = await start_wukong(simulation=SimulationConfig(node_name=node))
    await run.client.create(NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
    try:
        await run.create("far", {"disks": [{"name": "root", "size": "1Gi"}]})
        await run.wait_for("far", lambda o: _phase(o) == "Running", what="Running")

        # The node stops reporting: its Ready condition becomes Unknown.
        unreachable = {"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}
        await run.client.patch_status(NODES, node, unreachable)
        lost = await run.wait_for("far", lambda o: _phase(o) == "Error", what="Error")
        ready = condition(lost, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "VirtualMachineUnknown")
        assert node in ready["message"] and "NodeUnreachable" in ready["message"]
        assert lost["status"]["nodeName"] == node
        assert await run.warnings("far") == ["VirtualMachineUnknown"]

        reachable = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
        await run.client.patch_status(NODES, node, reachable)
        back = await run.wait_for("far", lambda o: _phase(o) == "Running", what="Running again")
        assert condition(back, "Ready")["status"] == "True"
    finally:
        await run.client.delete(NODES, node)


async def test_node_and_addresses_are_cleared_when_the_vmi_goes(start_wukong: StartWukong) -> None:
    run = await start_wukong()
    await run.create("gone", {"disks": [{"name": "root", "size": "1Gi"}]})
    running = await run.wait_for("gone", lambda o: _phase(o) == "Running", what="Running")
    assert running["status"]["nodeName"] == "sim-node-1"
    assert len(running["status"]["ipAddresses"]) == 1

    await run.client.patch(WUKONGS, "gone", {"spec": {"running": False}}, namespace=run.namespace)
    # Stopped may show first while the instance shuts down (it still runs on its
    # node); once the instance is gone, node and addresses go with it.
    await run.wait_for(
        "gone",
        lambda o: (
            condition(o, "Ready").get("reason") == "Stopped"
            and "nodeName" not in o["status"]
            and "ipAddresses" not in o["status"]
        ),
        what="Stopped, with node and addresses cleared",
    )


@pytest.fixture
async def claims_refused(
    client: Client, namespace: str
) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """A ValidatingAdmissionPolicy that makes the real API server refuse new claims here.

    Yields the function that lifts the refusal.
    """
    name = f"refuse-claims-{namespace}"
    policy = {
        "apiVersion": POLICIES.api_version,
        "kind": POLICIES.kind,
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["persistentvolumeclaims"],
                    }
                ]
            },
            "validations": [
                {"expression": "false", "message": "claims are refused", "reason": "Forbidden"}
            ],
        },
    }
    binding = {
        "apiVersion": BINDINGS.api_version,
        "kind": BINDINGS.kind,
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    await client.create(POLICIES, policy)
    await client.create(BINDINGS, binding)
    probe = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }

    async def refused() -> bool:
        # Policies load asynchronously: wait until the server really refuses.
        name = f"probe-{uuid.uuid4().hex[:6]}"
        body = {**probe, "metadata": {"name": name, "namespace": namespace}}
        try:
            await client.create(PERSISTENT_VOLUME_CLAIMS, body)
        except ApiError as exc:
            return exc.status == 403
        await client.delete(PERSISTENT_VOLUME_CLAIMS, name, namespace=namespace)
        return False

    await eventually(refused, timeout=30, interval=0.2, what="the policy to refuse claims")
    lifted = False

    async def lift() -> None:
        nonlocal lifted
        if not lifted:
            lifted = True
            await client.delete(BINDINGS, name)
            await client.delete(POLICIES, name)

    yield lift
    await lift()


async def test_an_api_failure_shows_in_ready_instead_of_a_stale_phase(
    start_wukong: StartWukong, claims_refused: Callable[[], Awaitable[None]]
) -> None:
    run = await start_wukong()
    await run.create("refused", {"disks": [{"name": "root", "size": "1Gi"}]})
    failing = await run.wait_for(
        "refused",
        lambda o: condition(o, "Ready").get("reason") == "ReconcileError",
        what="Ready to report ReconcileError",
    )
    assert failing["status"]["phase"] == "Error"
    message = condition(failing, "Ready")["message"]
    assert "403" in message and "claims are refused" in message, message

    await claims_refused()
    recovered = await run.wait_for("refused", lambda o: _phase(o) == "Running", what="Running")
    assert condition(recovered, "Ready")["reason"] == "Running"
