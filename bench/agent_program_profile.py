"""Where the node agent's BPF program spends its time, part by part.

Kernel BPF statistics (run_time_ns / run_cnt of each loaded program, from
/proc fdinfo, with `kernel.bpf_stats_enabled` on during the run only) for
programs that each add one part of what the agent's program does per Go
cancellation, on the benchmark's workload (tests/ebpf/programs/cancels,
`-cancels N`), each attached alone at the agent's probe site:

1. empty; the pid and the `known` lookup; the read of the cause's spill
   slot; the frame-pointer walk with 1, 2, 4, 8 frames (one
   bpf_probe_read_user per frame); then the count in a BPF_HASH keyed by
   (pid, kind, 8 frames, 64-byte cause: 136 bytes), lookup + atomic add.
   This is the agent's program as it was before the profile.
2. Alternatives for the costly parts, each on top of the 8-frame walk:
   other counters (a per-CPU hash, a key with the frames hashed into one
   word, an array slot: the floor of any map update) and one read of the
   stack span instead of a read per frame; the agent's structure from these
   parts (one 2048-byte read, a 16-byte key); and no read of user memory at
   all (counting by pid and kind, naming nothing): the floor of any program
   that counts each cancellation with a hash update.
3. The agent's program as it is (wukong/ebpf/go_probe.c, loaded by GoProbe),
   on this workload (a storm: past the naming budget most cancels are counted
   by pid and kind only), naming every cancel (no budget), and naming every
   cancel with a cause (WithCancelCause).

The variants alternate within each of `--rounds` rounds; values are
median (min-max) over rounds. The statistics cost two clock reads per run:
that is most of the empty program's figure.

Needs root (BPF). `.venv/bin/python bench/agent_program_profile.py [--cancels 100000]`
"""

import argparse
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from agent_overhead import PROGRAM, bpf_stats, prog_stats, program, timed
from results import write_fragment

from wukong.devcluster import binaries
from wukong.ebpf.elf import (
    CANCEL_SYMBOL,
    CANCELED_SYMBOL,
    DEADLINE_SYMBOL,
    Binary,
    load_bias,
    read_binary,
    read_code,
    read_memory,
)
from wukong.ebpf.go_cancel_site import ProbeSite, find_site
from wukong.ebpf.go_probe import NAMED_PER_WINDOW, GoProbe

