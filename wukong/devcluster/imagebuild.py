"""The operator and agent images, built here from a local Debian root filesystem.

No registry is reachable, so `deploy/images/*.Dockerfile` cannot be built the
usual way. This module does what those files say, step for step, with tools
Debian has: `mmdebstrap` makes the `debian:bookworm-slim` stage (minbase, with
the packages and versions the Dockerfile's `apt-get install` pins), a chroot
runs its `RUN` steps (the virtualenv and `pip install /src` of this checkout,
without extras), and the result becomes one image layer in a Docker archive
(`images.write_archive`) that `ctr images import` loads into the dev node.
One builder serves both images: `read_recipe` takes from the Dockerfile what
differs (each stage's packages, whether the virtualenv sees Debian's python3
modules, USER, ENTRYPOINT and CMD); a second stage receives /opt/wukong alone.

Everything is cached under `~/.cache/wukong/images`: a root filesystem per
package list, an image per (Dockerfile, sources) hash, so a second
`wukong dev images` with unchanged sources does nothing but import.
"""

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wukong.devcluster import images
from wukong.devcluster.binaries import Progress
from wukong.devcluster.errors import DevClusterError
from wukong.devcluster.paths import cache_dir

SUITE = "bookworm"
REPOSITORY_PREFIX = "wukong.local/wukong-"
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class BuiltImage:
    """An image archive ready to import: its reference and size."""

    reference: str
    archive: Path
    size_bytes: int  # the uncompressed layer: what the image occupies unpacked


@dataclass(frozen=True)
class Recipe:
    """What a deploy/images Dockerfile says, in the terms this builder carries out."""

    stages: list[list[str]]  # each stage's pinned packages; the first installs the package
    system_site_packages: bool  # the virtualenv sees Debian's python3 modules (bcc)
    user: str
    entrypoint: list[str]
    cmd: list[str]


def read_recipe(dockerfile: Path) -> Recipe:
    """The stages' packages, the virtualenv's kind and the final stage's runtime config.

    Only the shape the images in deploy/images have: Debian stages whose
    `apt-get install` pins versions, one `python3 -m venv /opt/wukong` with
    `pip install /src`, and in a multi-stage file `COPY --from` of /opt/wukong.
    """
    text = dockerfile.read_text().replace("\\\n", " ")
    stages: list[list[str]] = []
    directives: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("FROM "):
            stages.append([])
        elif "apt-get install" in line and stages:
            stages[-1] += re.findall(r"\b([a-z0-9][a-z0-9.+-]*=[^\s]+)", line)
        keyword, _, rest = line.partition(" ")
        if keyword in ("USER", "ENTRYPOINT", "CMD"):
            directives[keyword] = rest.strip()
    if not 1 <= len(stages) <= 2 or not {"USER", "ENTRYPOINT", "CMD"} <= directives.keys():
        raise DevClusterError(f"{dockerfile}: not a Dockerfile this builder can follow")
    return Recipe(
        stages=stages,
        system_site_packages="venv --system-site-packages" in text,
        user=directives["USER"],
        entrypoint=json.loads(directives["ENTRYPOINT"]),
        cmd=json.loads(directives["CMD"]),
    )


def _source_root() -> Path:
    root = Path(__file__).resolve().parents[2]
    if not (root / "deploy" / "images").is_dir() or not (root / "pyproject.toml").is_file():
        raise DevClusterError(
            f"no deploy/images next to the wukong package ({root}); build the images "
            "from a checkout of the repository"
        )
    return root


def _source_key(root: Path, dockerfile: Path | None) -> str:
    digest = hashlib.sha256(dockerfile.read_bytes() if dockerfile else b"")
    files = [root / "pyproject.toml", root / "README.md"]
    files += sorted(p for p in (root / "wukong").rglob("*") if p.is_file())
    for path in files:
        if "__pycache__" in path.parts:
            continue
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _run(argv: Sequence[str], *, what: str, log: Path) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        raise DevClusterError(f"{what} failed (exit {result.returncode}); log: {log}")


