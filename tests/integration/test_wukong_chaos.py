"""Nothing lost: 200 Wukongs through operator SIGKILLs and API server restarts.

The operator runs as `wukong run` (a real process, supervised like a pod:
restarted whenever it exits), the simulator alongside. While Wukongs are
created, resized and deleted, the operator is killed with SIGKILL at random
moments ten times and the API server is restarted twice. In the end every
remaining Wukong is Running with a true status (its generation observed, its
disks at their requested capacity, its instance Running on the node it names),
every deleted one is gone, and no child (claim, DataVolume, NAD, VM, VMI) is
left without its Wukong. The time to converge after the last fault is printed,
never asserted.
"""

import asyncio
import contextlib
import random
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from tests.integration.wukong_harness import StartWukong, WukongRun
from tests.polling import eventually
from wukong.devcluster import ControlPlane
from wukong.devcluster.simulator import SimulationConfig
from wukong.operator.api import WUKONG_LABEL, WUKONGS
from wukong.runtime import ApiError, ApiTimeout, NotFound, Object
from wukong.runtime.apis import (
    DATA_VOLUMES,
    NETWORK_ATTACHMENT_DEFINITIONS,
    VIRTUAL_MACHINE_INSTANCES,
    VIRTUAL_MACHINES,
)
from wukong.runtime.resources import PERSISTENT_VOLUME_CLAIMS

COUNT = 200
RESIZED = range(0, 50)
DELETED = range(140, COUNT)
KILLS = 10
API_RESTARTS_AFTER_KILLS = (3, 7)
CHILD_KINDS = (
    PERSISTENT_VOLUME_CLAIMS,
    DATA_VOLUMES,
    NETWORK_ATTACHMENT_DEFINITIONS,
    VIRTUAL_MACHINES,
    VIRTUAL_MACHINE_INSTANCES,
)
T = TypeVar("T")


async def _retrying(call: Callable[[], Awaitable[T]]) -> T:
    """`call` until the API server answers (it restarts during this test)."""
    for _ in range(600):
        try:
            return await call()
        except (aiohttp.ClientError, OSError, ApiTimeout):
            pass
        except ApiError as exc:
            if exc.status < 500 and exc.status != 429:
                raise
        await asyncio.sleep(0.1)
    raise AssertionError("the API server did not come back")


def _spec(index: int) -> Object:
    spec: Object = {"disks": [{"name": "root", "size": "1Gi"}]}
    if index % 2 == 0:
        spec["networks"] = [{"name": "data", "config": '{"type": "bridge"}'}]
    if index % 5 == 0:
        spec["disks"].append({"name": "os", "size": "1Gi", "image": "docker://example/os:1"})
    return spec


def wukong_run(kubeconfig: Path, namespace: str, log: Path, *flags: str) -> "Operator":
    """`wukong run` on `namespace`, no leader election, a 10 s reconcile timeout."""
    argv = [sys.executable, "-m", "wukong.cli", "run", f"--kubeconfig={kubeconfig}"]
    argv += [f"--namespace={namespace}", "--no-leader-elect", "--metrics-bind=0"]
    argv += ["--health-bind=0", *flags, "--reconcile-timeout=10"]
    return Operator(argv, log)


