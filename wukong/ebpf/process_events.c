// Tells the agent of every process that starts a program (exec) or ends (exit),
// as it happens: a new process of a traced binary is counted from its start by
// the binary's probe already, and these events let the agent attribute it, and
// trace a binary it has not seen before, without waiting for a scan of /proc.
#include <linux/sched.h>

struct process_event_t {
    u64 ktime_ns;  // CLOCK_MONOTONIC, as the agent's time.monotonic_ns()
    u32 pid;
    u32 exited;  // 0: exec, 1: exit
    char comm[TASK_COMM_LEN];
};

BPF_RINGBUF_OUTPUT(process_events, 16);  // pages: 64 KiB, 2,700 events between polls
BPF_ARRAY(lost, u64, 1);

static __always_inline void send(u32 exited) {
    u64 id = bpf_get_current_pid_tgid();
    if (exited && (u32)id != id >> 32)
        return;  // a thread, not the process
    struct process_event_t event = {
        .ktime_ns = bpf_ktime_get_ns(), .pid = id >> 32, .exited = exited};
    bpf_get_current_comm(&event.comm, sizeof(event.comm));
    // An exec wakes the agent (its cgroup, so its pod, is read while it still
    // runs: a crash-looping container's run may last milliseconds); an exit can
    // wait for the next poll.
    u64 flags = exited ? BPF_RB_NO_WAKEUP : 0;
    if (process_events.ringbuf_output(&event, sizeof(event), flags) != 0) {
        u32 zero = 0;
        u64 *n = lost.lookup(&zero);
        if (n)
            __sync_fetch_and_add(n, 1);
    }
}

TRACEPOINT_PROBE(sched, sched_process_exec) {
    send(0);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
    send(1);
    return 0;
}
