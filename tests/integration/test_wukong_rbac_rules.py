"""The RBAC rules in wukong.operator.rbac are exactly what the controller uses.

A Wukong's whole life (create, run, resize, delete) is driven through a client
that records every API call; each (resource, verb) used must be granted, and
every granted verb must have been used, except the few listed below with why.
"""

from tests.integration.test_wukong_controller import FULL_SPEC, _create_shared_nad
from tests.integration.wukong_harness import StartWukong
from wukong.devcluster import ControlPlane
from wukong.operator.api import WUKONGS
from wukong.operator.rbac import (
    CLUSTER_RULES,
    LEADER_ELECTION_RULES,
    METRICS_AUTH_RULES,
    WUKONGSET_RULES,
    Rule,
    permissions,
)
from wukong.runtime import Client
from wukong.runtime.apis import VIRTUAL_MACHINES
from wukong.runtime.observe import ApiCall

# Granted but not exercised by this scenario, and why they are still needed.
GRANTED_UNUSED = {
    # ownerReferences with blockOwnerDeletion, under OwnerReferencesPermissionEnforcement.
    ("wukongs/finalizers", "update"),
    # get comes with list/watch for reads outside the informers (kubectl-like tools,
    # the finalizer's live reads, made only for a dependent its cache never showed).
    ("wukongs", "get"),
    ("network-attachment-definitions", "get"),
    ("persistentvolumeclaims", "get"),
    ("datavolumes", "get"),
    ("virtualmachines", "get"),
    ("virtualmachineinstances", "get"),
    ("virtualmachineinstancemigrations", "get"),
    ("storageclasses", "get"),
    # Only when a network's config is edited (test_wukong_watches.py).
    ("network-attachment-definitions", "patch"),
    # Repeats of an identical event are counted by patching it.
    ("events", "patch"),
    # The informers' initial lists stream over a watch (sendInitialEvents) here;
    # a cluster that refuses that (its WatchList gate off) gets paged lists.
    ("namespaces", "list"),
    ("storageclasses", "list"),
    ("virtualmachineinstancemigrations", "list"),
    ("virtualmachineinstances", "list"),
    ("virtualmachines", "list"),
    ("wukongs", "list"),
    # The finalizer lists these only for a dependent its cache never showed.
    ("datavolumes", "list"),
    ("network-attachment-definitions", "list"),
    ("persistentvolumeclaims", "list"),
}


def _granted(rules: tuple[Rule, ...] = CLUSTER_RULES) -> set[tuple[str, str]]:
    granted = set()
    for rule in rules:
        plural = rule.resource.plural + (f"/{rule.subresource}" if rule.subresource else "")
        granted |= {(plural, verb) for verb in rule.verbs}
    return granted


def _used(calls: list[ApiCall]) -> set[tuple[str, str]]:
    used = set()
    for call in calls:
        plural = call.resource + ("/status" if call.path.endswith("/status") else "")
        used.add((plural, call.verb))
    return used


async def test_rules_grant_exactly_what_the_controller_uses(
    control_plane: ControlPlane, start_wukong: StartWukong
) -> None:
    async with await Client.from_kubeconfig(control_plane.kubeconfig) as api:
        run = await start_wukong(operator_client=api)
        await _create_shared_nad(run)
        await run.create("web", FULL_SPEC)
        await run.wait_for(
            "web", lambda obj: (obj.get("status") or {}).get("phase") == "Running", what="Running"
        )
        disks = [dict(disk) for disk in FULL_SPEC["disks"]]  # type: ignore[union-attr]
        disks[0]["size"] = "5Gi"  # expands a claim
        change = {"spec": {"cpu": 4, "disks": disks}}  # cpu: patches the VM
        await run.client.patch(WUKONGS, "web", change, namespace=run.namespace)

        async def vm_updated() -> bool:
            vm = await run.client.get(VIRTUAL_MACHINES, "web", namespace=run.namespace)
            return bool(vm["spec"]["template"]["spec"]["domain"]["cpu"] == {"cores": 4})

        await run.wait_until(vm_updated, what="the VM to get 4 cores")
        await run.client.delete(WUKONGS, "web", namespace=run.namespace)
        await run.wait_gone("web")
        await run.stop_operator()

    # The WukongSet controller's own rules are checked by test_wukongset.py.
    wukong_rules = tuple(rule for rule in CLUSTER_RULES if rule not in WUKONGSET_RULES)
    used, granted = _used(run.calls), _granted(wukong_rules)
    assert used <= granted, f"used but not granted: {sorted(used - granted)}"
    # A live read is made only when a cache has not shown an object yet: this scenario
    # may or may not make one, so a listed verb may be used; every other must be.
    assert granted - used <= GRANTED_UNUSED, f"granted, never used: {sorted(granted - used)}"
    assert GRANTED_UNUSED <= granted, f"listed, not granted: {sorted(GRANTED_UNUSED - granted)}"


def test_the_start_checks_ask_for_every_granted_verb() -> None:
    for namespace in (None, "shop"):
        required, optional = permissions(
            namespace=namespace, lease_namespace="wukong-system", metrics_auth=True
        )
        asked = {
            (p.resource.plural + (f"/{p.subresource}" if p.subresource else ""), p.verb)
            for p in required + optional
        }
        everything = CLUSTER_RULES + LEADER_ELECTION_RULES + METRICS_AUTH_RULES
        assert asked == _granted(everything)
        # Only the Namespace watch is optional; in namespaced mode, by name.
        assert {(p.resource.plural, p.name) for p in optional} == {("namespaces", namespace)}
        # Namespaced kinds are asked where the operator works (one namespace, or all
        # of them), the Lease and its Events where it lives.
        where = {(p.resource.plural, p.namespace) for p in required if p.resource.namespaced}
        lease_side = {("leases", "wukong-system"), ("events", "wukong-system")}
        assert lease_side <= where
        assert {ns for _, ns in where - lease_side} == {namespace}
