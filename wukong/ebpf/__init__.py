"""The node agent: eBPF probes that trace cancellations inside controller processes.

- `preflight`: root, BPF permission, kernel headers, tracefs; each failure names its fix.
- `elf`: symbols, PIE, Go version and the context globals of a target binary.
- `pclntab`: a stripped Go binary's functions, from the table its runtime keeps.
- `go_context_errors`: where a stripped Go binary keeps `context.Canceled` and
  `context.DeadlineExceeded`, found in the code that loads them.
- `discovery`: which processes on the node are targets (Wukong's Python
  operators, Go binaries with `context.(*cancelCtx).cancel`), and why not.
- `python_probe` (+ `.c`): the `python:audit` USDT probe, fed by wukong.runtime.probes.
- `go_cancel_site`: where in `context.(*cancelCtx).cancel` only effective
  cancellations pass (found in the machine code, checked; else its entry).
- `go_probe` (+ `.c`): the uprobe there; counts in the kernel, first
  occurrences through a ring buffer.
- `attribution`: pid -> cgroup -> pod UID -> namespace/pod/container.
- `agent`: attaches to targets as they come and go, turns counts and events
  into `Cancellation` records, `wukong_node_cancellations_total` and
  `wukong_node_events_lost_total`.
- `live`: the `wukong trace` table (the commands are in `wukong.cli.agent`).
"""
