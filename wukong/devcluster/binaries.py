"""The real binaries behind the local control plane, found or built once.

- etcd is built the same way from its wrapper module (`etcdserver/`), at the
  release Kubernetes pins for its API server: 3.6, whose progress notifications
  let the API server stream initial lists (WatchList) from its watch cache.
- kube-apiserver cannot be downloaded here, so it is built from the Go module
  proxy through the wrapper module in `apiserver/` (which pins
  `k8s.io/kubernetes` and its staging modules). The build takes many minutes
  the first time; the binary is cached under the user's cache directory, keyed
  by everything that affects it, and reused from then on.
- The dev node's components (kubelet, kube-proxy, kube-scheduler,
  kube-controller-manager) and kubectl are built the same way, as one program
  (`kubenode/`, picked by the name it is started as, like the old hyperkube):
  one `go build` compiles the packages they share once and links once.
- helm (for the chart's lint, template and schema checks) is built the same
  way with `go install` at a pinned release, in about a minute.
- Prometheus for the dev node: Debian's package lacks Kubernetes service
  discovery, so the pinned release (`promserver/go.mod`) is built from the Go
  module proxy with only that discovery mechanism (`remove_all_sd`), and
  without the web UI's assets (the HTTP API is all the project uses).
- Jaeger v2 (`jaegerserver/go.mod` pins the release), the trace backend the API
  server and the operator export to in tests (`jaeger.py`): its all-in-one
  program, built the same way, without the UI's assets (its query API is used).

Each is built the first time something asks for it (`wukong dev build` builds
only etcd and kube-apiserver, what the control plane and the demo need). A build
reports progress (`[k/N] packages compiled`) through the `progress` callback so
a long first build is never silent.
"""

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, TextIO

from wukong.devcluster.errors import DevClusterError
from wukong.devcluster.paths import cache_dir

Progress = Callable[[str], None]

WRAPPER_DIR = Path(__file__).parent / "apiserver"
NODE_WRAPPER_DIR = Path(__file__).parent / "kubenode"
PAUSE_DIR = Path(__file__).parent / "pause"
PROMETHEUS_WRAPPER_DIR = Path(__file__).parent / "promserver"
ETCD_WRAPPER_DIR = Path(__file__).parent / "etcdserver"
JAEGER_WRAPPER_DIR = Path(__file__).parent / "jaegerserver"
_JAEGER_MODULE = "github.com/jaegertracing/jaeger"
_ETCD_MODULE = "go.etcd.io/etcd/server/v3"
_PROMETHEUS_MODULE = "github.com/prometheus/prometheus"
# Kubernetes service discovery only (file and static discovery are always there).
_PROMETHEUS_TAGS = "remove_all_sd,enable_kubernetes_sd"
# The names the node program answers to; each is a link to it in the cache.
NODE_COMMANDS = ("kubelet", "kube-proxy", "kube-scheduler", "kube-controller-manager", "kubectl")
HELM_VERSION = "v3.19.0"
_PROGRESS_EVERY_SECONDS = 15.0


def kubernetes_version() -> str:
    """The pinned Kubernetes release, read from the wrapper module's go.mod."""
    return _wrapper_version(WRAPPER_DIR)


def etcd_version() -> str:
    """The pinned etcd release, read from its wrapper module's go.mod."""
    return _wrapper_version(ETCD_WRAPPER_DIR, module=_ETCD_MODULE)


def etcd_binary(*, progress: Progress) -> Path:
    """Path to etcd built from the pinned release, building it if needed."""
    version = etcd_version()
    flags = ["-ldflags", f"-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA={version}"]
    return _cached_tool(
        ETCD_WRAPPER_DIR, name="etcd", what="etcd", version=version, flags=flags, progress=progress
    )


