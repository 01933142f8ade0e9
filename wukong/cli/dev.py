"""`wukong dev`: the real local control plane (etcd + kube-apiserver) and its simulator.

Development only: every action imports `wukong.devcluster` when it runs, never
when the parser is built, so `wukong run` never loads the development code.
"""

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wukong.devcluster import ControlPlane


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _control_plane(args: argparse.Namespace) -> "ControlPlane":
    from wukong.devcluster import ControlPlane, ControlPlaneConfig
    from wukong.devcluster.paths import default_state_dir

    config = ControlPlaneConfig.for_state_dir(
        args.state_dir or default_state_dir(),
        apiserver_port=getattr(args, "apiserver_port", None),
        etcd_port=getattr(args, "etcd_port", None),
        etcd_peer_port=getattr(args, "etcd_peer_port", None),
    )
    return ControlPlane(config)


def _up(args: argparse.Namespace) -> int:
    import dataclasses

    from wukong.devcluster import ControlPlane
    from wukong.devcluster.node import HOST_ADDRESS, DevNode
    from wukong.devcluster.simulator import IMMEDIATE_CLASS, WAIT_FOR_FIRST_CONSUMER_CLASS

    plane = _control_plane(args)
    wanted = HOST_ADDRESS if args.node else None
    if plane.config.node_address != wanted:
        running = plane.status().running
        if running:
            from wukong.devcluster import DevClusterError

            have = "with" if plane.config.node_address else "without"
            raise DevClusterError(
                f"the control plane already runs {have} a node; `wukong dev down` first"
            )
        plane = ControlPlane(dataclasses.replace(plane.config, node_address=wanted))
    plane.up(progress=_progress)
    if args.node:
        from wukong.devcluster import node_prometheus

        node = DevNode(plane)
        node.up(progress=_progress)
        node_prometheus.start(node, progress=_progress)
    asyncio.run(_install_dev_apis(plane.kubeconfig, ca_bundle=plane.ca_cert.read_bytes()))
    _progress(
        "installed the Wukong CRD, simulated KubeVirt/CDI/Multus CRDs and StorageClasses "
        f"({IMMEDIATE_CLASS}, {WAIT_FOR_FIRST_CONSUMER_CLASS}); "
        "run `wukong dev simulate` to play those systems"
    )
    _progress(
        f"registered the Wukong admission webhook at {DEV_WEBHOOK_URL} (failurePolicy Ignore: "
        "objects are admitted while no operator serves it); serve it with "
        f'`wukong run --webhook-cert-dir "{plane.webhook_cert_dir}"`'
    )
    kubectl = "kubectl"
    if args.node:
        from wukong.devcluster import binaries

        kubectl = str(binaries.kubectl_binary(progress=_progress))  # built with the node
    _progress(f'{kubectl} --kubeconfig "{plane.kubeconfig}" get {"nodes" if args.node else "ns"}')
    return 0


# Where `wukong run`'s webhook listens by default, seen from the dev API server.
DEV_WEBHOOK_URL = "https://127.0.0.1:9443"
DEV_WEBHOOK_CONFIGURATION = "wukong-dev"