def _rootfs_tar(packages: Sequence[str], *, progress: Progress, log: Path) -> Path:
    """A Debian minbase root filesystem with `packages`, as a tar (cached)."""
    if shutil.which("mmdebstrap") is None:
        raise DevClusterError(
            "mmdebstrap is missing; run `make setup` (apt-get install mmdebstrap)"
        )
    key = hashlib.sha256(" ".join([SUITE, *sorted(packages)]).encode()).hexdigest()[:12]
    target = cache_dir() / "images" / f"rootfs-{SUITE}-{key}.tar"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    progress(f"  making a Debian {SUITE} root filesystem with {' '.join(packages)} (mmdebstrap)")
    partial = target.with_name(target.stem + ".partial.tar")
    _run(
        [
            "mmdebstrap",
            "--variant=minbase",
            "--format=tar",
            f"--include={','.join(packages)}",
            # The image is a container's filesystem: no documentation or locales.
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            SUITE,
            str(partial),
        ],
        what="mmdebstrap",
        log=log,
    )
    partial.replace(target)
    return target


def _unpack(tar: Path, into: Path, *, log: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    _run(["tar", "--numeric-owner", "-xpf", str(tar), "-C", str(into)], what="unpacking", log=log)


def _chroot(rootfs: Path, script: str, *, what: str, log: Path) -> None:
    """Run a shell script inside `rootfs` as a Dockerfile's RUN would.

    In a private mount namespace (mounts vanish with it) with /proc and /dev,
    and the host's resolv.conf so pip reaches the package index.
    """
    shutil.copy("/etc/resolv.conf", rootfs / "etc" / "resolv.conf")
    setup = (
        f"mount -t proc proc {rootfs}/proc && mount --rbind /dev {rootfs}/dev && "
        f"exec chroot {rootfs} /usr/bin/env -i PATH={_PATH} HOME=/root /bin/sh -ec '{script}'"
    )
    try:
        _run(["unshare", "--mount", "--fork", "sh", "-ec", setup], what=what, log=log)
    finally:
        (rootfs / "etc" / "resolv.conf").unlink(missing_ok=True)


def _wheelhouse(root: Path, *, progress: Progress, log: Path) -> Path:
    """Wheels of the package (no extras) and its dependencies, built on the host.

    pip runs here, with the host's index and certificate settings, rather than
    inside the image's chroot; the image then installs from these files alone.
    """
    target = cache_dir() / "images" / f"wheels-{_source_key(root, None)}"
    if target.is_dir():
        return target
    progress("  building the package's wheel and fetching its dependencies' (pip wheel)")
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / "src"
        _copy_sources(root, src)
        wheels = Path(tmp) / "wheels"
        _run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(wheels), str(src)],
            what="pip wheel",
            log=log,
        )
        wheels.replace(target)
    _prune("wheels-*", keep=target)
    return target


def _install_script(*, system_site_packages: bool) -> str:
    flag = " --system-site-packages" if system_site_packages else ""
    return (
        f"python3 -m venv{flag} /opt/wukong && "
        "/opt/wukong/bin/pip install --no-index --no-cache-dir --disable-pip-version-check -q "
        "--find-links /wheels /wheels/wukong_operator-*.whl && rm -rf /wheels"
    )


def _copy_sources(root: Path, src: Path) -> None:
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    shutil.copytree(
        root / "wukong", src / "wukong", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )


def _layer(rootfs: Path, target: Path, *, log: Path) -> None:
    _run(
        ["tar", "--numeric-owner", "--sort=name", "-cf", str(target), "-C", str(rootfs), "."],
        what="packing the layer",
        log=log,
    )


def _finish(
    *, rootfs: Path, work: Path, reference: str, archive: Path, recipe: Recipe, log: Path
) -> BuiltImage:
    layer = work / "layer.tar"
    _layer(rootfs, layer, log=log)
    images.write_archive(
        images.ImageSpec(
            tag=reference,
            files=[],
            layer_tar=layer,
            entrypoint=recipe.entrypoint,
            cmd=recipe.cmd,
            user=recipe.user,
            env={"PATH": _PATH},
        ),
        archive,
    )
    return BuiltImage(reference, archive, layer.stat().st_size)