class Operator:
    """`wukong run` kept alive like a pod's container: restarted whenever it exits."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self._argv, self._log = argv, log.open("a")
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def ensure_running(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen(self._argv, stdout=self._log, stderr=subprocess.STDOUT)
            self.starts += 1

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    async def supervise(self) -> None:
        while True:
            self.ensure_running()
            await asyncio.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._log.close()


async def _workload(run: WukongRun) -> None:
    names = [f"vm-{i:03d}" for i in range(COUNT)]
    for start in range(0, COUNT, 20):
        await asyncio.gather(
            *(
                _retrying(lambda i=i: run.create(names[i], _spec(i)))
                for i in range(start, min(start + 20, COUNT))
            )
        )
    for i in RESIZED:
        grown = _spec(i)
        grown["disks"][0]["size"] = "2Gi"
        patch = {"spec": {"disks": grown["disks"]}}
        await _retrying(
            lambda i=i, patch=patch: run.client.patch(
                WUKONGS, names[i], patch, namespace=run.namespace
            )
        )
    for i in DELETED:
        with contextlib.suppress(NotFound):
            await _retrying(
                lambda i=i: run.client.delete(WUKONGS, names[i], namespace=run.namespace)
            )


async def _chaos(control_plane: ControlPlane, operator: Operator, rng: random.Random) -> float:
    """Inject the faults; returns when (loop time) the last one ended."""
    for kill in range(1, KILLS + 1):
        # Fault timing, not a wait for a condition: random moments are the point.
        await asyncio.sleep(rng.uniform(0.5, 3.0))
        operator.kill()
        if kill in API_RESTARTS_AFTER_KILLS:
            await asyncio.to_thread(control_plane.restart_apiserver, progress=lambda _: None)
    return asyncio.get_running_loop().time()


async def _problems(run: WukongRun) -> list[str]:
    """What still differs from the converged state (empty when converged)."""
    wukongs = (await run.client.list(WUKONGS, namespace=run.namespace))["items"]
    expected = {f"vm-{i:03d}" for i in range(COUNT) if i not in DELETED}
    problems = []
    by_name = {w["metadata"]["name"]: w for w in wukongs}
    if set(by_name) != expected:
        problems.append(f"{len(set(by_name) ^ expected)} Wukongs differ from the expected set")
    for name, wukong in sorted(by_name.items()):
        problems += [f"{name}: {p}" for p in _status_problems(wukong)]
    uids = {w["metadata"]["uid"] for w in wukongs}
    children = {
        resource: (await run.client.list(resource, namespace=run.namespace))["items"]
        for resource in CHILD_KINDS
    }
    # The status is true: the instance it describes runs where it says.
    instances = {i["metadata"]["name"]: i for i in children[VIRTUAL_MACHINE_INSTANCES]}
    for name, wukong in sorted(by_name.items()):
        instance = (instances.get(name) or {}).get("status") or {}
        if instance.get("phase") != "Running":
            problems.append(f"{name}: instance {instance.get('phase', 'missing')}")
        elif instance.get("nodeName") != (wukong.get("status") or {}).get("nodeName"):
            problems.append(f"{name}: status names another node than the instance's")
    for resource, items in children.items():
        for item in items:
            metadata = item["metadata"]
            owner = (metadata.get("labels") or {}).get(WUKONG_LABEL)
            # Claims of DataVolumes and VMIs are owned by a DataVolume or a VM; the
            # label names the Wukong on every child.
            wukong_uids = {
                ref["uid"]
                for ref in metadata.get("ownerReferences") or []
                if ref.get("kind") == WUKONGS.kind
            }
            if owner not in expected or wukong_uids - uids:
                problems.append(f"orphaned {resource.kind} {metadata['name']}")
    return problems


def _status_problems(wukong: Object) -> list[str]:
    status: dict[str, Any] = wukong.get("status") or {}
    problems = []
    if wukong["metadata"].get("deletionTimestamp"):
        problems.append("still being deleted")
    if status.get("phase") != "Running":
        problems.append(f"phase {status.get('phase')}")
    if status.get("observedGeneration") != wukong["metadata"]["generation"]:
        problems.append("generation not observed")
    ready = {c["type"]: c["status"] for c in status.get("conditions") or []}
    if ready != {"Ready": "True", "NetworksConfigured": "True", "VolumesBound": "True"}:
        problems.append(f"conditions {ready}")
    for disk, volume in zip(wukong["spec"]["disks"], status.get("volumes") or [], strict=False):
        if volume.get("capacity") != disk["size"]:
            problems.append(f"disk {disk['name']} at {volume.get('capacity')}, not {disk['size']}")
    return problems


async def test_two_hundred_wukongs_survive_operator_kills_and_api_server_restarts(
    control_plane: ControlPlane, start_wukong: StartWukong, tmp_path: Path
) -> None:
    simulation = SimulationConfig(
        bind_delay=0.1, resize_delay=0.1, import_delay=0.3, schedule_delay=0.1, boot_delay=0.1
    )
    run = await start_wukong(simulation=simulation)
    await run.stop_operator()  # the operator under test is the `wukong run` process
    operator = wukong_run(
        control_plane.kubeconfig,
        run.namespace,
        tmp_path / "operator.log",
        "--max-concurrent-reconciles=8",
    )
    supervisor = asyncio.create_task(operator.supervise())
    rng = random.Random(13)
    try:
        _, last_fault = await asyncio.gather(_workload(run), _chaos(control_plane, operator, rng))
        # Started again after the last kill (as a pod's container would be) before
        # convergence is judged and the starts are counted.
        await eventually(operator.running, "the operator started again", timeout=10)
        loop = asyncio.get_running_loop()
        latest: list[str] = []

        async def converged() -> bool:
            latest[:] = await _retrying(lambda: _problems(run))
            return not latest

        try:
            await eventually(converged, timeout=300, interval=1.0, what="convergence")
        except AssertionError as error:
            raise AssertionError(f"{error}: {len(latest)} left, e.g. {latest[:10]}") from None
        elapsed = loop.time() - last_fault
        print(
            f"\nchaos: {COUNT} Wukongs, {KILLS} SIGKILLs ({operator.starts} operator starts), "
            f"{len(API_RESTARTS_AFTER_KILLS)} API server restarts: converged {elapsed:.1f}s "
            "after the last fault"
        )
    finally:
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor
        operator.stop()
    # Only the kills restarted it: it waited out the API server restarts.
    assert operator.starts == KILLS + 1
