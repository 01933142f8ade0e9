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
- `go_probe` (+ `.c`): the uprobe there, on the binary (its inode): every process
  of it from its start; counts in the kernel, first occurrences through a ring buffer.
- `process_events` (+ `.c`): exec and exit of every process, from the scheduler's
  tracepoints: how the agent hears of new processes at once.
- `attribution`: pid -> cgroup -> pod UID -> namespace/pod/container.
- `semaphores`: the ledger of USDT semaphores raised, so a killed agent's are put back.
- `detaching`: `wukong detach`, the DaemonSet's preStop hook.
- `agent`: takes targets on as they come and go, turns counts and events
  into `Cancellation` records and its metrics (cancellations, losses and
  untraced processes by reason, all bounded).
- `live`: the `wukong trace` table (the commands are in `wukong.cli.agent`).
"""
