"""What the node changes on the host outside its namespace, and how `down` undoes it.

- the sysctls the kubelet sets for itself (kernel.panic, kernel.panic_on_oops,
  vm.overcommit_memory, vm.panic_on_oom, kernel.keys.*): saved before the first
  start in `node.json`, written back by `down`;
- mounts under the state directory (pod volumes, container root filesystems,
  the pods' network namespaces): unmounted;
- the `/kubepods` cgroups in every hierarchy: removed once the pods' processes
  are gone;
- the kubelet's links in `/var/log/containers` into the state directory.

Only one node runs per machine (the kubelet owns `/kubepods`): the owner file
names the state directory whose `down` may undo the machine-wide parts.
"""

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from wukong.devcluster.binaries import Progress
from wukong.devcluster.errors import DevClusterError
from wukong.devcluster.node import netns
from wukong.devcluster.node.layout import CNI_BIN_DIR, NETNS

# Host sysctls the kubelet writes for itself (pkg/kubelet/cm setupKernelTunables).
KERNEL_TUNABLES = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
# Which state directory's node holds the machine-wide parts (the namespace, the
# /kubepods cgroups, the saved sysctls): only that node's `down` touches them.
OWNER_FILE = Path("/run/wukong/dev-node-owner")
# Held by a test run's node from before `up` until after `down`: a second run on
# the same machine (a CI clone beside a developer's run) waits for its turn.
EPHEMERAL_TURN = Path("/run/wukong/ephemeral-node.lock")
_TURN_POLL = 1.0
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_KUBEPODS = "kubepods"

# Host commands the node needs, and the Debian package that brings each.
_HOST_TOOLS = {
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "conntrack": "conntrack",
    "ip": "iproute2",
    "nsenter": "util-linux",
}


