"""The permissions `wukong run` needs, as RBAC rules: the source of the Helm
chart's roles, so the chart grants exactly what the code uses, and of the
permissions `wukong run` checks at start (`permissions`).

`CLUSTER_RULES` cover the objects the controllers watch and write in every
namespace they manage; `LEADER_ELECTION_RULES` are granted only in the
operator's own namespace; `METRICS_AUTH_RULES` let a secure /metrics (the
operator's and the node agent's) ask the API server about its callers
(`wukong.runtime.serving.DelegatedAuth`). Secrets are never read.

Namespaced mode (`wukong run --namespace X`, the chart's
`operator.watchNamespace`): `NAMESPACED_RULES` are granted in X only (a
RoleBinding), and the operator lists and watches nothing outside X but two
cluster-scoped reads, `namespaced_mode_cluster_rules(X)`:

- StorageClasses, read-only (`CLUSTER_READ_RULES`): a disk's class decides
  whether it can be provisioned and may expand, and StorageClasses belong to
  no namespace. Required: without them a missing class cannot be told from a
  present one, so the operator does not start.
- The Namespace X itself, by name (`resourceNames: [X]`; the manager lists
  and watches it with `fieldSelector=metadata.name=X`): its deletion cancels
  the reconciles in flight there at once. Optional: without it they end by
  their deadline, and the operator says so in one WARNING at start.
"""

from dataclasses import dataclass

from wukong.operator.api import WUKONGS
from wukong.operator.wukongset_api import WUKONGSETS
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
    resource_names: tuple[str, ...] = ()

    def as_policy_rule(self) -> dict[str, list[str]]:
        plural = self.resource.plural
        if self.subresource:
            plural = f"{plural}/{self.subresource}"
        rule = {
            "apiGroups": [self.resource.group],
            "resources": [plural],
            "verbs": list(self.verbs),
        }
        if self.resource_names:
            rule["resourceNames"] = list(self.resource_names)
        return rule


_EVENTS = Rule(EVENTS, ("create", "patch"))

# What only the WukongSet controller does: its own kind, and making and
# removing member Wukongs (it reads them through the Wukong rules' list/watch).
WUKONGSET_RULES: tuple[Rule, ...] = (
    Rule(WUKONGSETS, (*_WATCH, "patch")),  # patch: the finalizer
    Rule(WUKONGSETS, ("patch",), subresource="status"),
    Rule(WUKONGSETS, ("update",), subresource="finalizers"),  # as for Wukongs, below
    Rule(WUKONGS, ("create", "patch", "delete")),  # patch: brought to the template
)

# On objects in the namespaces the operator manages.
NAMESPACED_RULES: tuple[Rule, ...] = (
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
    *WUKONGSET_RULES,
    _EVENTS,
)

# Cluster-scoped reads needed in every mode (see above).
CLUSTER_READ_RULES: tuple[Rule, ...] = (Rule(STORAGE_CLASSES, _WATCH),)

# A deleted namespace cancels its reconciles in flight (the manager's namespace
# scopes). Optional: without it they end by their deadline.
NAMESPACE_WATCH_RULES: tuple[Rule, ...] = (Rule(NAMESPACES, ("list", "watch")),)

# Every namespace: the chart's ClusterRole (in the order of its generated file).
CLUSTER_RULES: tuple[Rule, ...] = (
    *NAMESPACED_RULES[:-1],
    *CLUSTER_READ_RULES,
    *NAMESPACE_WATCH_RULES,
    _EVENTS,
)


def _namespace_by_name(namespace: str) -> tuple[Rule, ...]:
    return tuple(
        Rule(rule.resource, rule.verbs, resource_names=(namespace,))
        for rule in NAMESPACE_WATCH_RULES
    )


def namespaced_mode_cluster_rules(namespace: str) -> tuple[Rule, ...]:
    """The only cluster-wide grants in namespaced mode: StorageClasses read-only,
    and the Namespace `namespace` itself, by name."""
    return (*CLUSTER_READ_RULES, *_namespace_by_name(namespace))


