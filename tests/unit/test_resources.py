"""REST paths for core, grouped, namespaced and cluster-scoped resources."""

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
