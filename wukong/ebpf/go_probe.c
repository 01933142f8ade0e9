// An entry uprobe on context.(*cancelCtx).cancel in a Go program.
//
// Entry only: a uretprobe rewrites the return address on the goroutine
// stack, which Go moves, and crashes the program. Go's register ABI (amd64)
// passes the arguments of cancel(removeFromParent bool, err, cause error) as:
//   receiver *cancelCtx   AX
//   removeFromParent      BX
//   err  (itab, data)     CX, DI
//   cause (itab, data)    SI, R8
// DeadlineExceeded and Canceled are told apart by comparing err with the
// values of the context.DeadlineExceeded / context.Canceled globals, which
// the loader reads from the process and stores in `known` per pid.
#include <uapi/linux/ptrace.h>

// Offset of cancelCtx.err (an atomic.Value since Go 1.22, an error before;
// either way a non-zero first word once the context is cancelled), Go >= 1.21:
// Context (16) + mu (8) + done (16) + children (8).
#define CANCEL_CTX_ERR_OFFSET 48

struct known_t {
    u64 canceled_data;   // context.Canceled: data word
    u64 errors_new_itab; // context.Canceled: itab of *errors.errorString
    u64 deadline_itab;   // context.DeadlineExceeded: itab
};

struct go_event_t {
    u64 receiver;
    u64 ktime_ns;
    u64 return_address;  // the immediate caller: at entry it is only on the stack
    u32 tid;
    u32 pid;
    u32 kind;            // 1 deadline exceeded, 2 canceled, 0 another error
    u32 remove_from_parent;
    u32 already_cancelled;
    s64 stack_id;
    char cause[64];
};

BPF_HASH(known, u32, struct known_t, 1024);
BPF_STACK_TRACE(stacks, 8192);
BPF_PERF_OUTPUT(go_events);

int on_cancel(struct pt_regs *ctx) {
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    struct known_t *k = known.lookup(&pid);
    if (!k)
        return 0;
    struct go_event_t event = {};
    event.pid = pid;
    event.tid = (u32)bpf_get_current_pid_tgid();
    event.receiver = ctx->ax;
    event.ktime_ns = bpf_ktime_get_ns();
    event.remove_from_parent = ctx->bx & 1;
    u64 err_itab = ctx->cx, err_data = ctx->di;
    u64 cause_itab = ctx->si, cause_data = ctx->r8;
    if (err_data == k->canceled_data)
        event.kind = 2;
    else if (err_itab == k->deadline_itab)
        event.kind = 1;
    u64 err_word = 0;
    bpf_probe_read_user(&err_word, sizeof(err_word), (void *)(ctx->ax + CANCEL_CTX_ERR_OFFSET));
    event.already_cancelled = err_word != 0;
    // A cause made by errors.New: *errorString{s string}, read its text.
    if (cause_itab == k->errors_new_itab && cause_data != 0 && cause_data != err_data) {
        u64 header[2] = {};
        bpf_probe_read_user(&header, sizeof(header), (void *)cause_data);
        u64 length = header[1];
        if (length > sizeof(event.cause) - 1)
            length = sizeof(event.cause) - 1;
        bpf_probe_read_user(&event.cause, length & 63, (void *)header[0]);
    }
    // At entry the frame-pointer walk starts from the caller's frame, so it
    // shows the caller's caller next; the return address names the caller.
    bpf_probe_read_user(&event.return_address, sizeof(u64), (void *)ctx->sp);
    event.stack_id = stacks.get_stackid(ctx, BPF_F_USER_STACK);
    go_events.perf_submit(ctx, &event, sizeof(event));
    return 0;
}
