"""The images `wukong dev images` builds hold what the Dockerfiles promise, and no more."""

import json
import tarfile

from wukong.devcluster.imagebuild import BuiltImage


def _image(built: BuiltImage) -> tuple[dict[str, object], set[str]]:
    with tarfile.open(built.archive) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
        (entry,) = manifest
        config = json.load(archive.extractfile(entry["Config"]))  # type: ignore[arg-type]
        (layer_name,) = entry["Layers"]
        with tarfile.open(fileobj=archive.extractfile(layer_name)) as layer:
            names = {name.removeprefix("./") for name in layer.getnames()}
    assert entry["RepoTags"] == [built.reference]
    return config["config"], names


def test_the_operator_image_runs_debians_python_as_non_root_without_dev_tools(
    built_images: tuple[BuiltImage, BuiltImage],
) -> None:
    operator, _ = built_images
    config, names = _image(operator)
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["/opt/wukong/bin/wukong"] and config["Cmd"] == ["run"]
    # Debian's python3, which carries the python:audit USDT probe the agent reads.
    assert "usr/bin/python3.11" in names
    assert "opt/wukong/bin/wukong" in names
    site = "opt/wukong/lib/python3.11/site-packages/"
    assert any(n.startswith(site + "wukong/operator/") for n in names)
    assert any(n.startswith(site + "kubernetes_asyncio/") for n in names)
    # No compiler, no etcd, none of the devtools extra, no build stage leftovers.
    for absent in ("usr/bin/gcc", "usr/bin/cc", "usr/bin/clang", "usr/bin/pip3", "src", "wheels"):
        assert absent not in names, absent
    for package in ("grafana_foundation_sdk",):
        assert not any(n.startswith(site + package) for n in names), package
    assert not any("etcd" == n.rsplit("/", 1)[-1] for n in names)


def test_the_agent_image_has_bcc_for_debians_python(
    built_images: tuple[BuiltImage, BuiltImage],
) -> None:
    _, agent = built_images
    config, names = _image(agent)
    assert config["User"] == "0:0" and config["Cmd"] == ["agent"]
    assert "usr/lib/python3/dist-packages/bcc/__init__.py" in names
    assert "opt/wukong/pyvenv.cfg" in names
    assert "wheels" not in names
