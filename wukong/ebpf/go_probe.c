// Counts a Go program's context cancellations in the kernel.
//
// One program per binary (inode): the uprobe is attached to the file, so every
// process that runs it, the ones started after the agent included, is covered
// from its first instruction. What differs per process (where PIE placed it, its
// context errors' addresses) is read here, in the kernel, the first time a process
// cancels, and kept in `processes` (and in each CPU's copy of the last process
// that cancelled there); the agent's filter marks the processes it does not
// trace in `processes` (`denied`), so they cost one lookup and count nowhere.
//
// Each cancellation increments a counter keyed by what names it (pid, kind,
// call site, cause text); the agent reads the counts map on a timer, so the counts
// are exact whatever the rate and nothing crosses to user space per event.
// Only the first occurrence of a key is also written to a ring buffer (with
// its time, thread and whole stack), without waking the reader: the agent drains it when
// it reads the counts. What cannot be counted (a full map) is counted in
// `lost`, so a loss is never silent.
//
// Naming a cancellation (reading the stack, walking its frames, reading the
// cause) costs several times what counting it does. Each CPU names the first
// `named_per_window` cancellations of every NAMING_WINDOW_NS; in a storm the
// rest are counted by pid and kind only (`unnamed`): the total per process and
// kind stays exact, the split by caller and by what needs the stack (a root
// cancel or a parent's) is the named sample's. At the rates of ordinary work
// every cancellation is named.
//
// Two probe points, both in context.(*cancelCtx).cancel (the loader picks):
//
// on_store, preferred: the call to c.err.Store(err), which only an effective
// cancellation reaches (`if c.err.Load() != nil { return }` comes first), so a
// cancel() of an already cancelled context costs no trap at all. The call's
// arguments are Go ABI facts: AX = &c.err, BX/CX = err as an `any` (type,
// data). The cause was spilled by the prologue to its ABI spill slot, found
// from the frame pointer (the loader checks the prologue does so). At this
// point the function has its frame, so the frame-pointer walk starts at its caller.
//
// on_entry, the fallback when that call cannot be located: an entry uprobe.
// Go's register ABI (amd64) passes cancel(removeFromParent bool, err, cause
// error) as receiver AX, removeFromParent BX, err (itab, data) CX/DI, cause
// (itab, data) SI/R8. Already cancelled contexts are skipped by reading
// cancelCtx.err. Entry only: a uretprobe rewrites the return address on the
// goroutine stack, which Go moves, and crashes the program.
#include <uapi/linux/ptrace.h>

// Offset of cancelCtx.err (an atomic.Value since Go 1.22, an error before;
// either way a non-zero first word once the context is cancelled), Go >= 1.21:
// Context (16) + mu (8) + done (16) + children (8).
#define CANCEL_CTX_ERR_OFFSET 48
// From the frame pointer of cancel: saved BP, return address, then the ABI
// spill slots (receiver, removeFromParent, err itab, err data, cause itab, cause data).
#define CAUSE_SPILL_OFFSET 0x30
// An entry uprobe can fire twice for one call: when a signal (Go preempts goroutines
// with SIGURG) lands while the kernel single-steps the probed instruction, the
// instruction restarts and the probe fires again. Same thread, same receiver,
// microseconds apart: one call. A new context at the same address needs a GC
// cycle in between, far longer than this.
#define REFIRE_WINDOW_NS 200000
// Each CPU's naming budget is renewed this often (the number: `named_per_window`).
#define NAMING_WINDOW_NS 10000000

// The binary's facts, set by the agent before it attaches: ELF addresses.
struct binary_t {
    u64 site;            // the probed instruction
    u64 canceled;        // context.Canceled (an error: itab, data)
    u64 deadline;        // context.DeadlineExceeded (an error: itab, data)
};

// One process's values of the context errors, read from its memory.
struct known_t {
    u64 canceled_data;   // context.Canceled: data word
    u64 errors_new_itab; // context.Canceled: itab of *errors.errorString
    u64 deadline_itab;   // context.DeadlineExceeded: itab (entry: err is an error)
    u64 deadline_type;   // its dynamic type (store: err is passed as an any)
    u64 denied;          // 1: a process the agent does not trace (its filter)
    u64 bias;            // where PIE placed the binary: 0 unless PIE
    u64 since;           // when this entry was made (CLOCK_MONOTONIC): older than
                         // the process's last exec, it is of its previous program
};

