"""The `wukong` command.

Subcommands are added as the parts they drive exist; each has its own `--help`.
Errors a user can act on are printed as one line (`wukong: error: ...`) with
exit status 1, never as a traceback.
"""

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from wukong import __version__
from wukong.demo import commands as demo_commands
from wukong.deploy import commands as deploy_commands
from wukong.devcluster import ControlPlane, ControlPlaneConfig, DevClusterError, binaries
from wukong.devcluster.apis import install_dev_apis
from wukong.devcluster.paths import default_state_dir
from wukong.devcluster.simulator import (
    IMMEDIATE_CLASS,
    WAIT_FOR_FIRST_CONSUMER_CLASS,
    SimulationConfig,
    run_simulator,
)
from wukong.ebpf import commands as ebpf_commands
from wukong.errors import UserError
from wukong.operator import commands as operator_commands
from wukong.runtime.client import Client
from wukong.tracing.logs import configure_logging


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _add_cluster_options(parser: argparse.ArgumentParser, *, ports: bool) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where the cluster keeps certificates, kubeconfig, pid files and logs "
        "(default: $WUKONG_DEV_STATE_DIR or ~/.cache/wukong/dev)",
    )
    if ports:
        parser.add_argument(
            "--apiserver-port",
            type=int,
            default=None,
            help="kube-apiserver secure port on 127.0.0.1 (default 6443)",
        )
        parser.add_argument(
            "--etcd-port",
            type=int,
            default=None,
            help="etcd client port on 127.0.0.1 (default 2379)",
        )
        parser.add_argument(
            "--etcd-peer-port",
            type=int,
            default=None,
            help="etcd peer port on 127.0.0.1 (default 2380)",
        )


def _control_plane(args: argparse.Namespace) -> ControlPlane:
    state_dir = args.state_dir or default_state_dir()
    config = ControlPlaneConfig.for_state_dir(
        state_dir,
        apiserver_port=getattr(args, "apiserver_port", None),
        etcd_port=getattr(args, "etcd_port", None),
        etcd_peer_port=getattr(args, "etcd_peer_port", None),
    )
    return ControlPlane(config)


def _dev_up(args: argparse.Namespace) -> int:
    plane = _control_plane(args)
    plane.up(progress=_progress)
    asyncio.run(_install_dev_apis(plane.kubeconfig))
    _progress(
        "installed the Wukong CRD, simulated KubeVirt/CDI/Multus CRDs and StorageClasses "
        f"({IMMEDIATE_CLASS}, {WAIT_FOR_FIRST_CONSUMER_CLASS}); "
        "run `wukong dev simulate` to play those systems"
    )
    _progress(f'kubectl --kubeconfig "{plane.kubeconfig}" get ns')
    return 0


async def _install_dev_apis(kubeconfig: Path) -> None:
    async with await Client.from_kubeconfig(kubeconfig) as client:
        await install_dev_apis(client)


def _dev_down(args: argparse.Namespace) -> int:
    _control_plane(args).down(progress=_progress)
    return 0


def _dev_status(args: argparse.Namespace) -> int:
    plane = _control_plane(args)
    status = plane.status()
    for component in status.components:
        pid = f" (pid {component.pid})" if component.pid else ""
        print(f"{component.name:<15} {component.state}{pid}  log: {component.log_file}")
    print(
        f"{'server':<15} {plane.server_url}  ready: {'yes' if status.ready else 'no'}"
        f"  version: {status.version or '-'}"
    )
    print(f"{'kubeconfig':<15} {status.kubeconfig or '-'}")
    return 0 if status.running and status.ready else 3


def _dev_kubeconfig(args: argparse.Namespace) -> int:
    plane = _control_plane(args)
    if not plane.kubeconfig.is_file():
        raise DevClusterError("no kubeconfig yet; start the control plane with `wukong dev up`")
    print(plane.kubeconfig)
    return 0


def _dev_simulate(args: argparse.Namespace) -> int:
    config = SimulationConfig(
        bind_delay=args.bind_delay, import_delay=args.import_delay, boot_delay=args.boot_delay
    )
    kubeconfig = _control_plane(args).kubeconfig
    _progress("simulating the volume binder, CDI and KubeVirt; Ctrl-C stops")
    asyncio.run(run_simulator(kubeconfig, config))
    return 0


def _dev_build(args: argparse.Namespace) -> int:
    print(binaries.kube_apiserver_binary(progress=_progress))
    print(binaries.helm_binary(progress=_progress))
    return 0


