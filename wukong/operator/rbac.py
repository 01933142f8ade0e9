"""The permissions `wukong run` needs, as RBAC rules: the source of the Helm
chart's ClusterRole and Role, so the chart grants exactly what the code uses.

`CLUSTER_RULES` cover the objects the controllers watch and write in every
namespace they manage; `LEADER_ELECTION_RULES` are granted only in the
operator's own namespace; `METRICS_AUTH_RULES` let a secure /metrics (the
operator's and the node agent's) ask the API server about its callers
(`wukong.runtime.serving.DelegatedAuth`). Secrets are never read.
"""

from dataclasses import dataclass

from wukong.operator.api import WUKONGS
from wukong.runtime.apis import (
    DATA_VOLUMES,
    NETWORK_ATTACHMENT_DEFINITIONS,
    VIRTUAL_MACHINE_INSTANCE_MIGRATIONS,
    VIRTUAL_MACHINE_INSTANCES,
    VIRTUAL_MACHINES,
)
from wukong.runtime.resources import (
    EVENTS,
    LEASES,
    NAMESPACES,
    PERSISTENT_VOLUME_CLAIMS,
    STORAGE_CLASSES,
    SUBJECT_ACCESS_REVIEWS,
    TOKEN_REVIEWS,
    Resource,
)

# get comes with list/watch: the finalizer reads live, kubectl-style tools read too.
_WATCH = ("get", "list", "watch")


@dataclass(frozen=True)
class Rule:
    resource: Resource
    verbs: tuple[str, ...]
    subresource: str | None = None

    def as_policy_rule(self) -> dict[str, list[str]]:
        plural = self.resource.plural
        if self.subresource:
            plural = f"{plural}/{self.subresource}"
        return {
            "apiGroups": [self.resource.group],
            "resources": [plural],
            "verbs": list(self.verbs),
        }


CLUSTER_RULES: tuple[Rule, ...] = (
    Rule(WUKONGS, (*_WATCH, "patch")),  # patch: the finalizer
    Rule(WUKONGS, ("patch",), subresource="status"),
    # Owner references with blockOwnerDeletion need update on the owner's
    # finalizers where OwnerReferencesPermissionEnforcement admission is on.
    Rule(WUKONGS, ("update",), subresource="finalizers"),
    # patch: a network's edited config reaches the NetworkAttachmentDefinition we own.
    Rule(NETWORK_ATTACHMENT_DEFINITIONS, (*_WATCH, "create", "patch", "delete")),
    Rule(PERSISTENT_VOLUME_CLAIMS, (*_WATCH, "create", "patch", "delete")),  # patch: expansion
    Rule(DATA_VOLUMES, (*_WATCH, "create", "delete")),
    Rule(VIRTUAL_MACHINES, (*_WATCH, "create", "patch", "delete")),
    Rule(VIRTUAL_MACHINE_INSTANCES, _WATCH),
    Rule(VIRTUAL_MACHINE_INSTANCE_MIGRATIONS, _WATCH),  # phase Migrating
    Rule(STORAGE_CLASSES, _WATCH),
    # A deleted namespace cancels its reconciles in flight (the manager's namespace scopes).
    Rule(NAMESPACES, ("list", "watch")),
    Rule(EVENTS, ("create", "patch")),
)

LEADER_ELECTION_RULES: tuple[Rule, ...] = (Rule(LEASES, ("get", "create", "update")),)

# Who a caller's token is, and whether that user may get /metrics (kubebuilder's
# metrics-auth-role): reviews are created, never stored or read back.
METRICS_AUTH_RULES: tuple[Rule, ...] = (
    Rule(TOKEN_REVIEWS, ("create",)),
    Rule(SUBJECT_ACCESS_REVIEWS, ("create",)),
)


def policy_rules(rules: tuple[Rule, ...]) -> list[dict[str, list[str]]]:
    return [rule.as_policy_rule() for rule in rules]