# Events on the Lease (a replica standing by says so): in the Lease's namespace,
# which in namespaced mode need not be the watched one. A single leader lists its
# group's shard Leases, so it never leads while sharded replicas work.
LEADER_ELECTION_RULES: tuple[Rule, ...] = (
    Rule(LEASES, ("get", "list", "create", "update")),
    _EVENTS,
)

# Sharded replicas (`wukong run --shards`) list their group's shard and member
# Leases, to count the replicas and see whose shards expire (granted with leader
# election as well, where a single leader looks for live shard Leases).
SHARD_RULES: tuple[Rule, ...] = (Rule(LEASES, ("list",)),)

# Who a caller's token is, and whether that user may get /metrics (kubebuilder's
# metrics-auth-role): reviews are created, never stored or read back.
METRICS_AUTH_RULES: tuple[Rule, ...] = (
    Rule(TOKEN_REVIEWS, ("create",)),
    Rule(SUBJECT_ACCESS_REVIEWS, ("create",)),
)


def policy_rules(rules: tuple[Rule, ...]) -> list[dict[str, list[str]]]:
    return [rule.as_policy_rule() for rule in rules]


@dataclass(frozen=True, kw_only=True)
class Permission:
    """One verb on one resource in one place, as a SelfSubjectAccessReview asks it."""

    verb: str
    resource: Resource
    subresource: str | None = None
    namespace: str | None = None  # None: every namespace, or a cluster-scoped kind
    name: str | None = None

    def resource_attributes(self) -> dict[str, str]:
        attributes = {
            "verb": self.verb,
            "group": self.resource.group,
            "version": self.resource.version,
            "resource": self.resource.plural,
        }
        if self.subresource:
            attributes["subresource"] = self.subresource
        if self.namespace:
            attributes["namespace"] = self.namespace
        if self.name:
            attributes["name"] = self.name
        return attributes

    @property
    def target(self) -> str:
        """E.g. `persistentvolumeclaims in shop`, `namespaces named shop`."""
        what = self.resource.plural + (f".{self.resource.group}" if self.resource.group else "")
        if self.subresource:
            what += f"/{self.subresource}"
        if self.name:
            what += f" named {self.name}"
        if self.resource.namespaced:
            what += f" in {self.namespace}" if self.namespace else " in every namespace"
        return what


def describe(permissions: list[Permission]) -> str:
    """One line, verbs grouped by target: `list, watch namespaces named shop; create
    events in shop`."""
    verbs: dict[str, list[str]] = {}
    for permission in permissions:
        verbs.setdefault(permission.target, []).append(permission.verb)
    return "; ".join(f"{', '.join(v)} {target}" for target, v in verbs.items())


def _expand(rules: tuple[Rule, ...], namespace: str | None) -> list[Permission]:
    return [
        Permission(
            verb=verb,
            resource=rule.resource,
            subresource=rule.subresource,
            namespace=namespace if rule.resource.namespaced else None,
            name=name,
        )
        for rule in rules
        for name in rule.resource_names or (None,)
        for verb in rule.verbs
    ]


def permissions(
    *, namespace: str | None, lease_namespace: str | None, metrics_auth: bool, sharded: bool = False
) -> tuple[list[Permission], list[Permission]]:
    """What `wukong run` needs, (required, optional), from the rules above.

    `namespace`: the one namespace it manages (None: every one);
    `lease_namespace`: where its Lease is (None: no leader election);
    `metrics_auth`: a secure /metrics asks the API server about its callers;
    `sharded`: active-active replicas that hold shards through Leases there.
    """
    required = _expand(NAMESPACED_RULES, namespace) + _expand(CLUSTER_READ_RULES, None)
    if lease_namespace:
        required += _expand(LEADER_ELECTION_RULES, lease_namespace)
        if sharded:
            required += _expand(SHARD_RULES, lease_namespace)
    if metrics_auth:
        required += _expand(METRICS_AUTH_RULES, None)
    optional = _expand(_namespace_by_name(namespace) if namespace else NAMESPACE_WATCH_RULES, None)
    return required, optional
