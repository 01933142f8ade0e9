"""`wukong demo`: the command line of the demo and the cancel-storm drill.

Development only: the demo stands on the local control plane and the dashboards,
which come with the `devtools` extra, so it imports them when it runs.
"""

import argparse
import asyncio
import sys
from pathlib import Path


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _demo(args: argparse.Namespace) -> int:
    from wukong.demo.demo import run_demo
    from wukong.devcluster import binaries, ephemeral_control_plane
    from wukong.devcluster.jaeger import LocalJaeger
    from wukong.devcluster.paths import cache_dir

    work_dir: Path = args.work_dir or cache_dir() / "demo"
    # Jaeger first: the API server traces into it too, so a slow call's trace
    # reaches the server's spans (and its etcd calls).
    jaeger = LocalJaeger(binary=binaries.jaeger_binary(progress=_say))
    jaeger.start()
    try:
        with ephemeral_control_plane(
            progress=_say, state_dir=work_dir / "cluster", tracing_endpoint=jaeger.otlp_grpc
        ) as plane:
            return asyncio.run(
                run_demo(
                    plane,
                    work_dir=work_dir,
                    storm=args.storm,
                    drill=args.drill,
                    exit_when_ready=args.exit_when_ready,
                    progress=_say,
                    jaeger=jaeger,
                )
            )
    finally:
        jaeger.stop()


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    demo = commands.add_parser(
        "demo",
        help="see Wukong work: control plane, operator, telemetry and sample VMs",
        description="Start a local control plane on free ports with simulated KubeVirt, CDI, "
        "Multus and storage, the operator (`wukong run`) with metrics and tracing to a local "
        "Jaeger (the API server traces into it too), and Prometheus scraping it with the "
        "alert rules; apply sample Wukongs and show their progress until all are Running, "
        "then print where to look. Ctrl-C tears everything down.",
    )
    mode = demo.add_mutually_exclusive_group()
    mode.add_argument(
        "--storm",
        action="store_true",
        help="then make the API server slow and show the cancel storm and its diagnosis "
        "live for 30 s, and heal it",
    )
    mode.add_argument(
        "--drill",
        action="store_true",
        help="then restart the operator under load (which must read as no failure) and run "
        "three faults (slow API server, deadline too tight, leader-lease loss); print, for "
        "each, the cause named from the telemetry alone; exit 1 if any is misdiagnosed",
    )
    demo.add_argument(
        "--exit-when-ready",
        action="store_true",
        help="stop once done instead of running until Ctrl-C (for scripts)",
    )
    demo.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="where logs, the kubeconfig and Prometheus data go (default: ~/.cache/wukong/demo)",
    )
    demo.set_defaults(handler=_demo)
