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

from wukong.operator.api import WUKONGS, NetworkSpec, NetworkStatus
from wukong.operator.names import child_name
from wukong.operator.owned import create_once, name_conflict, optimistic_lock, owned_object
from wukong.operator.steps import Problem, StepResult
from wukong.operator.views import WukongView
from wukong.runtime import Invalid, Object, ReconcileContext, Store, is_controlled_by
from wukong.runtime.apis import NETWORK_ATTACHMENT_DEFINITIONS


def created_nad_name(wukong: WukongView, network: NetworkSpec) -> str:
    return child_name(wukong.name, network.name)


def wukong_controller(obj: Object) -> dict[str, Any] | None:
    """The controller reference of `obj` when a Wukong controls it (name, uid)."""
    for ref in obj["metadata"].get("ownerReferences") or []:
        if not ref.get("controller"):
            continue
        group = str(ref.get("apiVersion", "")).partition("/")[0]
        return dict(ref) if (group, ref.get("kind")) == (WUKONGS.group, WUKONGS.kind) else None
    return None


async def ensure_networks(
    ctx: ReconcileContext, wukong: WukongView, *, nads: Store
) -> StepResult[NetworkStatus]:
    return StepResult.combine(
        [await _ensure_network(ctx, wukong, network, nads) for network in wukong.spec.networks]
    )


async def _ensure_network(
    ctx: ReconcileContext, wukong: WukongView, network: NetworkSpec, nads: Store
) -> StepResult[NetworkStatus]:
    if network.nad_name is not None:  # the schema allows exactly one of nadName and config
        name = network.nad_name
        statuses = [NetworkStatus(name=network.name, nad_name=name, created=False)]
        reused = nads.get_by_name(wukong.namespace, name)
        if reused is None:
            return StepResult(
                statuses,
                Problem(
                    "NetworkNotFound",
                    f"network {network.name}: NetworkAttachmentDefinition "
                    f"{wukong.namespace}/{name} does not exist",
                ),
            )
        owner = wukong_controller(reused)
        if owner is not None and owner.get("uid") != wukong.uid:
            return StepResult(
                statuses,
                Problem(
                    "NetworkOwnedByWukong",
                    f"network {network.name}: NetworkAttachmentDefinition {name} was created "
                    f"by Wukong {owner.get('name')} and goes when it is deleted; give this "
                    "Wukong its own config, or reuse a NetworkAttachmentDefinition no "
                    "Wukong created",
                ),
            )
        return StepResult(statuses)
    name = created_nad_name(wukong, network)
    statuses = [NetworkStatus(name=network.name, nad_name=name, created=True)]
    existing = nads.get_by_name(wukong.namespace, name)
    if existing is None:
        outcome = await _create(ctx, wukong, network, name)
    elif not is_controlled_by(existing, wukong.body):
        outcome = StepResult(
            problem=name_conflict(
                f"network {network.name}", NETWORK_ATTACHMENT_DEFINITIONS, existing
            )
        )
    else:
        outcome = await _update(ctx, existing, network)
    return StepResult.combine([StepResult(statuses), outcome])


async def _create(
    ctx: ReconcileContext, wukong: WukongView, network: NetworkSpec, name: str
) -> StepResult[NetworkStatus]:
    body = owned_object(
        wukong, NETWORK_ATTACHMENT_DEFINITIONS, name, spec={"config": network.config}
    )
    try:
        if not await create_once(ctx, NETWORK_ATTACHMENT_DEFINITIONS, body):
            return StepResult()
    except Invalid as exc:
        return StepResult(
            problem=Problem("InvalidNetworkConfig", f"network {network.name}: {exc.message}")
        )
    return StepResult(changes=[("Created", f"Created NetworkAttachmentDefinition {name}")])


async def _update(
    ctx: ReconcileContext, existing: Object, network: NetworkSpec
) -> StepResult[NetworkStatus]:
    if (existing.get("spec") or {}).get("config") == network.config:
        return StepResult()
    metadata = existing["metadata"]
    patch = {**optimistic_lock(existing), "spec": {"config": network.config}}
    try:
        await ctx.client.patch(
            NETWORK_ATTACHMENT_DEFINITIONS, metadata["name"], patch, namespace=metadata["namespace"]
        )
    except Invalid as exc:
        return StepResult(
            problem=Problem("InvalidNetworkConfig", f"network {network.name}: {exc.message}")
        )
    updated = f"Updated NetworkAttachmentDefinition {metadata['name']}"
    return StepResult(changes=[("Updated", updated)])
