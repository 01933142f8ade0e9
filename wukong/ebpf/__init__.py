"""The node agent: eBPF probes that trace cancellations inside controller processes.

- `preflight`: root, BPF permission, kernel headers, tracefs; each failure names its fix.
- `elf`: symbols, PIE, Go version and the context globals of a target binary.
- `discovery`: which processes on the node are targets (Wukong's Python
  operators, Go binaries with `context.(*cancelCtx).cancel`), and why not.
- `python_probe` (+ `.c`): the `python:audit` USDT probe, fed by wukong.runtime.probes.
- `go_probe` (+ `.c`): an entry uprobe on `context.(*cancelCtx).cancel`.
- `attribution`: pid -> cgroup -> pod UID -> namespace/pod/container.
- `agent`: attaches to targets as they come and go, turns events into
  `Cancellation` records and `wukong_node_cancellations_total`.
- `live`: the `wukong trace` table (the commands are in `wukong.cli.agent`).
"""
