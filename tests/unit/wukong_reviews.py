"""AdmissionReviews of a Wukong, as the API server sends them, for the webhook tests."""

from typing import Any

GVK = {"group": "vm.novasphere.dev", "version": "v1alpha1", "kind": "Wukong"}


def review(**request: Any) -> dict[str, Any]:
    """An AdmissionReview of a Wukong, its `request` fields overridden by `request`."""
    body = {"uid": "u-1", "kind": GVK, "operation": "CREATE", "namespace": "ns", **request}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": body}
