"""What the agent needs from the node, checked before anything is loaded.

Each failure is an `AgentError` whose one-line message says how to fix it.
"""

import os
from pathlib import Path

from wukong.ebpf import capabilities
from wukong.errors import UserError

HEADERS_FIX = (
    "install linux-headers-amd64 and link /lib/modules/$(uname -r)/build to "
    "/usr/src/linux-headers-*-amd64 and /lib/modules/$(uname -r)/source to "
    "/usr/src/linux-headers-*-common (`make setup` does both)"
)


class AgentError(UserError):
    """The agent cannot run on this node; the message names the fix."""


def check_node() -> None:
    if os.geteuid() != 0:
        raise AgentError(
            "the agent needs root with CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and "
            "CAP_DAC_OVERRIDE: run it with sudo, or deploy the chart's DaemonSet"
        )
    release = os.uname().release
    build = Path(f"/lib/modules/{release}/build/include")
    if not build.exists() and not Path("/sys/kernel/btf/vmlinux").exists():
        raise AgentError(f"no kernel headers for {release} and no BTF: {HEADERS_FIX}")
    if not build.exists():
        raise AgentError(
            f"no kernel headers for {release} (BCC compiles against them): {HEADERS_FIX}"
        )
    if not Path("/sys/kernel/tracing/uprobe_events").exists():
        raise AgentError(
            "tracefs is not mounted: mount -t tracefs tracefs /sys/kernel/tracing "
            "(the chart mounts the host's; `make setup` mounts it here)"
        )
    try:
        import bcc  # noqa: F401  (Debian's python3-bpfcc, only in Debian's interpreter)
    except ImportError as exc:
        raise AgentError(
            "BCC's Python bindings are missing: apt-get install python3-bpfcc and run the agent "
            "with Debian's /usr/bin/python3 (or a venv made from it with --system-site-packages)"
        ) from exc


class MissingCapability(AgentError):
    """The agent lacks a capability a probe step needs: no process can be traced."""


class KernelRefused(AgentError):
    """The kernel said no though the agent holds every capability (a sysctl, lockdown)."""


class StageFailed(Exception):
    """A probe step failed: `stage` is "usdt", "load" or "attach" (see `bpf_failure`)."""

    def __init__(self, stage: str, cause: Exception) -> None:
        super().__init__(f"{stage}: {cause}")
        self.stage = stage
        self.cause = cause


def bpf_failure(exc: Exception, *, stage: str, pid: int | None) -> AgentError:
    """A clear error for a probe that failed to enable, load or attach.

    `stage` is "usdt" (enabling python:audit), "load" (maps and programs) or
    "attach" (the uprobe); a capability that stage needs and the agent lacks is
    named (`MissingCapability`: fatal, nothing can be traced), else the kernel's
    words are passed on (that one process cannot be traced, e.g. another
    tracer holds a conflicting uprobe on its binary).
    """
    text = " ".join(str(exc).split())
    needs = {
        "usdt": ("SYS_PTRACE", "DAC_OVERRIDE"),
        "load": ("BPF", "PERFMON"),
        "attach": ("PERFMON", "SYS_PTRACE"),
    }[stage]
    missing = capabilities.lacking(needs)
    what = {
        "usdt": f"enabling the python:audit USDT probe in pid {pid}",
        "load": f"loading the BPF program for pid {pid}",
        "attach": f"attaching the uprobe to pid {pid}",
    }[stage]
    if pid is None:  # the agent's own program: exec and exit events
        what = "loading the agent's process-event program"
    if missing:
        return MissingCapability(
            f"{what} failed: the agent lacks {capabilities.describe(missing)}; "
            "grant it (the chart's DaemonSet does)"
        )
    if "Operation not permitted" in text or "EPERM" in text or "super-user" in text:
        return KernelRefused(
            f"{what} failed: the kernel refused ({text[:200]}); "
            "kernel.unprivileged_bpf_disabled or lockdown may forbid it"
        )
    return AgentError(f"{what} failed: {text[:300]}")


def unreadable_process(pid: int) -> AgentError | None:
    """The error for a process whose /proc entries cannot be read, if it is ours to report.

    Without CAP_SYS_PTRACE root cannot read other users' /proc/PID/exe: every
    controller would be skipped without a word.
    """
    missing = capabilities.lacking(("SYS_PTRACE",))
    if not missing:
        return None
    return AgentError(
        f"cannot read /proc/{pid}/exe: the agent lacks {capabilities.describe(missing)}; "
        "grant it (the chart's DaemonSet does)"
    )