// The key names a call site by its innermost return addresses, read along
// the frame pointers: a few loads, where a full stack walk (get_stackid) cost
// more than the trap itself here. The full stack is taken once per key.
#define KEY_FRAMES 8

// A cancellation as the program names it; in the counts map, with how many
// were named alike.
struct cancel_t {
    u32 pid;
    u32 kind;            // 1 deadline exceeded, 2 canceled, 0 another error
    u64 frames[KEY_FRAMES];  // return addresses: cancel's caller first
    char cause[64];      // an errors.New cause's text
    u64 n;
};

// What the counts map is keyed by: the frames and the cause hashed into one
// word, so each cancellation hashes and compares 16 bytes, not the 136 that
// name it (they cost the kernel's hash more than the rest of the count). Two
// names of one process and kind with the same word would share a count: a
// 64-bit mix of return addresses and text, not a thing that happens by chance.
struct count_key_t {
    u32 pid;
    u32 kind;
    u64 site;            // frames and cause, hashed
};

struct detail_t {
    struct cancel_t cancel;
    u64 ktime_ns;
    u64 receiver;
    s64 stack_id;        // the whole stack, from the probed function outwards
    u32 tid;
    u32 pad;
};

// What the walk reads of the stack at once: a power of two (masked offsets).
#define STACK_SPAN 2048

struct stack_span_t {
    u64 owner;                   // the thread whose run wrote it last
    u64 start;                   // user address of bytes[0]; 0: could not be read
    u8 bytes[STACK_SPAN + 16];   // + 16: a frame at any masked offset stays inside
};

// A cancellation counted without its name: past its CPU's naming budget.
struct unnamed_key_t {
    u32 pid;
    u32 kind;
};

struct naming_budget_t {
    u64 window;          // when this CPU's current window began
    u64 named;           // cancellations named in it
};

struct last_fire_t {
    u64 receiver;
    u64 ktime_ns;
};

// The values of the process that last cancelled on this CPU, so a storm's
// cancellations skip the `processes` lookup. Trusted only whole and current:
// `check` mixes every other word, so a copy half written by a run this one
// preempted (a uprobe program can be) fails it, and a copy made before the
// agent last changed `processes` (deny, reset, forget) has an older generation.
struct recent_t {
    u32 pid;
    u32 pad;
    u64 generation;
    struct known_t known;
    u64 check;
};

#define MAX_PROCESSES 8192
BPF_ARRAY(binary, struct binary_t, 1);
BPF_HASH(processes, u32, struct known_t, MAX_PROCESSES);
BPF_HASH(counts, struct count_key_t, struct cancel_t, 10240);
BPF_HASH(unnamed, struct unnamed_key_t, u64, 10240);
// Set by the agent: how many cancellations each CPU names per window.
BPF_ARRAY(named_per_window, u64, 1);
BPF_PERCPU_ARRAY(naming_budget, struct naming_budget_t, 1);
BPF_TABLE("lru_hash", u32, struct last_fire_t, last_fire, 4096);
// Whole stacks of first occurrences only: a key whose stack finds no room is
// named from its own frames (its caller is among them). 2,048 x 127 frames: 2 MiB.
BPF_STACK_TRACE(stacks, 2048);
BPF_PERCPU_ARRAY(stack_span, struct stack_span_t, 1);  // too big for the BPF stack
BPF_PERCPU_ARRAY(recent, struct recent_t, 1);
// Bumped by the agent after each change it makes to `processes`.
BPF_ARRAY(generation, u64, 1);
BPF_RINGBUF_OUTPUT(details, 8);
// 0: cancellations not counted (counts or unnamed map full); 1: details not written (ring
// full); 2: processes whose values could not be kept (processes map full: they
// are read again on each cancellation, and the agent's filter cannot mark them).
BPF_ARRAY(lost, u64, 3);