# Self-contained (not go_probe.c's own structs, which change as the agent is
# made cheaper): the parts as the agent's program had them before this profile.
_PARTS = b"""
#include <uapi/linux/ptrace.h>

#define CAUSE_SPILL_OFFSET 0x30
#define FRAMES 8
#define COPY_MAX 4096

struct known_t {
    u64 canceled_data;
    u64 errors_new_itab;
    u64 deadline_itab;
    u64 deadline_type;
};
struct full_key_t {  // 136 bytes
    u32 pid;
    u32 kind;
    u64 frames[FRAMES];
    char cause[64];
};
struct site_key_t {  // 80 bytes: the frames hashed into one word
    u32 pid;
    u32 kind;
    u64 site;
    char cause[64];
};
struct copy_t {
    u8 bytes[COPY_MAX + 16];  // + 16: a frame at any masked offset stays inside
};

BPF_HASH(known, u32, struct known_t, 1024);
BPF_HASH(full_counts, struct full_key_t, u64, 10240);
BPF_PERCPU_HASH(percpu_counts, struct full_key_t, u64, 10240);
BPF_HASH(site_counts, struct site_key_t, u64, 10240);
struct small_key_t {  // 16 bytes: frames and cause hashed into one word
    u32 pid;
    u32 kind;
    u64 site;
};
BPF_HASH(small_counts, struct small_key_t, u64, 10240);
BPF_ARRAY(one_count, u64, 1);
BPF_PERCPU_ARRAY(copies, struct copy_t, 1);

static __always_inline void read_cause(struct full_key_t *key, u64 cause_data) {
    u64 header[2] = {};
    bpf_probe_read_user(&header, sizeof(header), (void *)cause_data);
    u64 length = header[1];
    if (length > sizeof(key->cause) - 1)
        length = sizeof(key->cause) - 1;
    bpf_probe_read_user(&key->cause, length & 63, (void *)header[0]);
}

// The frames from bp on, a read each; the first `copied` bytes from bp come from `copy`.
static __always_inline void walk(struct full_key_t *key, u64 bp, int frames, u8 *copy,
                                 u64 copied) {
    u64 base = bp;
    for (int i = 0; i < FRAMES; i++) {
        if (i >= frames || bp == 0)
            break;
        u64 frame[2] = {};
        u64 offset = bp - base;
        if (copy && offset + 16 <= copied) {
            __builtin_memcpy(&frame, copy + (offset & (COPY_MAX - 1)), sizeof(frame));
        } else if (bpf_probe_read_user(&frame, sizeof(frame), (void *)bp) != 0) {
            break;
        }
        key->frames[i] = frame[1];
        bp = frame[0];
    }
}

static __always_inline int store_full(struct full_key_t *key) {
    u64 *n = full_counts.lookup(key);
    if (n) {
        __sync_fetch_and_add(n, 1);
        return 0;
    }
    u64 one = 1;
    full_counts.update(key, &one);
    return 0;
}

static __always_inline int store_percpu(struct full_key_t *key) {
    u64 *n = percpu_counts.lookup(key);
    if (n) {
        *n += 1;
        return 0;
    }
    u64 one = 1;
    percpu_counts.update(key, &one);
    return 0;
}

static __always_inline int store_site(struct full_key_t *key) {
    struct site_key_t site = {.pid = key->pid, .kind = key->kind, .site = 0xcbf29ce484222325ULL};
    for (int i = 0; i < FRAMES; i++)
        site.site = (site.site ^ key->frames[i]) * 0x100000001b3ULL;
    __builtin_memcpy(&site.cause, &key->cause, sizeof(site.cause));
    u64 *n = site_counts.lookup(&site);
    if (n) {
        __sync_fetch_and_add(n, 1);
        return 0;
    }
    u64 one = 1;
    site_counts.update(&site, &one);
    return 0;
}

static __always_inline u64 mix(u64 h, u64 word) {
    h = (h ^ word) * 0x9e3779b97f4a7c15ULL;
    return h ^ (h >> 29);
}

static __always_inline int store_small(struct full_key_t *key) {
    struct small_key_t small = {.pid = key->pid, .kind = key->kind, .site = 0};
    for (int i = 0; i < FRAMES; i++)
        small.site = mix(small.site, key->frames[i]);
    if (key->cause[0]) {
        u64 *words = (u64 *)key->cause;
        for (int i = 0; i < sizeof(key->cause) / 8; i++)
            small.site = mix(small.site, words[i]);
    }
    u64 *n = small_counts.lookup(&small);
    if (n) {
        __sync_fetch_and_add(n, 1);
        return 0;
    }
    u64 one = 1;
    small_counts.update(&small, &one);
    return 0;
}

static __always_inline int store_array(struct full_key_t *key) {
    u32 zero = 0;
    u64 *n = one_count.lookup(&zero);
    if (n)
        __sync_fetch_and_add(n, 1);
    return 0;
}

int p_empty(struct pt_regs *ctx) { return 0; }

#define STACK_HELPER 100
#define STORE_NONE 0
#define STORE_FULL 1
#define STORE_PERCPU 2
#define STORE_SITE 3
#define STORE_ARRAY 4
#define STORE_SMALL 5

// cause: read the cause's spill slot; frames: how many to walk; span: 0, a read
// per frame, else bytes read at once from the frame pointer (the spill slot and
// the frames inside them come from that copy).
static __always_inline int variant(struct pt_regs *ctx, int lookup, int cause, int frames,
                                   u64 span, int store) {
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    struct known_t constant = {};
    struct known_t *k = &constant;
    if (lookup) {
        k = known.lookup(&pid);
        if (!k)
            return 0;
    }
    struct full_key_t key = {.pid = pid};
    u64 err_type = ctx->bx, err_data = ctx->cx;
    if (err_data == k->canceled_data)
        key.kind = 2;
    else if (err_type == k->deadline_type)
        key.kind = 1;
    u8 *copy = 0;
    u64 spill[2] = {};
    if (span) {
        u32 zero = 0;
        copy = (u8 *)copies.lookup(&zero);
        if (!copy || bpf_probe_read_user(copy, span, (void *)ctx->bp) != 0)
            return 0;
        __builtin_memcpy(&spill, copy + CAUSE_SPILL_OFFSET, sizeof(spill));
    } else if (cause) {
        bpf_probe_read_user(&spill, sizeof(spill), (void *)(ctx->bp + CAUSE_SPILL_OFFSET));
    }
    if (spill[0] == k->errors_new_itab && spill[1] != 0 && spill[1] != err_data)
        read_cause(&key, spill[1]);
    if (frames == STACK_HELPER) {
        // The kernel's own frame-pointer walk: [0] is the probed address.
        u64 stack[FRAMES + 1] = {};
        bpf_get_stack(ctx, &stack, sizeof(stack), BPF_F_USER_STACK);
        __builtin_memcpy(&key.frames, &stack[1], sizeof(key.frames));
    } else {
        walk(&key, ctx->bp, frames, copy, span);
    }
    if (store == STORE_FULL)
        return store_full(&key);
    if (store == STORE_PERCPU)
        return store_percpu(&key);
    if (store == STORE_SITE)
        return store_site(&key);
    if (store == STORE_ARRAY)
        return store_array(&key);
    if (store == STORE_SMALL)
        return store_small(&key);
    return 0;
}

int p_pid(struct pt_regs *ctx) { return variant(ctx, 0, 0, 0, 0, STORE_NONE); }
int p_known(struct pt_regs *ctx) { return variant(ctx, 1, 0, 0, 0, STORE_NONE); }
int p_cause(struct pt_regs *ctx) { return variant(ctx, 1, 1, 0, 0, STORE_NONE); }
int p_walk1(struct pt_regs *ctx) { return variant(ctx, 1, 1, 1, 0, STORE_NONE); }
int p_walk2(struct pt_regs *ctx) { return variant(ctx, 1, 1, 2, 0, STORE_NONE); }
int p_walk4(struct pt_regs *ctx) { return variant(ctx, 1, 1, 4, 0, STORE_NONE); }
int p_walk8(struct pt_regs *ctx) { return variant(ctx, 1, 1, 8, 0, STORE_NONE); }
int p_full(struct pt_regs *ctx) { return variant(ctx, 1, 1, 8, 0, STORE_FULL); }
int p_percpu(struct pt_regs *ctx) { return variant(ctx, 1, 1, 8, 0, STORE_PERCPU); }
int p_site(struct pt_regs *ctx) { return variant(ctx, 1, 1, 8, 0, STORE_SITE); }
int p_array(struct pt_regs *ctx) { return variant(ctx, 1, 1, 8, 0, STORE_ARRAY); }
int p_walk0_full(struct pt_regs *ctx) { return variant(ctx, 1, 1, 0, 0, STORE_FULL); }
int p_nolookup_full(struct pt_regs *ctx) { return variant(ctx, 0, 1, 8, 0, STORE_FULL); }
int p_span128(struct pt_regs *ctx) { return variant(ctx, 1, 1, 8, 128, STORE_NONE); }
int p_span256(struct pt_regs *ctx) { return variant(ctx, 1, 1, 8, 256, STORE_NONE); }
int p_span512(struct pt_regs *ctx) { return variant(ctx, 1, 1, 8, 512, STORE_NONE); }
int p_span1024(struct pt_regs *ctx) { return variant(ctx, 1, 1, 8, 1024, STORE_NONE); }
int p_span2048(struct pt_regs *ctx) { return variant(ctx, 1, 1, 8, 2048, STORE_NONE); }
int p_span4096(struct pt_regs *ctx) { return variant(ctx, 1, 1, 8, 4096, STORE_NONE); }
int p_helper(struct pt_regs *ctx) { return variant(ctx, 1, 1, STACK_HELPER, 0, STORE_NONE); }
int p_span512_full(struct pt_regs *ctx) { return variant(ctx, 1, 1, 8, 512, STORE_FULL); }
int p_uread16(struct pt_regs *ctx) {
    u64 spill[2] = {};
    bpf_probe_read_user(&spill, sizeof(spill), (void *)(ctx->bp + CAUSE_SPILL_OFFSET));
    return spill[0] == 7;
}
int p_kread16(struct pt_regs *ctx) {
    u64 words[2] = {};
    bpf_probe_read_kernel(&words, sizeof(words), (void *)ctx);
    return words[0] == 7;
}
int p_uread2048(struct pt_regs *ctx) {
    u32 zero = 0;
    u8 *copy = (u8 *)copies.lookup(&zero);
    if (!copy)
        return 0;
    bpf_probe_read_user(copy, 2048, (void *)ctx->bp);
    return copy[0] == 7;
}
int p_span2048_small(struct pt_regs *ctx) { return variant(ctx, 1, 1, 8, 2048, STORE_SMALL); }
int p_known_small(struct pt_regs *ctx) { return variant(ctx, 1, 0, 0, 0, STORE_SMALL); }
"""

