"""Container images without a registry: written as archives, loaded into containerd.

No registry is reachable from the dev machine, so every image the dev node runs
is made here from local files and imported with `ctr images import`. An image
is written in the Docker archive format (`manifest.json` with `RepoTags`, one
uncompressed tar per layer, an OCI image config), which `ctr` imports under the
tag it names, so pods can refer to it with `imagePullPolicy: Never`.

The archive is deterministic (sorted entries, fixed times, root owner) so the
same inputs give the same image ID, and `ctr` skips layers it already has.
"""

import contextlib
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PAUSE_IMAGE = "wukong.local/pause:3.10"


@dataclass(frozen=True, kw_only=True)
class ImageFile:
    """One regular file of a layer: where it goes in the image and its bytes' source."""

    path: str  # absolute path inside the image, e.g. "/pause"
    source: Path
    mode: int = 0o755


@dataclass(frozen=True, kw_only=True)
class ImageSpec:
    """What goes into an image: a tag, layers of files and the runtime config."""

    tag: str
    files: Sequence[ImageFile]
    entrypoint: Sequence[str]
    # A ready layer (a root filesystem packed with tar) instead of `files`.
    layer_tar: Path | None = None
    cmd: Sequence[str] = ()
    user: str = ""
    env: Mapping[str, str] = field(default_factory=dict)


def _layer_tar(files: Sequence[ImageFile]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directories: set[str] = set()
        for item in sorted(files, key=lambda f: f.path):
            parts = item.path.strip("/").split("/")
            for depth in range(1, len(parts)):
                directory = "/".join(parts[:depth])
                if directory not in directories:
                    directories.add(directory)
                    info = tarfile.TarInfo(directory)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
            data = item.source.read_bytes()
            info = tarfile.TarInfo(item.path.strip("/"))
            info.size = len(data)
            info.mode = item.mode
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_archive(spec: ImageSpec, target: Path) -> str:
    """Write `spec` as a Docker archive at `target`; return the image ID (sha256:...)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with contextlib.ExitStack() as stack:
        if spec.layer_tar is not None:
            layer_file = spec.layer_tar
        else:
            layer_file = partial.with_name(target.name + ".layer")
            layer_file.write_bytes(_layer_tar(spec.files))
            stack.callback(layer_file.unlink, missing_ok=True)
        digest = hashlib.sha256()
        with layer_file.open("rb") as layer:
            while chunk := layer.read(1 << 20):
                digest.update(chunk)
        diff_id = "sha256:" + digest.hexdigest()
        config = {
            "architecture": "amd64",
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": {
                "Entrypoint": list(spec.entrypoint),
                "Cmd": list(spec.cmd) or None,
                "User": spec.user,
                "Env": [f"{key}={value}" for key, value in sorted(spec.env.items())],
            },
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "wukong dev images"}],
        }
        config_bytes = json.dumps(config, sort_keys=True).encode()
        config_digest = hashlib.sha256(config_bytes).hexdigest()
        layer_name = f"{diff_id.removeprefix('sha256:')}/layer.tar"
        manifest = [
            {"Config": f"{config_digest}.json", "RepoTags": [spec.tag], "Layers": [layer_name]}
        ]
        with tarfile.open(partial, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, data in [
                (f"{config_digest}.json", config_bytes),
                ("manifest.json", json.dumps(manifest).encode()),
            ]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
            info = tarfile.TarInfo(layer_name)
            info.size = layer_file.stat().st_size
            info.mode = 0o644
            with layer_file.open("rb") as layer:
                tar.addfile(info, layer)
    partial.replace(target)
    return f"sha256:{config_digest}"


def pause_spec(binary: Path) -> ImageSpec:
    """The sandbox image: the static pause binary alone, as containerd's `sandbox_image`."""
    return ImageSpec(
        tag=PAUSE_IMAGE,
        files=[ImageFile(path="/pause", source=binary)],
        entrypoint=["/pause"],
        user="65535:65535",
    )