static __always_inline void add_lost(int what) {
    u64 *n = lost.lookup(&what);
    if (n)
        __sync_fetch_and_add(n, 1);
}

static __always_inline u64 mix(u64 h, u64 word) {
    h = (h ^ word) * 0x9e3779b97f4a7c15ULL;
    return h ^ (h >> 29);
}

// The process's values: kept from its first cancellation on. The binary's
// addresses plus where this process placed it (the probe's own address minus
// the probed instruction's ELF address: 0 unless PIE), into `scratch`; -1:
// the binary's addresses are not set yet.
static __always_inline int lookup_process(struct pt_regs *ctx, u32 pid, struct known_t *scratch) {
    struct known_t *k = processes.lookup(&pid);
    if (k) {
        __builtin_memcpy(scratch, k, sizeof(*scratch));
        return 0;
    }
    u32 zero = 0;
    struct binary_t *b = binary.lookup(&zero);
    if (!b || !b->site)
        return -1;
    u64 bias = PT_REGS_IP(ctx) - b->site;
    u64 canceled[2] = {};
    bpf_probe_read_user(&canceled, sizeof(canceled), (void *)(b->canceled + bias));
    u64 deadline_itab = 0;
    bpf_probe_read_user(&deadline_itab, sizeof(deadline_itab), (void *)(b->deadline + bias));
    scratch->canceled_data = canceled[1];
    scratch->errors_new_itab = canceled[0];
    scratch->deadline_itab = deadline_itab;
    scratch->deadline_type = 0;
    scratch->denied = 0;
    scratch->bias = bias;
    scratch->since = bpf_ktime_get_ns();
    // An itab's second word is the dynamic type, what an `any` carries.
    if (deadline_itab)
        bpf_probe_read_user(&scratch->deadline_type, sizeof(u64), (void *)(deadline_itab + 8));
    if (processes.insert(&pid, scratch) != 0) {
        k = processes.lookup(&pid);  // another thread of it inserted them first
        if (k)
            __builtin_memcpy(scratch, k, sizeof(*scratch));
        else
            add_lost(2);
    }
    return 0;
}

static __always_inline u64 recent_check(struct recent_t *r) {
    u64 *words = (u64 *)r;
    u64 h = 0;
#pragma unroll
    for (int i = 0; i < sizeof(*r) / 8 - 1; i++)  // every word but `check`
        h = mix(h, words[i]);
    return h;
}

// The process's values, from this CPU's copy when it is of this process, whole
// and current, else from `processes` (and copied for the next cancellation).
static __always_inline struct known_t *process_values(struct pt_regs *ctx, u32 pid,
                                                      struct recent_t *scratch) {
    u32 zero = 0;
    u64 *generation_now = generation.lookup(&zero);
    struct recent_t *copy = recent.lookup(&zero);
    if (!generation_now || !copy)
        return 0;
    u64 current = *generation_now;  // before `processes` is read: a change after it is seen next time
    __builtin_memcpy(scratch, copy, sizeof(*scratch));
    if (scratch->pid == pid && scratch->generation == current &&
        scratch->check == recent_check(scratch))
        return &scratch->known;
    if (lookup_process(ctx, pid, &scratch->known) != 0)
        return 0;
    scratch->pid = pid;
    scratch->pad = 0;
    scratch->generation = current;
    scratch->check = recent_check(scratch);
    __builtin_memcpy(copy, scratch, sizeof(*scratch));
    return &scratch->known;
}

// Whether this CPU may still name a cancellation in its current window. A run
// that preempts another may see the budget half updated: one more or one fewer named.
static __always_inline int may_name(u64 now) {
    u32 zero = 0;
    u64 *limit = named_per_window.lookup(&zero);
    struct naming_budget_t *budget = naming_budget.lookup(&zero);
    if (!limit || !budget)
        return 1;
    if (now - budget->window >= NAMING_WINDOW_NS) {
        budget->window = now;
        budget->named = 0;
    }
    if (budget->named >= *limit)
        return 0;
    budget->named++;
    return 1;
}

