"""The Wukong validating webhook: reject what would only fail later in a condition.

The CRD's schema and CEL rules check a Wukong on its own; this checks it
against the cluster, at admission, so `kubectl apply` answers at once:

- a field whose value cannot be read (a size that is no quantity, a list that
  is no list: the API server checks the schema first, but a review may come
  from elsewhere): `Invalid`;
- `spec.networks[i].nadName` names no NetworkAttachmentDefinition in the
  Wukong's namespace: `NetworkAttachmentDefinitionNotFound`;
- `spec.networks[i].nadName` names one that another Wukong created from its
  `config` (its controller ownerReference is that Wukong):
  `NetworkAttachmentDefinitionOfAnotherWukong`. That one is deleted with the
  Wukong that made it, which would leave this one's VM without its network;
  reuse is for NetworkAttachmentDefinitions a person (or another tool) made;
- `spec.disks[i].storageClassName` names no StorageClass: `StorageClassNotFound`;
- `spec.disks[i].size` grows on a class without `allowVolumeExpansion`:
  `ExpansionNotSupported`.

Each message starts with the field. Only what a request changes is checked
(an update that leaves a network alone is not rejected because its
NetworkAttachmentDefinition went away since), and a Wukong being deleted is
always admitted, so its finalizer can be removed. A review of anything other
than a Wukong, or of a CREATE or UPDATE without an object, is malformed (HTTP
400).

Reads come from the operator's cache. A name the cache does not have (yet: a
NetworkAttachmentDefinition created just before the Wukong, or a cache still
syncing) is looked up live, through `request.client`, which is bounded by the
AdmissionReview's own deadline. If that call cannot answer in time (or fails),
the webhook has not decided: it answers `Errored` (`allowed: false`, code 500)
naming the fields it could not check, and the write fails with that message
(to be retried), unless the operator runs with `--webhook-admit-on-error`
(`AdmitOnError`): then the Wukong is admitted with that warning
(`Unverified`) and the controller reports any problem in its conditions, as it
does with the webhook off.
"""

import base64
from typing import Any

from wukong.operator.api import WUKONGS, DiskSpec, WukongSpec
from wukong.operator.names import child_name
from wukong.operator.networks import wukong_controller
from wukong.operator.schema import from_json
from wukong.operator.storage import is_default_class
from wukong.operator.validation import invalid_value, is_object_name
from wukong.runtime import (
    Admission,
    AdmissionRequest,
    AdmitOnError,
    ApiError,
    ApiTimeout,
    Manager,
    NotFound,
    Object,
    Store,
    parse_quantity,
)
from wukong.runtime.apis import NETWORK_ATTACHMENT_DEFINITIONS
from wukong.runtime.resources import PERSISTENT_VOLUME_CLAIMS, STORAGE_CLASSES, Resource

# kubebuilder's path convention: /validate-<group with dashes>-<version>-<kind>.
WEBHOOK_PATH = "/validate-vm-novasphere-dev-v1alpha1-wukong"
WEBHOOK_NAME = "vwukong.vm.novasphere.dev"


def webhook_configuration(
    name: str,
    *,
    url: str | None = None,
    service: dict[str, Any] | None = None,
    ca_bundle: bytes,
    failure_policy: str = "Ignore",
    timeout_seconds: int = 10,
    namespace_selector: dict[str, Any] | None = None,
) -> Object:
    """A ValidatingWebhookConfiguration for the Wukong webhook, by `url` (`wukong dev up`,
    tests) or by `service` (the chart's template says the same in YAML)."""
    client_config: dict[str, Any] = {"caBundle": base64.b64encode(ca_bundle).decode()}
    if url is not None:
        client_config["url"] = url + WEBHOOK_PATH
    else:
        client_config["service"] = {**(service or {}), "path": WEBHOOK_PATH}
    webhook: dict[str, Any] = {
        "name": WEBHOOK_NAME,
        "clientConfig": client_config,
        "rules": [
            {
                "apiGroups": [WUKONGS.group],
                "apiVersions": [WUKONGS.version],
                "operations": ["CREATE", "UPDATE"],
                "resources": [WUKONGS.plural],
                "scope": "Namespaced",
            }
        ],
        "failurePolicy": failure_policy,
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": timeout_seconds,
    }
    if namespace_selector is not None:
        webhook["namespaceSelector"] = namespace_selector
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [webhook],
    }


class _Unknown:
    """A lookup that could not be answered in time."""

    def __init__(self, why: str) -> None:
        self.why = why


