"""The node's wrapper module builds what the API server's pins: one release."""

import re

from wukong.devcluster import binaries


def _requires(go_mod: str) -> dict[str, str]:
    block = re.search(r"^replace \((.*?)^\)", go_mod, re.M | re.S)
    assert block is not None
    pairs = re.findall(r"^\s*(\S+) => (\S+) (v\S+)$", block.group(1), re.M)
    return {module: version for module, _, version in pairs}


def test_node_and_apiserver_modules_pin_one_release_and_the_same_staging_modules() -> None:
    api = (binaries.WRAPPER_DIR / "go.mod").read_text()
    node = (binaries.NODE_WRAPPER_DIR / "go.mod").read_text()
    assert binaries._wrapper_version(binaries.NODE_WRAPPER_DIR) == binaries.kubernetes_version()
    assert _requires(node) == _requires(api)
    assert "k8s.io/kubectl" in _requires(node)