// Counted by pid and kind alone: what a storm costs past the naming budget.
static __always_inline int count_unnamed(u32 pid, u32 kind) {
    struct unnamed_key_t key = {.pid = pid, .kind = kind};
    u64 *n = unnamed.lookup(&key);
    if (n) {
        __sync_fetch_and_add(n, 1);
        return 0;
    }
    u64 one = 1;
    if (unnamed.insert(&key, &one) != 0) {
        n = unnamed.lookup(&key);  // another CPU inserted it first
        if (n)
            __sync_fetch_and_add(n, 1);
        else
            add_lost(0);
    }
    return 0;
}

static __always_inline int refired(u32 tid, u64 receiver, u64 now) {
    struct last_fire_t *last = last_fire.lookup(&tid);
    if (last && last->receiver == receiver && now - last->ktime_ns < REFIRE_WINDOW_NS)
        return 1;
    struct last_fire_t fire = {.receiver = receiver, .ktime_ns = now};
    last_fire.update(&tid, &fire);
    return 0;
}

static __always_inline void read_cause(struct cancel_t *key, u64 cause_data) {
    // *errors.errorString{s string}: a pointer and a length.
    u64 header[2] = {};
    bpf_probe_read_user(&header, sizeof(header), (void *)cause_data);
    u64 length = header[1];
    if (length > sizeof(key->cause) - 1)
        length = sizeof(key->cause) - 1;
    bpf_probe_read_user(&key->cause, length & 63, (void *)header[0]);
}

// Go keeps frame pointers on amd64: [bp] is the caller's bp, [bp+8] the return
// address, and callers' frames lie above. The stack is read in spans of
// STACK_SPAN bytes, not a frame at a time: a read of user memory costs about
// the same whatever its size and far more than the rest of the program
// (bench/agent_program_profile.py), and one span from the frame pointer
// usually holds the cause's spill slot and every key frame.
//
// The span lives in a per-CPU map (too big for the BPF stack). A uprobe
// program can be preempted, and another thread's run on the same CPU then
// takes the span: each run claims it (`owner`) before writing, and checks
// after each copy out of it that it still owns it, else reads alone.
static __always_inline void claim(struct stack_span_t *span, u64 owner, u64 from) {
    span->owner = owner;
    span->start = 0;
    asm volatile("" ::: "memory");  // claimed before the bytes are written
    if (from && bpf_probe_read_user(span->bytes, STACK_SPAN, (void *)from) == 0)
        span->start = from;  // else past the stack's mapping: frames are read one by one
}

// The 16 bytes at `at`: from the span when it holds them, else from a new span
// there; alone once a span could not be read.
static __always_inline int read16(struct stack_span_t *span, u64 owner, u64 at, u64 out[2]) {
    u64 offset = at - span->start;
    if (span->start != 0 && offset > STACK_SPAN - 16) {
        claim(span, owner, at);
        offset = 0;
    }
    if (span->start != 0) {
        __builtin_memcpy(out, span->bytes + (offset & (STACK_SPAN - 1)), 16);
        asm volatile("" ::: "memory");  // copied before the owner is checked
        if (span->owner == owner)
            return 0;
    }
    return bpf_probe_read_user(out, 16, (void *)at);
}

static __always_inline void walk(struct cancel_t *key, struct stack_span_t *span, u64 owner,
                                 u64 bp, int first) {
#pragma unroll
    for (int i = first; i < KEY_FRAMES; i++) {
        u64 frame[2] = {};
        if (bp == 0 || read16(span, owner, bp, frame) != 0)
            break;
        key->frames[i] = frame[1];
        bp = frame[0];
    }
}

static __always_inline struct stack_span_t *stack_at(u64 owner, u64 bp) {
    u32 zero = 0;
    struct stack_span_t *span = stack_span.lookup(&zero);
    if (span)
        claim(span, owner, bp);
    return span;
}