def _ldflags(version: str) -> str:
    major, minor, _ = version.lstrip("v").split(".")
    pkg = "k8s.io/component-base/version"
    # Without these, /version reports v0.0.0 and clients warn about skew.
    return " ".join(
        [
            "-s -w",
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    )


def _go(what: str | None = None) -> str:
    go = shutil.which("go")
    if go is None:
        what = what or f"kube-apiserver {kubernetes_version()}"
        raise DevClusterError(
            f"Go is not on PATH; it is needed once to build {what} "
            "(install Go >= 1.26 or run `make setup`)"
        )
    return go


def _build_key(
    go: str, version: str, wrapper: Path = WRAPPER_DIR, *, flags: Sequence[str] = ()
) -> str:
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        if (wrapper / name).is_file():  # a wrapper that only names a `tool` has no main.go
            digest.update((wrapper / name).read_bytes())
    digest.update(" ".join(flags).encode() if flags else _ldflags(version).encode())
    digest.update(subprocess.run([go, "version"], capture_output=True, check=True).stdout)
    return digest.hexdigest()[:12]


def cached_apiserver_path() -> Path | None:
    """The cached kube-apiserver for the current sources, if already built."""
    go = shutil.which("go")
    version = kubernetes_version()
    if go is None:
        # Without Go the key cannot be computed; any build of this version will do.
        candidates = sorted((cache_dir() / "bin").glob(f"kube-apiserver-{version}-*"))
        return candidates[-1] if candidates else None
    path = cache_dir() / "bin" / f"kube-apiserver-{version}-{_build_key(go, version)}"
    return path if path.is_file() else None


def kube_apiserver_binary(*, progress: Progress) -> Path:
    """Path to a kube-apiserver built from the pinned release, building it if needed."""
    cached = cached_apiserver_path()
    if cached is not None:
        return cached
    go = _go()
    version = kubernetes_version()
    target = cache_dir() / "bin" / f"kube-apiserver-{version}-{_build_key(go, version)}"
    _build_wrapper(go, WRAPPER_DIR, target, what="kube-apiserver", progress=progress)
    return target


def node_binaries(*, progress: Progress) -> Path:
    """A directory holding kubelet, kube-proxy, kube-scheduler, kube-controller-manager
    and kubectl of the pinned release (links to one program), building it if needed."""
    go = _go(f"the node components {kubernetes_version()}")
    version = kubernetes_version()
    node_version = _wrapper_version(NODE_WRAPPER_DIR)
    if node_version != version:
        raise DevClusterError(
            f"{NODE_WRAPPER_DIR}/go.mod pins k8s.io/kubernetes {node_version} but the "
            f"API server is {version}; pin both to one release (see DEVELOPERS.md)"
        )
    directory = (
        cache_dir() / "bin" / f"kube-node-{version}-{_build_key(go, version, NODE_WRAPPER_DIR)}"
    )
    program = directory / "kube-node"
    if not program.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        _build_wrapper(
            go,
            NODE_WRAPPER_DIR,
            program,
            what="kubelet, kube-proxy, kube-scheduler, kube-controller-manager and kubectl",
            progress=progress,
        )
    for name in NODE_COMMANDS:
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(program.name)
    return directory


def kubectl_binary(*, progress: Progress) -> Path:
    """kubectl at the API server's release (part of the node program)."""
    return node_binaries(progress=progress) / "kubectl"


def pause_binary(*, progress: Progress) -> Path:
    """The static pause program for the node's sandbox image."""
    return go_program(PAUSE_DIR, name="pause", progress=progress, build_flags=["-ldflags=-s -w"])


def prometheus_version() -> str:
    """The pinned Prometheus release (its Go module v0.X.Y is release 3.X.Y)."""
    module = _wrapper_version(PROMETHEUS_WRAPPER_DIR, module=_PROMETHEUS_MODULE)
    _, minor, patch = module.lstrip("v").split(".")
    return f"v3.{int(minor) - 300}.{patch}"


def prometheus_binary(*, progress: Progress) -> Path:
    """Path to Prometheus with Kubernetes service discovery, built once and cached."""
    version = prometheus_version()
    flags = [
        f"-tags={_PROMETHEUS_TAGS}",
        "-ldflags",
        f"-s -w -X github.com/prometheus/common/version.Version={version.lstrip('v')}",
    ]
    return _cached_tool(
        PROMETHEUS_WRAPPER_DIR,
        name="prometheus",
        what="Prometheus",
        version=version,
        flags=flags,
        package=f"{_PROMETHEUS_MODULE}/cmd/prometheus",
        progress=progress,
    )


def jaeger_version() -> str:
    """The pinned Jaeger release (module v1.X.Y; its v2 program is built from it)."""
    return _wrapper_version(JAEGER_WRAPPER_DIR, module=_JAEGER_MODULE)


def jaeger_binary(*, progress: Progress) -> Path:
    """Path to Jaeger v2's all-in-one program, built once and cached."""
    version = jaeger_version()
    flags = ["-ldflags", f"-s -w -X {_JAEGER_MODULE}/internal/version.latestVersion={version}"]
    return _cached_tool(
        JAEGER_WRAPPER_DIR,
        name="jaeger",
        what="Jaeger",
        version=version,
        flags=flags,
        package=f"{_JAEGER_MODULE}/cmd/jaeger",
        progress=progress,
    )


def _cached_tool(
    wrapper: Path,
    *,
    name: str,
    what: str,
    version: str,
    flags: list[str],
    progress: Progress,
    package: str = ".",
) -> Path:
    """A program of a wrapper module at its pinned `version`, built once and cached
    under a key of everything that affects the build."""
    go = _go(f"{what} {version}")
    target = (
        cache_dir() / "bin" / f"{name}-{version}-{_build_key(go, version, wrapper, flags=flags)}"
    )
    if not target.is_file():
        _build_wrapper(
            go,
            wrapper,
            target,
            what=what,
            progress=progress,
            version=version,
            package=package,
            build_flags=flags,
        )
    return target


def _wrapper_version(wrapper: Path, *, module: str = "k8s.io/kubernetes") -> str:
    go_mod = (wrapper / "go.mod").read_text()
    # `go mod tidy` marks a module needed only by a `tool` as indirect.
    pattern = rf"^\s*(?:require\s+)?{re.escape(module)} (v\d+\.\d+\.\d+)(?:\s*// indirect)?\s*$"
    match = re.search(pattern, go_mod, re.M)
    if not match:
        raise DevClusterError(f"cannot find the {module} version in {wrapper}/go.mod")
    return match.group(1)


def _build_wrapper(
    go: str,
    wrapper: Path,
    target: Path,
    *,
    what: str,
    progress: Progress,
    version: str | None = None,
    package: str = ".",
    build_flags: Sequence[str] | None = None,
) -> None:
    """`go build` `package` in the wrapper module (by default the Kubernetes release's
    main package, with its version stamped in)."""
    version = version or kubernetes_version()
    flags = list(build_flags) if build_flags is not None else ["-ldflags", _ldflags(version)]
    target.parent.mkdir(parents=True, exist_ok=True)
    log_path = cache_dir() / f"{wrapper.name}-build.log"
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly"}

    progress(f"building {what} {version} from the Go module proxy (first time only)")
    progress(f"  build log: {log_path}")
    started = time.monotonic()
    with log_path.open("w") as log:
        _run_with_heartbeat(
            [go, "mod", "download"],
            env=env,
            log=log,
            log_path=log_path,
            what="downloading Go modules",
            progress=progress,
            cwd=wrapper,
        )
        listing = subprocess.run(
            [
                go,
                "list",
                "-deps",
                *flags,
                "-f",
                "{{if not .Standard}}{{.ImportPath}}{{end}}",
                package,
            ],
            cwd=wrapper,
            env=env,
            capture_output=True,
            text=True,
        )
        if listing.returncode != 0:
            log.write(listing.stderr)
            raise DevClusterError(f"go list failed for {wrapper}; log: {log_path}")
        total = sum(1 for line in listing.stdout.splitlines() if line.strip())
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            out = Path(tmp) / target.name
            _compile_with_progress(
                [
                    go,
                    "build",
                    "-v",
                    "-trimpath",
                    *flags,
                    "-o",
                    str(out),
                    package,
                ],
                env=env,
                log=log,
                log_path=log_path,
                total=total,
                progress=progress,
                cwd=wrapper,
                what=what,
            )
            out.replace(target)  # atomic: a half-built binary is never cached
    progress(f"{what} {version} built in {time.monotonic() - started:.0f}s, cached at {target}")


def go_program(
    source_dir: Path, *, name: str, progress: Progress, build_flags: Sequence[str] = ()
) -> Path:
    """Build the Go main package in `source_dir` once; cached, keyed by its sources.

    For programs the project builds from its own sources (benchmark peers,
    test targets): `go build` with the module proxy, `-trimpath`, no stripping
    (symbols stay, for tools that read them) unless `build_flags` ask for it
    (`-ldflags=-s -w`: a stripped variant, cached apart).
    """
    go = _go(name)
    digest = hashlib.sha256()
    for path in sorted(source_dir.rglob("*")):
        if path.is_file() and (path.suffix == ".go" or path.name in ("go.mod", "go.sum")):
            digest.update(str(path.relative_to(source_dir)).encode())
            digest.update(path.read_bytes())
    digest.update(subprocess.run([go, "version"], capture_output=True, check=True).stdout)
    digest.update(" ".join(build_flags).encode())
    target = cache_dir() / "bin" / f"{name}-{digest.hexdigest()[:12]}"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log_path = cache_dir() / f"{name}-build.log"
    progress(f"building {name} from {source_dir} (first time only; log: {log_path})")
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp, log_path.open("w") as log:
        out = Path(tmp) / name
        _run_with_heartbeat(
            [go, "build", "-trimpath", *build_flags, "-o", str(out), "."],
            env={**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly"},
            log=log,
            log_path=log_path,
            what=f"building {name}",
            progress=progress,
            cwd=source_dir,
        )
        out.replace(target)
    return target


def helm_binary(*, progress: Progress) -> Path:
    """Path to helm HELM_VERSION, built once from the Go module proxy and cached."""
    target = cache_dir() / "bin" / f"helm-{HELM_VERSION}"
    if target.is_file():
        return target
    go = _go(f"helm {HELM_VERSION}")
    target.parent.mkdir(parents=True, exist_ok=True)
    log_path = cache_dir() / "helm-build.log"
    progress(f"building helm {HELM_VERSION} from the Go module proxy (first time only)")
    with tempfile.TemporaryDirectory(dir=target.parent) as gobin, log_path.open("w") as log:
        _run_with_heartbeat(
            [
                go,
                "install",
                "-trimpath",
                "-ldflags",
                f"-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
                f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}",
            ],
            env={**os.environ, "GOBIN": gobin, "GOTOOLCHAIN": "local"},
            log=log,
            log_path=log_path,
            what=f"building helm {HELM_VERSION}",
            progress=progress,
            cwd=Path(gobin),
        )
        (Path(gobin) / "helm").replace(target)
    progress(f"helm {HELM_VERSION} built and cached at {target}")
    return target


# The programs people run by name (README's `kubectl ...`, `helm ...`): kubectl at the
# API server's release, helm at HELM_VERSION; each is built the first time it is run.
TOOLS: dict[str, Callable[..., Path]] = {"kubectl": kubectl_binary, "helm": helm_binary}


def exec_tool(name: str, args: Sequence[str], *, progress: Progress) -> NoReturn:
    """Become the tool `name` with `args`, building it first if it is not cached yet."""
    program = TOOLS[name](progress=progress)
    os.execv(program, [name, *args])


def _run_with_heartbeat(
    cmd: list[str],
    *,
    env: dict[str, str],
    log: TextIO,
    log_path: Path,
    what: str,
    progress: Progress,
    cwd: Path = WRAPPER_DIR,
) -> None:
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    progress(f"  {what}...")
    while True:
        try:
            code = proc.wait(timeout=_PROGRESS_EVERY_SECONDS)
            break
        except subprocess.TimeoutExpired:
            progress(f"  {what}... {time.monotonic() - started:.0f}s")
    if code != 0:
        raise DevClusterError(f"{what} failed (exit {code}); log: {log_path}")


def _compile_with_progress(
    cmd: list[str],
    *,
    env: dict[str, str],
    log: TextIO,
    log_path: Path,
    total: int,
    progress: Progress,
    cwd: Path,
    what: str,
) -> None:
    # `go build -v` prints each package as it starts compiling it (cached ones
    # are skipped), which is the best progress signal Go offers.
    started = last_report = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    compiled = 0
    progress(f"  compiling {total} packages (several minutes on 2 cores)...")
    for line in proc.stdout:
        log.write(line)
        compiled += 1
        now = time.monotonic()
        if now - last_report >= _PROGRESS_EVERY_SECONDS:
            last_report = now
            shown = min(compiled, total)
            progress(f"  [{shown}/{total}] packages compiled, {now - started:.0f}s")
    code = proc.wait()
    if code != 0:
        raise DevClusterError(f"building {what} failed (exit {code}); log: {log_path}")
