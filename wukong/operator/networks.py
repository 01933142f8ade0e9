"""Networks: reuse an existing NetworkAttachmentDefinition or create one.

A network with `nadName` uses that NetworkAttachmentDefinition, which must
exist in the Wukong's namespace and is never modified or deleted. A network
with `config` gets `<wukong>-<network>`, created with the Wukong as its
controller owner, and kept equal to the network's `config`: an edit of the
config reaches the NetworkAttachmentDefinition (pods attached before keep the
old one until they restart, as with Multus itself). A NetworkAttachmentDefinition
of that name that someone else owns is reported, not taken over.
"""

from typing import Any

from wukong.operator.owned import create_once, owned_object
from wukong.operator.steps import Problem, StepResult
from wukong.runtime import Invalid, Object, ReconcileContext, Store, is_controlled_by
from wukong.runtime.apis import NETWORK_ATTACHMENT_DEFINITIONS


def created_nad_name(wukong: Object, network: dict[str, Any]) -> str:
    return f"{wukong['metadata']['name']}-{network['name']}"


async def ensure_networks(ctx: ReconcileContext, wukong: Object, *, nads: Store) -> StepResult:
    result = StepResult()
    namespace = wukong["metadata"]["namespace"]
    for network in wukong["spec"].get("networks") or []:
        if network.get("nadName"):
            name = network["nadName"]
            if nads.get_by_name(namespace, name) is None:
                result.problem = result.problem or Problem(
                    "NetworkNotFound",
                    f"network {network['name']}: NetworkAttachmentDefinition "
                    f"{namespace}/{name} does not exist",
                )
            result.statuses.append({"name": network["name"], "nadName": name, "created": False})
            continue
        name = created_nad_name(wukong, network)
        result.statuses.append({"name": network["name"], "nadName": name, "created": True})
        problem = None
        existing = nads.get_by_name(namespace, name)
        if existing is not None and not is_controlled_by(existing, wukong):
            problem = Problem(
                "NetworkConflict",
                f"network {network['name']}: NetworkAttachmentDefinition {name} exists and "
                "belongs to someone else; rename the network or reuse it with nadName",
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
    patch = {"spec": {"config": network["config"]}}
    try:
        await ctx.client.patch(
            NETWORK_ATTACHMENT_DEFINITIONS, metadata["name"], patch, namespace=metadata["namespace"]
        )
    except Invalid as exc:
        return Problem("InvalidNetworkConfig", f"network {network['name']}: {exc.message}")
    result.changes.append(("Updated", f"Updated NetworkAttachmentDefinition {metadata['name']}"))
    return None
