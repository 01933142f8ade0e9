"""The Linux capabilities the agent uses, why, and which one a failure lacked.

The chart's DaemonSet runs the agent as root with all capabilities dropped but
these (never privileged). Each one was found necessary on a real node by
dropping it and watching the agent fail (tests/node):

- BPF: create BPF maps and load programs (bpf(2)).
- PERFMON: load tracing programs and attach uprobes and USDT probes.
- SYS_PTRACE: read other processes' /proc/PID/exe and maps, to find controller
  processes and the symbols and USDT notes in their binaries.
- DAC_OVERRIDE: enable the python:audit USDT probe, which writes its semaphore
  through /proc/PID/mem; that file belongs to the traced process's user (the
  operator runs as 65532) and is mode 0600, so root needs DAC_OVERRIDE to open it
  for writing (DAC_READ_SEARCH only covers reads).

Not needed: SYS_RESOURCE (kernels >= 5.11 charge BPF memory to the cgroup,
not RLIMIT_MEMLOCK; some VMs cannot grant it at all), SYS_ADMIN.

When an operation fails, `lacking` names the capabilities it needs that the
process does not have, so the agent's one-line error says what to grant instead
of repeating the kernel's EPERM.
"""

from collections.abc import Iterable
from pathlib import Path

# Bit numbers from linux/capability.h.
_BITS = {
    "DAC_OVERRIDE": 1,
    "DAC_READ_SEARCH": 2,
    "SYS_PTRACE": 19,
    "SYS_ADMIN": 21,
    "SYS_RESOURCE": 24,
    "PERFMON": 38,
    "BPF": 39,
}

WHY = {
    "BPF": "create BPF maps and load programs",
    "PERFMON": "load tracing programs and attach uprobes and USDT probes",
    "SYS_PTRACE": "read other processes' /proc/PID/exe and maps",
    "DAC_OVERRIDE": "write the USDT semaphore through /proc/PID/mem of a process "
    "owned by another user",
}
REQUIRED = tuple(WHY)


def effective(status: Path = Path("/proc/self/status")) -> set[str]:
    """The capabilities in this process's effective set (by the names above)."""
    for line in status.read_text().splitlines():
        if line.startswith("CapEff:"):
            mask = int(line.split()[1], 16)
            names = {name for name, bit in _BITS.items() if mask >> bit & 1}
            if "SYS_ADMIN" in names:
                # Before BPF and PERFMON existed (5.8), SYS_ADMIN granted both.
                names |= {"BPF", "PERFMON"}
            return names
    return set()


def lacking(needed: Iterable[str]) -> list[str]:
    """Those of `needed` this process does not have, in the order given."""
    have = effective()
    return [name for name in needed if name not in have]


def describe(names: Iterable[str]) -> str:
    """'CAP_X (why), CAP_Y (why)' for an error message."""
    return ", ".join(f"CAP_{name} ({WHY[name]})" for name in names)
