"""`wukong agent` (the DaemonSet's daemon) and `wukong trace` (the live view).

Production: it imports only what `pip install wukong-operator` installs (BCC
itself comes from the node's python3-bpfcc and is imported when probes load).
"""

import argparse
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from wukong.cli.metricsflags import add_metrics_security
from wukong.ebpf.agent import Agent
from wukong.ebpf.attribution import PodAttribution
from wukong.ebpf.detaching import detach, in_my_container, running_agents
from wukong.ebpf.discovery import Discovery
from wukong.ebpf.export import CancellationExporter
from wukong.ebpf.live import SORT_KEYS, LiveTable, write_json
from wukong.ebpf.preflight import AgentError, check_node
from wukong.ebpf.python_probe import record_semaphores
from wukong.ebpf.records import Cancellation
from wukong.ebpf.semaphores import DEFAULT_STATE_DIR
from wukong.metrics.thread import LoopHealth, MetricsThread
from wukong.runtime import Client
from wukong.tracing.setup import configure_tracing


def _node(args: argparse.Namespace) -> str:
    return str(args.node_name or os.environ.get("NODE_NAME") or socket.gethostname())


def _build_agent(
    args: argparse.Namespace,
    *,
    on_cancel: Callable[[Cancellation], None] | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> Agent:
    pids = set(args.pid) if args.pid else None
    for exe in args.exe or ():
        if not exe.is_file():
            raise AgentError(f"--exe {exe}: no such program")
    attribution = (
        None if args.no_pods else PodAttribution(node=_node(args), kubeconfig=args.kubeconfig)
    )
    return Agent(
        node=_node(args),
        discovery=Discovery(
            pids=pids,
            executables=set(args.exe) if args.exe else None,
            controller_runtime_only=args.controller_runtime_only,
            pods_only=args.pods_only,
        ),
        attribution=attribution,
        on_cancel=on_cancel,
        on_notice=on_notice,
    )


def _agent(args: argparse.Namespace) -> int:
    check_node()
    record_semaphores(args.state_dir)
    provider = configure_tracing()
    exporter = CancellationExporter(provider=provider) if provider else None
    agent = _build_agent(args, on_cancel=exporter)
    # Minutes: a first scan of a node full of controllers compiles a BPF program
    # for each, a second or two apiece, and the loop does not go round meanwhile.
    health = LoopHealth(stall=max(300.0, 10 * args.scan_interval))
    metrics = _serve_metrics(agent, args, health)
    print(
        f"wukong agent on node {agent.node}: metrics on {args.metrics_bind} ({metrics.scheme}), "
        f"health on {args.health_bind}",
        file=sys.stderr,
    )
    try:
        # The loop calls its `render` each second or so, after a rescan the first time:
        # the agent has no screen, so that is its heartbeat.
        return _loop(agent, args, render=health.beat)
    finally:
        metrics.stop()


def _serve_metrics(agent: Agent, args: argparse.Namespace, health: LoopHealth) -> MetricsThread:
    if args.metrics_cert_dir is not None and not args.metrics_secure:
        raise AgentError("--metrics-cert-dir is for --metrics-secure (HTTPS) only")
    metrics = MetricsThread(
        registry=agent.registry,
        connect=(lambda: Client.configured(args.kubeconfig)) if args.metrics_secure else None,
        cert_dir=args.metrics_cert_dir,
        health=health,
    )
    health_bind = None if args.health_bind == "0" else args.health_bind
    try:
        metrics.start(args.metrics_bind, health_bind=health_bind)
    except Exception as exc:  # an address in use, a bad kubeconfig, an unreadable certificate
        agent.close()
        raise AgentError(
            f"cannot serve metrics on {args.metrics_bind!r} and health on {args.health_bind!r}: "
            f"{exc}"
        ) from exc
    return metrics


def _trace(args: argparse.Namespace) -> int:
    check_node()
    record_semaphores(args.state_dir)
    table = LiveTable(sort=args.sort)
    notices: list[str] = []

    def on_cancel(cancellation: Cancellation) -> None:
        table.add(cancellation)
        if args.json:
            write_json(cancellation)

    def on_notice(message: str) -> None:
        notices.append(message)
        if args.json:
            print(message, file=sys.stderr, flush=True)

    agent = _build_agent(args, on_cancel=on_cancel, on_notice=on_notice)
    started = time.monotonic()
    lost_said = 0

    def render() -> None:
        nonlocal lost_said
        if args.json:
            if agent.lost > lost_said:  # a loss is said (on stderr, with the notices)
                print(f"LOST {agent.lost - lost_said} events", file=sys.stderr, flush=True)
                lost_said = agent.lost
        else:
            screen = table.render(
                seconds=time.monotonic() - started,
                targets=len(agent.probes),
                notices=notices,
                lost=agent.lost,
                losses=agent.lost_by_reason,
                untraced=agent.untraced_by_reason,
            )
            sys.stdout.write("\x1b[H\x1b[2J" + screen + "\n")
            sys.stdout.flush()

    return _loop(agent, args, render=render)


def _loop(agent: Agent, args: argparse.Namespace, *, render: Callable[[], None] | None) -> int:
    deadline = time.monotonic() + args.duration if args.duration else None
    last_scan = last_render = 0.0
    stopping = threading.Event()
    # SIGTERM (a pod being deleted, `helm upgrade --set agent.enabled=false`) must
    # detach like Ctrl-C does: dying of the signal would leave the traced
    # processes' USDT semaphores raised (they would go on paying for the probe)
    # and BCC's uprobe events behind.
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.set())
    try:
        while not stopping.is_set() and (deadline is None or time.monotonic() < deadline):
            now = time.monotonic()
            agent.poll()  # new processes come from their exec events, at once
            if now - last_scan >= args.scan_interval:
                agent.rescan()
                last_scan = now
            if render is not None and now - last_render >= 1.0:
                render()
                last_render = now
            agent.wait(0.05)  # the next poll; a process that starts wakes it at once
    except KeyboardInterrupt:
        pass
    finally:
        agent.poll()  # what arrived before the end still counts
        if render is not None:
            render()
        agent.close()
    return 0