def build_image(name: str, *, progress: Progress) -> BuiltImage:
    """deploy/images/<name>.Dockerfile, built here (cached by the sources' hash)."""
    root = _source_root()
    dockerfile = root / "deploy" / "images" / f"{name}.Dockerfile"
    key = _source_key(root, dockerfile)
    reference = f"{REPOSITORY_PREFIX}{name}:{key}"
    archive = cache_dir() / "images" / f"wukong-{name}-{key}.tar"
    if archive.is_file():
        return BuiltImage(reference, archive, _layer_size(archive))
    recipe = read_recipe(dockerfile)
    log = cache_dir() / "images" / f"{name}-build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    started = time.monotonic()
    progress(f"building {reference} from {dockerfile.relative_to(root)} (log: {log})")
    with tempfile.TemporaryDirectory(dir=archive.parent) as tmp:
        work = Path(tmp)
        build = work / "build"
        _unpack(_rootfs_tar(recipe.stages[0], progress=progress, log=log), build, log=log)
        shutil.copytree(_wheelhouse(root, progress=progress, log=log), build / "wheels")
        flag = " --system-site-packages" if recipe.system_site_packages else ""
        progress(f"  RUN python3 -m venv{flag} /opt/wukong && pip install (the package, no extras)")
        _chroot(
            build,
            _install_script(system_site_packages=recipe.system_site_packages),
            what=f"installing the {name} into its virtualenv",
            log=log,
        )
        final = build
        if len(recipe.stages) == 2:
            # COPY --from=build /opt/wukong: only the virtualenv reaches the final stage.
            final = work / "final"
            _unpack(_rootfs_tar(recipe.stages[1], progress=progress, log=log), final, log=log)
            shutil.copytree(build / "opt" / "wukong", final / "opt" / "wukong", symlinks=True)
        built = _finish(
            rootfs=final, work=work, reference=reference, archive=archive, recipe=recipe, log=log
        )
    progress(
        f"  {reference}: {built.size_bytes / 2**20:.0f} MiB in {time.monotonic() - started:.0f}s"
    )
    _prune(f"wukong-{name}-*.tar", keep=archive)
    return built


def build_operator_image(*, progress: Progress) -> BuiltImage:
    """deploy/images/operator.Dockerfile: Debian's python3, the package without extras."""
    return build_image("operator", progress=progress)


def build_agent_image(*, progress: Progress) -> BuiltImage:
    """deploy/images/agent.Dockerfile: Debian's python3 with python3-bpfcc, the package."""
    return build_image("agent", progress=progress)


_PRUNE_AFTER_SECONDS = 3600.0


def _prune(pattern: str, *, keep: Path) -> None:
    """Delete older builds of one image (each source change makes a new one).

    Only those untouched for an hour: another checkout sharing the cache may be
    importing its own build right now.
    """
    now = time.time()
    for path in keep.parent.glob(pattern):
        if path != keep and now - path.stat().st_mtime > _PRUNE_AFTER_SECONDS:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _layer_size(archive: Path) -> int:
    import tarfile

    with tarfile.open(archive) as tar:
        return sum(m.size for m in tar.getmembers() if m.name.endswith("layer.tar"))


def values_file(operator: BuiltImage, agent: BuiltImage, target: Path) -> Path:
    """A Helm values file pointing the chart at the local images (never pulled)."""
    import yaml

    def image(built: BuiltImage) -> dict[str, str]:
        repository, tag = built.reference.rsplit(":", 1)
        return {"repository": repository, "tag": tag, "pullPolicy": "Never"}

    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(
        "# Written by `wukong dev images`: the chart's images as loaded on the dev node.\n"
        + yaml.safe_dump({"image": image(operator), "agent": {"image": image(agent)}})
    )
    return target