static __always_inline int count(struct pt_regs *ctx, struct cancel_t *key, u64 receiver,
                                 u32 tid, u64 now) {
    struct count_key_t small = {.pid = key->pid, .kind = key->kind, .site = 0};
#pragma unroll
    for (int i = 0; i < KEY_FRAMES; i++)
        small.site = mix(small.site, key->frames[i]);
    if (key->cause[0]) {
        u64 *words = (u64 *)key->cause;
#pragma unroll
        for (int i = 0; i < sizeof(key->cause) / 8; i++)
            small.site = mix(small.site, words[i]);
    }
    struct cancel_t *n = counts.lookup(&small);
    if (n) {
        __sync_fetch_and_add(&n->n, 1);
        return 0;
    }
    key->n = 1;
    if (counts.insert(&small, key) != 0) {
        n = counts.lookup(&small);  // another CPU inserted it first
        if (n)
            __sync_fetch_and_add(&n->n, 1);
        else
            add_lost(0);
        return 0;
    }
    // Made in the ring buffer itself: the BPF stack has no room for it.
    struct detail_t *detail = details.ringbuf_reserve(sizeof(struct detail_t));
    if (!detail) {
        add_lost(1);
        return 0;
    }
    __builtin_memcpy(&detail->cancel, key, sizeof(*key));
    detail->ktime_ns = now;
    detail->receiver = receiver;
    detail->stack_id = stacks.get_stackid(ctx, BPF_F_USER_STACK);
    detail->tid = tid;
    detail->pad = 0;
    details.ringbuf_submit(detail, BPF_RB_NO_WAKEUP);
    return 0;
}

int on_store(struct pt_regs *ctx) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 pid = pid_tgid >> 32;
    struct recent_t scratch;
    struct known_t *k = process_values(ctx, pid, &scratch);
    if (!k || k->denied)
        return 0;
    struct cancel_t key = {.pid = pid};
    u64 err_type = ctx->bx, err_data = ctx->cx;
    if (err_data == k->canceled_data)
        key.kind = 2;
    else if (err_type == k->deadline_type)
        key.kind = 1;
    u64 now = bpf_ktime_get_ns();
    if (!may_name(now))
        return count_unnamed(pid, key.kind);
    struct stack_span_t *span = stack_at(pid_tgid, ctx->bp);  // the spill slot is in it too
    if (!span)
        return 0;
    u64 cause[2] = {};
    read16(span, pid_tgid, ctx->bp + CAUSE_SPILL_OFFSET, cause);
    if (cause[0] == k->errors_new_itab && cause[1] != 0 && cause[1] != err_data)
        read_cause(&key, cause[1]);
    walk(&key, span, pid_tgid, ctx->bp, 0);
    // A call instruction is emulated, not single-stepped: it cannot fire twice.
    return count(ctx, &key, ctx->ax - CANCEL_CTX_ERR_OFFSET, (u32)pid_tgid, now);
}

int on_entry(struct pt_regs *ctx) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 pid = pid_tgid >> 32;
    struct recent_t scratch;
    struct known_t *k = process_values(ctx, pid, &scratch);
    if (!k || k->denied)
        return 0;
    u64 err_word = 0;
    bpf_probe_read_user(&err_word, sizeof(err_word), (void *)(ctx->ax + CANCEL_CTX_ERR_OFFSET));
    if (err_word != 0)
        return 0;  // cancel() after the context had ended: not a cancellation
    struct cancel_t key = {.pid = pid};
    u64 err_itab = ctx->cx, err_data = ctx->di;
    if (err_data == k->canceled_data)
        key.kind = 2;
    else if (err_itab == k->deadline_itab)
        key.kind = 1;
    u64 now = bpf_ktime_get_ns();
    if (refired((u32)pid_tgid, ctx->ax, now))
        return 0;
    if (!may_name(now))
        return count_unnamed(pid, key.kind);
    if (ctx->si == k->errors_new_itab && ctx->r8 != 0 && ctx->r8 != err_data)
        read_cause(&key, ctx->r8);
    // At entry the frame pointer is still the caller's: the return address
    // (on top of the stack) names the caller, the walk goes on from there.
    bpf_probe_read_user(&key.frames[0], sizeof(u64), (void *)ctx->sp);
    struct stack_span_t *span = stack_at(pid_tgid, ctx->bp);
    if (!span)
        return 0;
    walk(&key, span, pid_tgid, ctx->bp, 1);
    return count(ctx, &key, ctx->ax, (u32)pid_tgid, now);
}