# (label, program): cumulative first, then alternatives.
_VARIANTS = [
    ("empty program (the statistics' own cost)", "p_empty"),
    ("+ pid, kind from constants", "p_pid"),
    ("+ `known` lookup (pid -> the process's error values)", "p_known"),
    ("+ cause spill-slot read (1 read)", "p_cause"),
    ("+ frame walk, 1 frame", "p_walk1"),
    ("+ frame walk, 2 frames", "p_walk2"),
    ("+ frame walk, 4 frames", "p_walk4"),
    ("+ frame walk, 8 frames (a read each)", "p_walk8"),
    ("+ count: hash, 136-byte key, lookup + atomic add", "p_full"),
    ("8 frames, per-CPU hash (136-byte key)", "p_percpu"),
    ("8 frames, hash with an 80-byte key (frames hashed to a word)", "p_site"),
    ("8 frames, an array slot (any map update's floor)", "p_array"),
    ("no walk, 136-byte hash", "p_walk0_full"),
    ("no `known` lookup, 8 frames, 136-byte hash", "p_nolookup_full"),
    ("spill slot + 8 frames from one 128-byte read", "p_span128"),
    ("spill slot + 8 frames from one 256-byte read", "p_span256"),
    ("spill slot + 8 frames from one 512-byte read", "p_span512"),
    ("spill slot + 8 frames from one 1024-byte read", "p_span1024"),
    ("spill slot + 8 frames from one 2048-byte read", "p_span2048"),
    ("spill slot + 8 frames from one 4096-byte read", "p_span4096"),
    ("spill slot read + 8 frames by bpf_get_stack", "p_helper"),
    ("one 512-byte read + 136-byte hash", "p_span512_full"),
    (
        "one 2048-byte read + hash with a 16-byte key (frames and cause hashed to a word)",
        "p_span2048_small",
    ),
    (
        "no read of user memory: pid, `known` lookup, 16-byte-key hash (counting without naming)",
        "p_known_small",
    ),
    ("one 16-byte read of user memory alone (bpf_probe_read_user)", "p_uread16"),
    ("one 16-byte read of kernel memory alone (bpf_probe_read_kernel)", "p_kread16"),
    ("one 2048-byte read of user memory alone", "p_uread2048"),
]
_AGENT = "go_probe.c as loaded by the agent (a storm: named within the budget)"
_AGENT_ALL = "go_probe.c naming every cancel (no naming budget)"
_AGENT_CAUSE = "go_probe.c naming every cancel, cancels with a cause"