def check_host() -> None:
    """One-line errors for what the node cannot run without: root, packages, CNI."""
    if os.geteuid() != 0:
        raise DevClusterError(
            "a dev node needs root (network namespace, cgroups, mounts); run as root"
        )
    missing = sorted({pkg for tool, pkg in _HOST_TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise DevClusterError(
            f"missing host packages for the dev node: {' '.join(missing)} "
            "(run `make setup` or apt-get install them)"
        )
    if not (CNI_BIN_DIR / "bridge").is_file():
        raise DevClusterError(
            f"no CNI bridge plugin in {CNI_BIN_DIR}; install containernetworking-plugins"
        )


# -- ownership ----------------------------------------------------------------------


def owns_machine(state_dir: Path) -> bool:
    try:
        return OWNER_FILE.read_text().strip() == str(state_dir.resolve())
    except FileNotFoundError:
        return False


def claim_machine(state_dir: Path) -> None:
    OWNER_FILE.parent.mkdir(parents=True, exist_ok=True)
    OWNER_FILE.write_text(f"{state_dir.resolve()}\n")


def release_machine() -> None:
    OWNER_FILE.unlink(missing_ok=True)


@contextlib.contextmanager
def ephemeral_turn(
    progress: Progress, *, wait: float, lock_file: Path = EPHEMERAL_TURN
) -> Iterator[None]:
    """Hold the machine's one slot for a node that lives for a `with` block.

    A node whose run holds the slot is waited for (up to `wait` seconds), not
    refused; the slot is freed by the kernel when its holder dies, so a killed
    run never makes the next one wait.
    """
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as held:
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise DevClusterError(
                        f"another run's dev node held this machine for {wait:.0f} s "
                        f"({lock_file}); one node per machine"
                    ) from None
                if not told:
                    progress(f"another run's dev node is up on this machine; waiting ({lock_file})")
                    told = True
                time.sleep(_TURN_POLL)
        try:
            yield
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)


def check_no_other_node(state_dir: Path) -> None:
    """Refuse to start beside another node (or its leftovers), naming how to stop it."""
    try:
        owner = OWNER_FILE.read_text().strip()
    except FileNotFoundError:
        owner = None
    if owner and not owns_machine(state_dir):
        raise DevClusterError(
            f"another dev node runs on this machine (state in {owner}); one node per "
            f"machine: stop it with `wukong dev down --state-dir {owner}`"
        )
    if owner is None and netns.exists():
        raise DevClusterError(
            f"network namespace {NETNS} exists but no dev node owns it; "
            f"delete it with `ip netns delete {NETNS}`"
        )
    for hierarchy in ("memory", "pids", "unified"):
        kubepods = _CGROUP_ROOT / hierarchy / _KUBEPODS
        if owner is None and kubepods.is_dir() and _cgroup_has_processes(kubepods):
            raise DevClusterError(
                f"{kubepods} holds processes: another kubelet's pods run on this machine; "
                "one node per machine"
            )


# -- sysctls --------------------------------------------------------------------------


def save_sysctls(state_file: Path) -> None:
    if state_file.is_file():
        return  # keep what was there before the first `up`
    saved = {name: _read_sysctl(name) for name in KERNEL_TUNABLES}
    state_file.write_text(json.dumps({"sysctls": saved}, indent=2))


def restore_sysctls(state_file: Path, progress: Progress) -> None:
    try:
        saved = json.loads(state_file.read_text())["sysctls"]
    except (FileNotFoundError, ValueError, KeyError):
        return
    changed = []
    for name, value in saved.items():
        if value is not None and _read_sysctl(name) != value:
            Path("/proc/sys", name).write_text(value)
            changed.append(name.replace("/", "."))
    if changed:
        progress(f"restored sysctls {', '.join(changed)}")
    state_file.unlink()


def _read_sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", name).read_text().strip()
    except OSError:
        return None


# -- mounts and log links ---------------------------------------------------------------


def _mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # Field 5 is the mount point, with spaces and the like octal-escaped.
        points.append(line.split()[4].encode().decode("unicode_escape"))
    return points


def unmount_under(root: Path) -> int:
    """Lazily unmount everything below `root`, deepest first; how many were unmounted."""
    prefix = str(root.resolve()) + "/"
    count = 0
    for point in sorted(
        (p for p in _mount_points() if p.startswith(prefix)), key=len, reverse=True
    ):
        if (
            subprocess.run(["umount", "-l", point], capture_output=True, check=False).returncode
            == 0
        ):
            count += 1
    return count


def remove_container_log_links(pod_logs: Path) -> None:
    # The kubelet links each container's log into /var/log/containers (a fixed path).
    links = Path("/var/log/containers")
    if not links.is_dir():
        return
    for link in links.iterdir():
        with contextlib.suppress(OSError):
            if link.is_symlink() and os.readlink(link).startswith(str(pod_logs)):
                link.unlink()


# -- cgroups ------------------------------------------------------------------------------


def _kubepods_dirs() -> Iterator[Path]:
    for hierarchy in sorted(_CGROUP_ROOT.iterdir()):
        kubepods = hierarchy / _KUBEPODS
        if kubepods.is_dir():
            yield kubepods


def _cgroup_has_processes(cgroup: Path) -> bool:
    for procs in cgroup.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            if procs.read_text().strip():
                return True
    return False


def _pod_pids() -> Iterator[int]:
    seen: set[int] = set()
    for kubepods in _kubepods_dirs():
        for procs in kubepods.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                for line in procs.read_text().split():
                    pid = int(line)
                    if pid not in seen:
                        seen.add(pid)
                        yield pid


def kill_pod_processes() -> None:
    """SIGKILL whatever still runs in a pod cgroup (a shim killed before its task)."""
    for _ in range(50):
        pids = list(_pod_pids())
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def remove_kubepods_cgroups() -> None:
    for kubepods in _kubepods_dirs():
        # Deepest first: a cgroup directory can only be removed once it has no children.
        for directory in sorted(
            (p for p in kubepods.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        ):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            kubepods.rmdir()