async def _install_dev_apis(kubeconfig: Path, *, ca_bundle: bytes) -> None:
    from wukong.devcluster.apis import install_dev_apis
    from wukong.operator.admission import webhook_configuration
    from wukong.runtime import Client, NotFound
    from wukong.runtime.resources import VALIDATING_WEBHOOK_CONFIGURATIONS

    async with await Client.from_kubeconfig(kubeconfig) as client:
        await install_dev_apis(client)
        # Registered by URL, trusting the dev CA; Ignore, so a cluster without the
        # operator running still admits Wukongs (the controller reports problems).
        configuration = webhook_configuration(
            DEV_WEBHOOK_CONFIGURATION,
            url=DEV_WEBHOOK_URL,
            ca_bundle=ca_bundle,
            failure_policy="Ignore",
            timeout_seconds=5,
        )
        try:
            current = await client.get(VALIDATING_WEBHOOK_CONFIGURATIONS, DEV_WEBHOOK_CONFIGURATION)
        except NotFound:
            await client.create(VALIDATING_WEBHOOK_CONFIGURATIONS, configuration)
        else:
            configuration["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            await client.update(VALIDATING_WEBHOOK_CONFIGURATIONS, configuration)


def _down(args: argparse.Namespace) -> int:
    from wukong.devcluster.node import DevNode

    plane = _control_plane(args)
    node = DevNode(plane)
    if node.present():
        from wukong.devcluster import node_prometheus

        # First: a process left in the node's namespace would keep its link alive.
        node_prometheus.stop(node, progress=_progress)
        node.down(progress=_progress)
    plane.down(progress=_progress)
    return 0


def _status(args: argparse.Namespace) -> int:
    plane = _control_plane(args)
    status = plane.status()
    components = list(status.components)
    if plane.config.node_address:
        from wukong.devcluster import node_prometheus
        from wukong.devcluster.node import DevNode

        node = DevNode(plane)
        components += [*node.status(), node_prometheus.status(node)]
    for component in components:
        pid = f" (pid {component.pid})" if component.pid else ""
        print(f"{component.name:<24} {component.state}{pid}  log: {component.log_file}")
    print(
        f"{'server':<24} {plane.server_url}  ready: {'yes' if status.ready else 'no'}"
        f"  version: {status.version or '-'}"
    )
    print(f"{'kubeconfig':<24} {status.kubeconfig or '-'}")
    node_running = all(c.state == "running" for c in components)
    return 0 if status.running and node_running and status.ready else 3


def _kubeconfig(args: argparse.Namespace) -> int:
    from wukong.devcluster import DevClusterError

    plane = _control_plane(args)
    if not plane.kubeconfig.is_file():
        raise DevClusterError("no kubeconfig yet; start the control plane with `wukong dev up`")
    print(plane.kubeconfig)
    return 0


def _webhook_cert_dir(args: argparse.Namespace) -> int:
    plane = _control_plane(args)
    print(plane.webhook_cert_dir)
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from wukong.devcluster.simulator import SimulationConfig, run_simulator

    config = SimulationConfig(
        bind_delay=args.bind_delay, import_delay=args.import_delay, boot_delay=args.boot_delay
    )
    kubeconfig = _control_plane(args).kubeconfig
    _progress("simulating the volume binder, CDI and KubeVirt; Ctrl-C stops")
    asyncio.run(run_simulator(kubeconfig, config))
    return 0


def _build(args: argparse.Namespace) -> int:
    from wukong.devcluster import binaries

    # What the control plane (and so the demo) needs; the rest is built on first use
    # by what needs it, or here when asked.
    print(binaries.etcd_binary(progress=_progress))
    print(binaries.kube_apiserver_binary(progress=_progress))
    if args.tools or args.node:
        print(binaries.kubectl_binary(progress=_progress))
        print(binaries.helm_binary(progress=_progress))
    if args.node:
        print(binaries.node_binaries(progress=_progress))
        print(binaries.pause_binary(progress=_progress))
        print(binaries.prometheus_binary(progress=_progress))
    return 0


def _tool(args: argparse.Namespace) -> int:
    from wukong.devcluster import binaries

    binaries.exec_tool(args.name, args.args, progress=_progress)


def _images(args: argparse.Namespace) -> int:
    from wukong.devcluster import DevClusterError, imagebuild
    from wukong.devcluster.node import DevNode

    plane = _control_plane(args)
    node = DevNode(plane)
    if not node.runtime_running():
        raise DevClusterError(
            "the dev node is not running; start it with `wukong dev up --node` "
            "(the images are loaded into its containerd)"
        )
    operator = imagebuild.build_operator_image(progress=_progress)
    agent = imagebuild.build_agent_image(progress=_progress)
    for built in (operator, agent):
        node.import_image(built.archive)
        _progress(f"loaded {built.reference} ({built.size_bytes / 2**20:.0f} MiB) into the node")
    print(imagebuild.values_file(operator, agent, node.paths.root / "images-values.yaml"))
    return 0


def _add_cluster_options(parser: argparse.ArgumentParser, *, ports: bool) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where the cluster keeps certificates, kubeconfig, pid files and logs "
        "(default: $WUKONG_DEV_STATE_DIR or ~/.cache/wukong/dev)",
    )
    if not ports:
        return
    for flag, what, default in [
        ("--apiserver-port", "kube-apiserver secure port", 6443),
        ("--etcd-port", "etcd client port", 2379),
        ("--etcd-peer-port", "etcd peer port", 2380),
    ]:
        parser.add_argument(
            flag, type=int, default=None, help=f"{what} on 127.0.0.1 (default {default})"
        )