def _detach(args: argparse.Namespace) -> int:
    agents = [agent for agent in running_agents(args.state_dir) if in_my_container(agent)]
    if not agents:
        print(f"wukong detach: no agent running here ({args.state_dir})", file=sys.stderr)
        return 0
    left = detach(agents, timeout=args.timeout)
    for agent in agents:
        state = "still running" if agent in left else "detached and exited"
        print(f"wukong detach: agent pid {agent.pid}: {state}", file=sys.stderr)
    return 1 if left else 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pid", type=int, action="append", help="trace only this pid (repeatable)")
    parser.add_argument(
        "--exe",
        type=Path,
        action="append",
        metavar="PATH",
        help="trace only processes that run this program (repeatable; a Python operator's "
        "is its interpreter; a container's is reached as /proc/PID/exe of one of its "
        "processes): every process of it, the ones that start later included",
    )
    parser.add_argument(
        "--controller-runtime-only",
        action="store_true",
        help="among Go programs, trace only controller-runtime binaries",
    )
    parser.add_argument(
        "--pods-only",
        action="store_true",
        help="trace only processes that run in a pod (a kubepods cgroup), not the node's "
        "own daemons or anything else the host runs",
    )
    parser.add_argument("--node-name", help="this node's name (default: $NODE_NAME, hostname)")
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        help="for pod attribution and the reviews of --metrics-secure (default: in-cluster, "
        "$KUBECONFIG or ~/.kube/config)",
    )
    parser.add_argument(
        "--no-pods", action="store_true", help="do not ask the API server which pod a process is"
    )
    parser.add_argument(
        "--duration", type=float, default=None, metavar="SECONDS", help="stop after this long"
    )
    parser.add_argument(
        "--scan-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how often to scan /proc as a safety net (default: 10); new and exited "
        "processes are seen at once, from their exec and exit",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        metavar="DIR",
        help="where the USDT semaphores raised in traced Python processes are written down, "
        "so that the next agent puts back what one killed before detaching left raised "
        f"(default: {DEFAULT_STATE_DIR})",
    )


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    agent = commands.add_parser(
        "agent",
        help="node agent: trace cancellations in controller processes with eBPF (root)",
        description="Attach eBPF probes to every controller process on this node (Wukong's "
        "Python operators through their python:audit USDT probe, Go programs through a "
        "uprobe on context.(*cancelCtx).cancel), attribute each to its pod, and serve "
        "wukong_node_cancellations_total on --metrics-bind-address. With "
        "OTEL_EXPORTER_OTLP_ENDPOINT set, individual cancellations are exported as spans "
        "(at most 20 a second).",
    )
    _common(agent)
    agent.add_argument(
        "--metrics-bind-address",
        "--metrics-bind",
        dest="metrics_bind",
        default=":9464",
        metavar="ADDR",
        help="host:port of /metrics (default: :9464)",
    )
    add_metrics_security(agent)
    agent.add_argument(
        "--health-probe-bind-address",
        "--health-bind",
        dest="health_bind",
        default=":8081",
        metavar="ADDR",
        help="host:port of /healthz (the main loop went round lately) and /readyz (the "
        'first scan attached its probes), plain HTTP for the kubelet; "0" turns them off '
        "(default: :8081)",
    )
    agent.set_defaults(handler=_agent)

    detach = commands.add_parser(
        "detach",
        help="make this container's running agent detach and exit (the DaemonSet's preStop)",
        description="Send SIGTERM to every `wukong agent` alive in this container (found "
        "through its ledger in --state-dir; an agent or `wukong trace` elsewhere on the "
        "node is left alone) and wait until each has exited: every probe closed and the "
        "USDT semaphores it raised in traced operators put back. Exits 1 if one is still "
        "running after --timeout.",
    )
    detach.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        metavar="DIR",
        help=f"the agents' state directory (default: {DEFAULT_STATE_DIR})",
    )
    detach.add_argument(
        "--timeout",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="how long to wait for the agents to exit (default: 20)",
    )
    detach.set_defaults(handler=_detach)

    trace = commands.add_parser(
        "trace",
        help="live table of cancellations on this node, like top (root)",
        description="What `wukong agent` sees, as a table refreshed every second: per "
        "process, pod, runtime and reason, how many cancellations and where from (the "
        "Wukong object, or the Go function that cancelled). --json prints one JSON object "
        "per record instead, for scripts: a Python cancellation, or what one Go call "
        "site's count grew by (its `count`). Lost events are shown, never hidden.",
    )
    _common(trace)
    trace.add_argument("--json", action="store_true", help="JSON lines instead of the table")
    trace.add_argument("--sort", choices=SORT_KEYS, default="count", help="table order")
    trace.set_defaults(handler=_trace)