@dataclass
class Measured:
    ns_per_run: float
    runs: int


def _run(
    binary: Path,
    fd_of: Callable[[int], int],
    attach: Callable[[int], Callable[[], None]],
    *,
    cancels: int,
    causes: int = 0,
) -> Measured:
    """One process: attach, run its cancels with the kernel's statistics on, detach."""
    with program(binary, cancels=cancels, noops=0, causes=causes) as proc:
        detach = attach(proc.pid)
        try:
            fd = fd_of(proc.pid)
            time0, runs0 = prog_stats(fd)
            with bpf_stats(True):
                timed(proc)
            time1, runs1 = prog_stats(fd)
        finally:
            detach()
    runs = runs1 - runs0
    return Measured((time1 - time0) / runs if runs else 0.0, runs)


def _part(
    bpf: Any, site: ProbeSite, binary: Path, elf: Binary, name: str, pid: int
) -> Callable[[], None]:
    known = bpf[b"known"]
    known[known.Key(pid)] = known.Leaf(*known_values(pid, elf, load_bias(pid, elf)))
    path = str(binary).encode()
    bpf.attach_uprobe(name=path, addr=site.address, fn_name=name.encode(), pid=pid)
    return lambda: bpf.detach_uprobe(name=path, addr=site.address, pid=pid)


