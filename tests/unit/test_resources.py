"""REST paths for core, grouped, namespaced and cluster-scoped resources."""

from wukong.runtime import AlreadyExists, ApiError, Conflict, NotFound
from wukong.runtime._errors import api_error
from wukong.runtime.resources import CONFIGMAPS, CUSTOM_RESOURCE_DEFINITIONS, Resource


def test_paths() -> None:
    assert CONFIGMAPS.path(namespace="ns", name="a") == "/api/v1/namespaces/ns/configmaps/a"
    assert CONFIGMAPS.path() == "/api/v1/configmaps"
    assert (
        CUSTOM_RESOURCE_DEFINITIONS.path(name="x", namespace="ignored")
        == "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x"
    )
    wukongs = Resource(
        group="vm.novasphere.dev", version="v1alpha1", plural="wukongs", kind="Wukong"
    )
    assert wukongs.api_version == "vm.novasphere.dev/v1alpha1"
    assert (
        wukongs.path(namespace="ns", name="vm", subresource="status")
        == "/apis/vm.novasphere.dev/v1alpha1/namespaces/ns/wukongs/vm/status"
    )


def test_error_classes_follow_status_and_reason() -> None:
    def error(status: int, reason: str) -> ApiError:
        return api_error(status=status, body={"reason": reason}, verb="GET", path="/x")

    assert type(error(404, "NotFound")) is NotFound
    assert type(error(409, "Conflict")) is Conflict
    assert type(error(409, "AlreadyExists")) is AlreadyExists
    assert type(error(500, "InternalError")) is ApiError