class WukongAdmission:
    """Validates Wukongs against the cache (NetworkAttachmentDefinitions, StorageClasses,
    claims)."""

    def __init__(
        self,
        *,
        network_attachment_definitions: Store,
        storage_classes: Store,
        claims: Store,
    ) -> None:
        self._nads = network_attachment_definitions
        self._classes = storage_classes
        self._claims = claims

    async def validate(self, request: AdmissionRequest) -> Admission:
        if (request.group, request.kind) != (WUKONGS.group, WUKONGS.kind):
            return Admission.malformed(
                f"request.kind: this webhook reviews {WUKONGS.kind}.{WUKONGS.group}, "
                f"not {request.kind!r} of group {request.group!r}"
            )
        if request.operation not in ("CREATE", "UPDATE"):
            return Admission.allow()
        wukong = request.object
        if wukong is None:
            return Admission.malformed(f"request.object: missing for {request.operation}")
        if (wukong.get("metadata") or {}).get("deletionTimestamp"):
            return Admission.allow()  # never stand between a Wukong and its finalizer
        if (problem := invalid_value(wukong)) is not None:
            return Admission.deny("Invalid", problem)
        old = request.old_object or {}
        if invalid_value(old) is not None:
            old = {}  # nothing of it can be trusted: check every reference as new
        # Both read as the controller reads them: `invalid_value` checked every field's type.
        spec = from_json(WukongSpec, wukong.get("spec"))
        old_spec = from_json(WukongSpec, old.get("spec"))
        namespace = request.namespace or wukong["metadata"].get("namespace") or ""
        if not is_object_name(namespace):
            return Admission.malformed(f"request.namespace: {namespace[:64]!r} is no namespace")
        unverified: list[str] = []

        old_nads = {n.nad_name for n in old_spec.networks}
        for index, network in enumerate(spec.networks):
            nad = network.nad_name
            if not nad or nad in old_nads:
                continue
            found = await self._lookup(
                request, NETWORK_ATTACHMENT_DEFINITIONS, self._nads, namespace, nad
            )
            field = f"spec.networks[{index}].nadName"
            if found is None:
                return Admission.deny(
                    "NetworkAttachmentDefinitionNotFound",
                    f"{field}: NetworkAttachmentDefinition {namespace}/{nad} does not exist",
                )
            if isinstance(found, _Unknown):
                unverified.append(f"{field}: {found.why}")
            elif (owner := _other_wukong(found, wukong)) is not None:
                return Admission.deny(
                    "NetworkAttachmentDefinitionOfAnotherWukong",
                    f"{field}: NetworkAttachmentDefinition {namespace}/{nad} belongs to Wukong "
                    f"{namespace}/{owner} (created from its config, deleted with it); give this "
                    "network its own config or name another NetworkAttachmentDefinition",
                )

        old_disks = {d.name: d for d in old_spec.disks}
        for index, disk in enumerate(spec.disks):
            previous = old_disks.get(disk.name)
            class_name = disk.storage_class_name
            if class_name and previous is None:
                field = f"spec.disks[{index}].storageClassName"
                found = await self._lookup(
                    request, STORAGE_CLASSES, self._classes, None, class_name
                )
                if found is None:
                    return Admission.deny(
                        "StorageClassNotFound", f"{field}: StorageClass {class_name} does not exist"
                    )
                if isinstance(found, _Unknown):
                    unverified.append(f"{field}: {found.why}")
            if previous is not None and _grows(previous, disk):
                field = f"spec.disks[{index}].size"
                storage_class = await self._class_of_disk(request, wukong, disk)
                if isinstance(storage_class, _Unknown):
                    unverified.append(f"{field}: expansion: {storage_class.why}")
                elif storage_class is not None and not storage_class.get("allowVolumeExpansion"):
                    return Admission.deny(
                        "ExpansionNotSupported",
                        f"{field}: cannot grow from {previous.size} to {disk.size}: "
                        f"StorageClass {storage_class['metadata']['name']} does not allow "
                        "volume expansion (allowVolumeExpansion)",
                    )
        if unverified:
            return Admission.errored("not verified: " + "; ".join(unverified))
        return Admission.allow()

    async def _class_of_disk(
        self, request: AdmissionRequest, wukong: Object, disk: DiskSpec
    ) -> Object | _Unknown | None:
        """The StorageClass a disk's claim uses: its own, the claim's, else the default."""
        name = disk.storage_class_name
        if not name:
            claim = self._claims.get_by_name(
                wukong["metadata"].get("namespace"),
                child_name(wukong["metadata"]["name"], disk.name),
            )
            name = ((claim or {}).get("spec") or {}).get("storageClassName")
        if name:
            return await self._lookup(request, STORAGE_CLASSES, self._classes, None, name)
        return next((c for c in self._classes.list_objects() if is_default_class(c)), None)

    async def _lookup(
        self,
        request: AdmissionRequest,
        resource: Resource,
        store: Store,
        namespace: str | None,
        name: str,
    ) -> Object | _Unknown | None:
        """The object from the cache, else from the API server under the review's deadline;
        None if it does not exist."""
        cached = store.get_by_name(namespace, name)
        if cached is not None:
            return cached
        try:
            return await request.client.get(resource, name, namespace=namespace)
        except NotFound:
            return None
        except ApiTimeout:
            return _Unknown(
                f"the API server did not answer within the review's {request.timeout:g}s"
            )
        except ApiError as exc:
            return _Unknown(f"{resource.plural} {name}: {exc.message}")


def _other_wukong(nad: Object, wukong: Object) -> str | None:
    """The name of the Wukong other than `wukong` that controls `nad`, if one does."""
    owner = wukong_controller(nad)
    if owner is None:
        return None
    metadata = wukong["metadata"]
    # By uid (a Wukong of the same name made again is another one); a request
    # from elsewhere may carry no uid, then by name.
    same = (
        owner.get("uid") == metadata["uid"]
        if metadata.get("uid")
        else owner.get("name") == metadata.get("name")
    )
    return None if same else str(owner.get("name"))


def _grows(old: DiskSpec, new: DiskSpec) -> bool:
    """Whether `new`'s size is larger (both parse: `invalid_value` checked them)."""
    return parse_quantity(new.size) > parse_quantity(old.size)


def add_wukong_webhook(manager: Manager, *, admit_on_error: bool = False) -> WukongAdmission:
    """Serve the Wukong webhook at `WEBHOOK_PATH` on the manager's caches; with
    `admit_on_error`, what it cannot decide is admitted with a warning (`AdmitOnError`)."""
    admission = WukongAdmission(
        network_attachment_definitions=manager.informer(NETWORK_ATTACHMENT_DEFINITIONS).store,
        storage_classes=manager.informer(STORAGE_CLASSES).store,
        claims=manager.informer(PERSISTENT_VOLUME_CLAIMS).store,
    )
    manager.add_webhook(WEBHOOK_PATH, AdmitOnError(admission) if admit_on_error else admission)
    return admission
