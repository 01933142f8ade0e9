"""What the agent needs from the node, checked before anything is loaded.

Each failure is an `AgentError` whose one-line message says how to fix it.
"""

import os
from pathlib import Path

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
            "the agent needs root (or CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_SYS_RESOURCE "
            "and CAP_DAC_READ_SEARCH): run it with sudo, or deploy the chart's DaemonSet"
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


def bpf_failure(exc: Exception) -> AgentError:
    """A clear error for a BPF program that failed to load or attach."""
    text = str(exc)
    if "Operation not permitted" in text or "EPERM" in text:
        return AgentError(
            f"the kernel refused the BPF program ({text}): the agent needs CAP_BPF and "
            "CAP_PERFMON, and kernel.unprivileged_bpf_disabled/lockdown may forbid it"
        )
    return AgentError(f"loading the BPF program failed: {text}")