def _add_simulate(actions: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    simulate = actions.add_parser(
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
    simulate.set_defaults(handler=_simulate)


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    dev = commands.add_parser(
        "dev",
        help="run a real local control plane (etcd + kube-apiserver)",
        description="A real local Kubernetes control plane for development and tests: etcd "
        "and kube-apiserver, built once from their pinned releases and cached. "
        "Without --node it has no kubelet or controller-manager: namespaces are not finalized "
        "and owner references are not garbage-collected. `wukong dev up --node` adds a real "
        "node (containerd, kubelet, kube-proxy, kube-scheduler, kube-controller-manager) in "
        "its own network namespace; see README, 'The dev node'.",
    )
    actions = dev.add_subparsers(dest="dev_command", required=True, metavar="ACTION")
    for name, handler, ports, help_text, description in [
        (
            "up",
            _up,
            True,
            "start the control plane and wait until it is ready",
            "Start etcd and kube-apiserver in the background and return when /readyz is ok and "
            "the default namespace exists. The first run builds kube-apiserver (minutes); "
            "later runs start in seconds. Does nothing if it is already running.",
        ),
        (
            "down",
            _down,
            False,
            "stop the control plane and delete its data",
            "Stop the node if there is one (removing its containers, mounts, cgroups and "
            "network namespace and restoring the sysctls the kubelet changed), then "
            "kube-apiserver and etcd, and delete etcd's data. Certificates, the kubeconfig "
            "and the node's images are kept for the next `up`.",
        ),
        (
            "status",
            _status,
            False,
            "show whether the control plane runs and is ready",
            "Show each component's process and log, the server URL, readiness and version. "
            "Exit status 0 when running and ready, 3 otherwise.",
        ),
        (
            "kubeconfig",
            _kubeconfig,
            False,
            "print the path of the admin kubeconfig",
            'Print the admin kubeconfig path, for kubectl --kubeconfig "$(wukong dev kubeconfig)".',
        ),
        (
            "webhook-cert-dir",
            _webhook_cert_dir,
            False,
            "print the directory of the webhook's serving certificate",
            "Print the directory holding tls.crt and tls.key for the admission webhook, signed "
            "by the control plane's CA (which `up` registers as the webhook's caBundle), for "
            'wukong run --webhook-cert-dir "$(wukong dev webhook-cert-dir)".',
        ),
    ]:
        action = actions.add_parser(name, help=help_text, description=description)
        _add_cluster_options(action, ports=ports)
        action.set_defaults(handler=handler)
        if name == "up":
            action.add_argument(
                "--node",
                action="store_true",
                help="also run a real node (needs root): containerd, kubelet, kube-proxy, "
                "kube-scheduler and kube-controller-manager in network namespace wukong-node, "
                "linked to the host by a veth pair (10.201.0.1 <-> 10.201.0.2). It changes the "
                "sysctls the kubelet sets (kernel.panic, kernel.panic_on_oops, "
                "vm.overcommit_memory, vm.panic_on_oom, kernel.keys.*), mounts under the state "
                "directory and /kubepods cgroups; `wukong dev down` restores all of them. "
                "A Prometheus in the namespace (http://10.201.0.2:9090, the chart's alert rules "
                "loaded) scrapes the pods annotated prometheus.io/scrape=true as ServiceAccount "
                "wukong-monitoring/prometheus; `up` again renews its 24 h token. The first run "
                "builds the node components and Prometheus (minutes).",
            )
    _add_simulate(actions)
    images = actions.add_parser(
        "images",
        help="build the operator and agent images locally and load them into the dev node",
        description="Build the images of deploy/images/operator.Dockerfile and agent.Dockerfile "
        "without a registry: a Debian root filesystem from mmdebstrap with the packages the "
        "Dockerfile pins, the wheels of this checkout's package (no extras) and its dependencies "
        "built on the host with pip, installed into /opt/wukong in a chroot, packed as one layer "
        "and imported into the node's containerd. Cached under ~/.cache/wukong/images by the "
        "sources' hash. Prints each image's size, and as the last line the path of a Helm "
        "values file for the chart: helm install wukong deploy/chart/wukong -f PATH.",
    )
    _add_cluster_options(images, ports=False)
    images.set_defaults(handler=_images)
    build = actions.add_parser(
        "build",
        help="build (or find in the cache) etcd and kube-apiserver; kubectl, helm and the node "
        "when asked",
        description="Build etcd and kube-apiserver from the Go module proxy through the wrapper "
        "modules in wukong/devcluster/etcdserver and apiserver, cache them under "
        "~/.cache/wukong/bin and print their paths: what the control plane and the demo need. "
        "Everything else is built the first time something uses it, with progress; --tools and "
        "--node build it now.",
    )
    build.add_argument(
        "--tools",
        action="store_true",
        help="also kubectl (with the node components, wrapper module wukong/devcluster/kubenode) "
        "and helm (for the chart's checks)",
    )
    build.add_argument(
        "--node",
        action="store_true",
        help="also the tools, the node components' directory, the pause program and "
        "Prometheus (with Kubernetes discovery, for the node)",
    )
    build.set_defaults(handler=_build)
    tool = actions.add_parser(
        "tool",
        help="run kubectl (at the API server's release) or helm, building it on first use",
        description="Run kubectl at the local control plane's Kubernetes release, or the pinned "
        "helm, with the arguments given; the first use builds it from the Go module proxy "
        "(progress on stderr) and caches it. `make setup` writes .venv/bin/kubectl and "
        ".venv/bin/helm, which do the same, so with .venv/bin on PATH `kubectl` and `helm` "
        "are these.",
    )
    tool.add_argument("name", choices=("kubectl", "helm"), help="the program")
    tool.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    tool.set_defaults(handler=_tool)