def _dashboards_render(args: argparse.Namespace) -> int:
    # Imported here: the Grafana SDK is only needed by this command.
    from wukong.dashboards.alerts import ALERT_RULES_FILE, render_alert_rules
    from wukong.dashboards.panels import render_dashboards

    out: Path = args.out
    files = {**render_dashboards(), ALERT_RULES_FILE: render_alert_rules()}
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            path = out / name
            path.write_text(text, encoding="utf-8")
            print(path)
    except OSError as exc:
        print(f"wukong: error: cannot write dashboards to {out}: {exc}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wukong",
        description="Wukong: a Kubernetes operator for VMs that explains every reconcile.",
    )
    parser.add_argument("--version", action="version", version=f"wukong {__version__}")
    parser.add_argument(
        "--log-format",
        choices=["console", "json"],
        default="console",
        help="console: readable lines for people; json: one object per line for log "
        "pipelines. Both carry trace_id/span_id for lines about a traced reconcile.",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="info",
        help="cancelled reconciles are logged at debug, with their reason (default: info)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    operator_commands.add_commands(commands)
    demo_commands.add_commands(commands)
    deploy_commands.add_commands(commands)
    ebpf_commands.add_commands(commands)

    dev = commands.add_parser(
        "dev",
        help="run a real local control plane (etcd + kube-apiserver)",
        description="A real local Kubernetes control plane for development and tests: etcd 3.5 "
        "and a kube-apiserver built once from the pinned Kubernetes release and cached. "
        "It has no kubelet or controller-manager: namespaces are not finalized and owner "
        "references are not garbage-collected.",
    )
    dev_commands = dev.add_subparsers(dest="dev_command", required=True, metavar="ACTION")

    up = dev_commands.add_parser(
        "up",
        help="start the control plane and wait until it is ready",
        description="Start etcd and kube-apiserver in the background and return when /readyz is "
        "ok and the default namespace exists. The first run builds kube-apiserver (minutes); "
        "later runs start in seconds. Does nothing if it is already running.",
    )
    _add_cluster_options(up, ports=True)
    up.set_defaults(handler=_dev_up)

    down = dev_commands.add_parser(
        "down",
        help="stop the control plane and delete its data",
        description="Stop kube-apiserver and etcd and delete etcd's data. Certificates and the "
        "kubeconfig are kept for the next `up`.",
    )
    _add_cluster_options(down, ports=False)
    down.set_defaults(handler=_dev_down)

    status = dev_commands.add_parser(
        "status",
        help="show whether the control plane runs and is ready",
        description="Show each component's process and log, the server URL, readiness and "
        "version. Exit status 0 when running and ready, 3 otherwise.",
    )
    _add_cluster_options(status, ports=False)
    status.set_defaults(handler=_dev_status)

    kubeconfig = dev_commands.add_parser(
        "kubeconfig",
        help="print the path of the admin kubeconfig",
        description='Print the admin kubeconfig path, for kubectl --kubeconfig "$(wukong dev '
        'kubeconfig)".',
    )
    _add_cluster_options(kubeconfig, ports=False)
    kubeconfig.set_defaults(handler=_dev_kubeconfig)

    simulate = dev_commands.add_parser(
        "simulate",
        help="play KubeVirt, CDI and the volume binder against the control plane",
        description="Run small controllers that stand in for systems the dev cluster lacks: "
        "they bind PVCs (WaitForFirstConsumer ones once a VM is scheduled), import CDI "
        "DataVolumes and start KubeVirt VMIs on a fake node, each after a delay. Runs until "
        "Ctrl-C or SIGTERM.",
    )
    _add_cluster_options(simulate, ports=False)
    for flag, default, what in [
        ("--bind-delay", 0.3, "PVC Pending -> Bound"),
        ("--import-delay", 1.0, "DataVolume import"),
        ("--boot-delay", 0.5, "VMI Scheduled -> Running"),
    ]:
        simulate.add_argument(
            flag, type=float, default=default, metavar="SECONDS", help=f"{what} (default {default})"
        )
    simulate.set_defaults(handler=_dev_simulate)

    build = dev_commands.add_parser(
        "build",
        help="build (or find in the cache) kube-apiserver and helm",
        description="Build kube-apiserver from the Go module proxy through the wrapper module in "
        "wukong/devcluster/apiserver, and helm (for the chart's checks) with `go install`; "
        "cache both under ~/.cache/wukong/bin and print their paths.",
    )
    build.set_defaults(handler=_dev_build)

    dashboards = commands.add_parser(
        "dashboards",
        help="render the Grafana dashboards and Prometheus alert rules",
        description="Wukong's Grafana dashboards and alert rules are code (wukong/dashboards); "
        "this renders them to the JSON files Grafana imports or provisions and the rule file "
        "Prometheus loads. The rendered files are committed under dashboards/ and unit tests "
        "fail when they are stale.",
    )
    dashboards_commands = dashboards.add_subparsers(
        dest="dashboards_command", required=True, metavar="ACTION"
    )
    render = dashboards_commands.add_parser(
        "render",
        help="write every dashboard as <uid>.json and the alert rules; print the paths",
        description='Write each dashboard ("Wukong / Cancel storm", "Wukong / Node '
        'cancellations") to OUT/<uid>.json with stable key order and the alert rules to '
        "OUT/wukong-alerts.rules.yaml, overwriting older renders, and print one path per "
        "line. Run it after changing wukong/dashboards and commit the result.",
    )
    render.add_argument(
        "--out",
        type=Path,
        default=Path("dashboards"),
        metavar="DIR",
        help="directory to write the files to, created if missing (default: dashboards/)",
    )
    render.set_defaults(handler=_dashboards_render)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(log_format=args.log_format, level=getattr(logging, args.log_level.upper()))
    try:
        code: int = args.handler(args)
    except UserError as exc:
        print(f"wukong: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
