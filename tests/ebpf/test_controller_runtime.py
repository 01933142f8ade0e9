"""A real controller-runtime controller against the local control plane, traced by the agent.

The controller is the benchmark's Go peer (bench/peers/controller-runtime),
built from the Go module proxy. It reconciles ConfigMaps, then gets SIGTERM:
its manager stops every runnable by cancelling its context. The agent must
find it (and only it, with --controller-runtime-only), see the cancellations
and name controller-runtime's functions as the callers.
"""

import asyncio
import signal
import subprocess
import uuid
from collections import Counter
from pathlib import Path

from tests.ebpf.agent_helpers import Running
from tests.polling import wait_until
from wukong.devcluster import ControlPlane, binaries
from wukong.ebpf.agent import Agent
from wukong.ebpf.discovery import Discovery
from wukong.ebpf.records import Cancellation
from wukong.runtime import Client
from wukong.runtime.resources import CONFIGMAPS, NAMESPACES

PEER = Path(__file__).resolve().parents[2] / "bench/peers/controller-runtime"


async def test_controller_runtime_shutdown_is_traced(
    control_plane: ControlPlane, client: Client
) -> None:
    binary = binaries.go_program(PEER, name="bench-controller-runtime-peer", progress=print)
    namespace = f"cr-{uuid.uuid4().hex[:8]}"
    await client.create(NAMESPACES, {"metadata": {"name": namespace}})
    controller = subprocess.Popen(  # noqa: ASYNC220 (Popen returns at once)
        [str(binary), f"--kubeconfig={control_plane.kubeconfig}", f"--namespace={namespace}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    seen: list[Cancellation] = []
    try:
        assert controller.stdout is not None
        assert '"ready"' in controller.stdout.readline()
        discovery = Discovery(controller_runtime_only=True)
        assert controller.pid in discovery.scan()
        agent = Agent(node="test-node", discovery=discovery, on_cancel=seen.append)
        with Running(agent) as running:
            # Compiling the probe (clang, in BCC) takes seconds, more on a busy machine.
            wait_until(
                lambda: controller.pid in running.agent.probes, "the agent to attach", timeout=90
            )
            for index in range(5):
                await client.create(
                    CONFIGMAPS, {"metadata": {"name": f"cm-{index}", "namespace": namespace}}
                )
            controller.send_signal(signal.SIGTERM)
            await asyncio.to_thread(controller.wait, 30)
            await asyncio.sleep(0.5)
    finally:
        controller.kill()
    mine = [c for c in seen if c.pid == controller.pid]
    assert mine, "no cancellation traced at shutdown"
    assert {c.runtime for c in mine} == {"go"}
    assert Counter(c.error for c in mine)["canceled"] == len(mine)
    assert any(c.root for c in mine), Counter((c.root, c.caller) for c in mine)
    callers = {c.caller for c in mine}
    assert any(caller.startswith("sigs.k8s.io/controller-runtime") for caller in callers), callers
