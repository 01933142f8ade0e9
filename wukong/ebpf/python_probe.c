// Copies Wukong's audit events out of a Python operator.
//
// wukong.runtime.probes calls sys.audit("wukong.<what>|k=v|...") only while
// this probe is attached (the USDT semaphore is non-zero); CPython then fires
// python:audit with the event name as its first argument. The name is the
// whole payload, so the program only copies a string.
#include <uapi/linux/ptrace.h>

struct audit_event_t {
    u32 pid;
    char text[200];
};

BPF_PERF_OUTPUT(audit_events);

int on_audit(struct pt_regs *ctx) {
    struct audit_event_t event = {};
    u64 name = 0;
    bpf_usdt_readarg(1, ctx, &name);
    if (bpf_probe_read_user_str(event.text, sizeof(event.text), (void *)name) <= 0)
        return 0;
    // Other audit events (imports, opens, ...) are dropped in the kernel.
    if (event.text[0] != 'w' || event.text[1] != 'u' || event.text[2] != 'k' ||
        event.text[3] != 'o' || event.text[4] != 'n' || event.text[5] != 'g' ||
        event.text[6] != '.')
        return 0;
    event.pid = bpf_get_current_pid_tgid() >> 32;
    audit_events.perf_submit(ctx, &event, sizeof(event));
    return 0;
}