def _agent(
    elf: Binary, probes: dict[int, GoProbe], pid: int, *, named: int | None = NAMED_PER_WINDOW
) -> Callable[[], None]:
    probe = probes[pid] = GoProbe(
        elf,
        exe=f"/proc/{pid}/exe",
        on_cancel=lambda _: None,
        on_lost=lambda *_: None,
        named_per_window=named,
    )
    return probe.close


def known_values(pid: int, binary: Binary, bias: int) -> tuple[int, int, int, int]:
    """The parts' known_t for a process: its context errors' words, read from its memory
    (the agent's program reads them itself, in the kernel)."""

    def global_words(symbol: str) -> tuple[int, int]:
        address, _ = binary.symbols[symbol]
        raw = read_memory(pid, address + bias, 16)
        return int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little")

    canceled_itab, canceled_data = global_words(CANCELED_SYMBOL)
    deadline_itab, _ = global_words(DEADLINE_SYMBOL)
    # An itab's second word is the dynamic type, what an `any` carries.
    deadline_type = int.from_bytes(read_memory(pid, deadline_itab + 8, 8), "little")
    return canceled_data, canceled_itab, deadline_itab, deadline_type


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cancels", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("agent_program_profile: needs root for BPF; skipped", file=sys.stderr)
        return 0
    from bcc import BPF

    binary = binaries.go_program(
        PROGRAM, name="test-cancels", progress=lambda line: print(line, file=sys.stderr)
    )
    elf = read_binary(binary)
    start, size = elf.symbols[CANCEL_SYMBOL]
    site = find_site(elf, read_code(binary, start, size))
    if site.function != "on_store":
        print(
            f"agent_program_profile: the agent would probe the entry ({site.why})", file=sys.stderr
        )
        return 1
    bpf = BPF(text=_PARTS)
    n = args.cancels
    probes: dict[int, GoProbe] = {}

    def agent_fd(pid: int) -> int:
        probe = probes[pid]
        return probe.bpf.funcs[probe.site.function.encode()].fd

    runs: dict[str, Callable[[], Measured]] = {
        label: partial(
            _run,
            binary,
            lambda _, name=name: bpf.funcs[name.encode()].fd,
            partial(_part, bpf, site, binary, elf, name),
            cancels=n,
        )
        for label, name in _VARIANTS
    }
    runs[_AGENT] = partial(_run, binary, agent_fd, partial(_agent, elf, probes), cancels=n)
    naming_all = partial(_agent, elf, probes, named=None)
    runs[_AGENT_ALL] = partial(_run, binary, agent_fd, naming_all, cancels=n)
    runs[_AGENT_CAUSE] = partial(_run, binary, agent_fd, naming_all, cancels=0, causes=n)
    measured: dict[str, list[Measured]] = {label: [] for label in runs}
    for index in range(args.rounds):
        labels = list(runs) if index % 2 == 0 else list(reversed(runs))
        for label in labels:
            measured[label].append(runs[label]())
        print(f"round {index + 1} done", file=sys.stderr)
    cumulative = [label for label, _ in _VARIANTS[:9]]
    rows = []
    for label in runs:
        values = [m.ns_per_run for m in measured[label]]
        added = ""
        if label in cumulative[1:]:
            before = measured[cumulative[cumulative.index(label) - 1]]
            steps = [v - b.ns_per_run for v, b in zip(values, before, strict=True)]
            added = f"{statistics.median(steps):+.0f}"
        counted = sorted({m.runs for m in measured[label]})
        rows.append([label, _spread(values), added, "/".join(str(c) for c in counted)])
    header = ["program", "ns per run, median (min-max)", "added (median)", "runs per round"]
    for row in (header, *rows):
        print(" | ".join(row))
    median = {label: statistics.median(m.ns_per_run for m in measured[label]) for label in runs}

    def at(index: int) -> float:
        return median[_VARIANTS[index][0]]

    def step(later: int, earlier: int) -> float:
        """What row `later` adds to row `earlier`: the median of the per-round differences."""
        pairs = zip(measured[_VARIANTS[later][0]], measured[_VARIANTS[earlier][0]], strict=True)
        return statistics.median(a.ns_per_run - b.ns_per_run for a, b in pairs)

    notes = [
        "Kernel BPF statistics (run_time_ns / run_cnt) per program, each attached alone at "
        "the agent's probe site: `.venv/bin/python bench/agent_program_profile.py` (root). "
        "Rows starting with + add one part to the row above; together they are the agent's "
        "program before this profile. The workload's stack has 5 frames at the probe, so "
        "the walk stops there.",
        f"Where the time went: each bpf_probe_read_user of user memory "
        f"({step(3, 2):.0f} ns for the spill slot's 16 bytes; "
        f"{step(7, 3):.0f} ns for the 5 frames a read each), then the count in the hash "
        f"({step(8, 7):.0f} ns), the `known` hash lookup ({step(2, 1):.0f} ns); "
        f"the statistics' own clock reads {at(0):.0f} ns. A read costs about the same "
        f"whatever its size (spill slot + 5 frames from one 2048-byte read: {at(18):.0f} ns, "
        f"against {at(7):.0f} ns a read each); bpf_get_stack costs more ({at(20):.0f} ns); "
        f"other counters: per-CPU hash {at(9):.0f}, 80-byte key {at(10):.0f}, array slot "
        f"{at(11):.0f}, against {at(8):.0f} ns (runs of this script differ by up to "
        f"~100 ns on this shared machine: not enough for a conclusion on the counter).",
        f"So the agent's program reads the stack in 2048-byte spans, keeps each process's "
        f"known values in a per-pid hash (one program per binary) with each CPU's copy of "
        f"the last one's in front of it (a storm skips the lookup) and keys its counts by "
        f"pid, kind and one word hashing frames and cause: {at(8):.0f} -> "
        f"{median[_AGENT_ALL]:.0f} ns per cancel named "
        f"({median[_AGENT_CAUSE]:.0f} ns with a cause, "
        f"which needs two more reads). Its parts, each the median of the per-round "
        f"differences: the statistics {at(0):.0f}, the pid and kind {step(1, 0):+.0f}, the "
        f"`known` lookup {step(2, 1):+.0f}, one 2048-byte read of the stack and the walk in "
        f"it {step(18, 2):+.0f}, the count with a 16-byte key {step(22, 18):+.0f} "
        f"(136-byte key: {step(8, 7):+.0f}). The read is the floor of naming the caller: "
        f"one read of even 16 bytes costs {step(3, 2):+.0f} ({at(24) - at(0):+.0f} alone, "
        f"where 16 bytes of kernel memory cost {at(25) - at(0):+.0f} and 2048 bytes of "
        f"user memory {at(26) - at(0):+.0f}). Without it (every cancel "
        f"counted by pid and kind, nothing named): {at(23):.0f} ns, {at(23) - at(0):.0f} "
        f"above the empty program.",
        f"So each CPU names the first {NAMED_PER_WINDOW} cancels of every 10 ms and counts "
        f"the rest by pid and kind (`unnamed`): in this storm {median[_AGENT]:.0f} ns per "
        f"cancel, {median[_AGENT] - at(0):.0f} above the empty program "
        f"(naming every one: {median[_AGENT_ALL] - at(0):.0f} above).",
    ]
    write_fragment(
        "agent_program_profile",
        title=f"Node agent: where its BPF program's time goes ({n} cancels x {args.rounds} rounds)",
        header=header,
        rows=rows,
        notes=notes,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
