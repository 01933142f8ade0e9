"""Networks: reuse an existing NetworkAttachmentDefinition or create one.

A network with `nadName` uses that NetworkAttachmentDefinition, which must
exist in the Wukong's namespace and is never modified or deleted. A network
with `config` gets `<wukong>-<network>`, created with the Wukong as its
controller owner, and kept equal to the network's `config`: an edit of the
config reaches the NetworkAttachmentDefinition (pods attached before keep the
old one until they restart, as with Multus itself). A NetworkAttachmentDefinition
of that name that the Wukong does not control is a `NameConflict`, never
taken over. A `nadName` naming a NetworkAttachmentDefinition that another
Wukong created is refused (admission denies it; the controller reports
`NetworkOwnedByWukong`): that one goes when its Wukong is deleted.
"""

from typing import Any

from wukong.operator.api import WUKONGS
from wukong.operator.names import child_name
from wukong.operator.owned import create_once, name_conflict, optimistic_lock, owned_object
from wukong.operator.steps import Problem, StepResult
from wukong.runtime import Invalid, Object, ReconcileContext, Store, is_controlled_by
from wukong.runtime.apis import NETWORK_ATTACHMENT_DEFINITIONS


def created_nad_name(wukong: Object, network: dict[str, Any]) -> str:
    return child_name(wukong["metadata"]["name"], network["name"])


def wukong_controller(obj: Object) -> str | None:
    """The name of the Wukong that controls `obj`, if a Wukong does."""
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == WUKONGS.kind:
            if str(ref.get("apiVersion", "")).split("/")[0] == WUKONGS.group:
                return str(ref.get("name"))
    return None


async def ensure_networks(ctx: ReconcileContext, wukong: Object, *, nads: Store) -> StepResult:
    result = StepResult()
    namespace = wukong["metadata"]["namespace"]
    for network in wukong["spec"].get("networks") or []:
        if "nadName" in network:  # the schema allows exactly one of nadName and config
            name = network["nadName"]
            reused = nads.get_by_name(namespace, name)
            if reused is None:
                result.problem = result.problem or Problem(
                    "NetworkNotFound",
                    f"network {network['name']}: NetworkAttachmentDefinition "
                    f"{namespace}/{name} does not exist",
                )
            elif (owner := wukong_controller(reused)) is not None:
                result.problem = result.problem or Problem(
                    "NetworkOwnedByWukong",
                    f"network {network['name']}: NetworkAttachmentDefinition {name} was created "
                    f"by Wukong {owner} and goes when it is deleted; give this Wukong its own "
                    "config, or reuse a NetworkAttachmentDefinition no Wukong created",
                )
            result.statuses.append({"name": network["name"], "nadName": name, "created": False})
            continue
        name = created_nad_name(wukong, network)
        result.statuses.append({"name": network["name"], "nadName": name, "created": True})
        problem = None
        existing = nads.get_by_name(namespace, name)
        if existing is not None and not is_controlled_by(existing, wukong):
            problem = name_conflict(
                f"network {network['name']}", NETWORK_ATTACHMENT_DEFINITIONS, existing
            )
        if problem is None and existing is None:
            problem = await _create(ctx, wukong, network, name, result)
        elif problem is None and existing is not None:
            problem = await _update(ctx, existing, network, result)
        result.problem = result.problem or problem
    return result


async def _create(
    ctx: ReconcileContext,
    wukong: Object,
    network: dict[str, Any],
    name: str,
    result: StepResult,
) -> Problem | None:
    body = owned_object(
        wukong, NETWORK_ATTACHMENT_DEFINITIONS, name, spec={"config": network["config"]}
    )
    try:
        if not await create_once(ctx, NETWORK_ATTACHMENT_DEFINITIONS, body):
            return None
    except Invalid as exc:
        return Problem("InvalidNetworkConfig", f"network {network['name']}: {exc.message}")
    result.changes.append(("Created", f"Created NetworkAttachmentDefinition {name}"))
    return None


async def _update(
    ctx: ReconcileContext, existing: Object, network: dict[str, Any], result: StepResult
) -> Problem | None:
    if (existing.get("spec") or {}).get("config") == network["config"]:
        return None
    metadata = existing["metadata"]
    patch = {**optimistic_lock(existing), "spec": {"config": network["config"]}}
    try:
        await ctx.client.patch(
            NETWORK_ATTACHMENT_DEFINITIONS, metadata["name"], patch, namespace=metadata["namespace"]
        )
    except Invalid as exc:
        return Problem("InvalidNetworkConfig", f"network {network['name']}: {exc.message}")
    result.changes.append(("Updated", f"Updated NetworkAttachmentDefinition {metadata['name']}"))
    return None
