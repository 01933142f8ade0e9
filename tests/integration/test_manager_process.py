"""A real operator process: graceful SIGTERM, and leader election between replicas.

The operator under test is tests/integration/programs/configmap_operator.py,
run as its own process so signals and SIGKILL are real.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.integration.programs.configmap_operator import RECONCILED_BY
from tests.polling import eventually
from wukong.demo.drill import take_lease
from wukong.devcluster import ControlPlane
from wukong.runtime import Client
from wukong.runtime.resources import CONFIGMAPS, LEASES

REPO = Path(__file__).resolve().parents[2]


class Operator:
    def __init__(
        self,
        control_plane: ControlPlane,
        namespace: str,
        identity: str,
        tmp_path: Path,
        *extra: str,
    ) -> None:
        self.log_path = tmp_path / f"{identity}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.programs.configmap_operator",
                f"--kubeconfig={control_plane.kubeconfig}",
                f"--namespace={namespace}",
                f"--identity={identity}",
                *extra,
            ],
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    @property
    def output(self) -> str:
        return self.log_path.read_text()

    def records(self, needle: str = "", *, level: str | None = None) -> list[dict[str, Any]]:
        """Log records (JSON lines) whose message contains `needle`, at `level` if given."""
        found = []
        for line in self.output.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if needle in record["message"] and level in (None, record["level"]):
                found.append(record)
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


async def _configmap(client: Client, namespace: str, name: str) -> None:
    await client.create(CONFIGMAPS, {"metadata": {"name": name, "namespace": namespace}})


async def test_sigterm_cancels_reconciles_in_flight_and_exits(
    control_plane: ControlPlane, client: Client, namespace: str, tmp_path: Path
) -> None:
    operator = Operator(control_plane, namespace, "solo", tmp_path, "--shutdown-grace=5")
    try:
        for name in ("slow-1", "slow-2", "slow-3"):
            await _configmap(client, namespace, name)
        await eventually(
            lambda: len(operator.records("reconcile started")) >= 3,
            timeout=30,
            what="three reconciles in flight",
        )
        operator.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = await asyncio.to_thread(operator.proc.wait, 15)
        waited = time.monotonic() - started
    finally:
        operator.stop()
    assert code == 0, operator.output
    assert waited < 5 + 2, f"took {waited:.1f}s to stop with a 5s grace period"
    assert len(operator.records("reason=shutdown", level="DEBUG")) == 3, operator.output
    assert not operator.records(level="ERROR"), operator.output


async def _lease_holder(client: Client, namespace: str, name: str) -> str | None:
    try:
        lease = await client.get(LEASES, name, namespace=namespace)
    except Exception:
        return None
    holder: str | None = lease["spec"].get("holderIdentity")
    return holder


async def _reconciled_by(client: Client, namespace: str, name: str) -> str | None:
    obj = await client.get(CONFIGMAPS, name, namespace=namespace)
    value: str | None = (obj["metadata"].get("annotations") or {}).get(RECONCILED_BY)
    return value


async def test_leader_election_hands_over_and_loser_cancels(
    control_plane: ControlPlane, client: Client, namespace: str, tmp_path: Path
) -> None:
    lease = "configmap-operator"
    first = Operator(control_plane, namespace, "replica-a", tmp_path, f"--lease-name={lease}")
    second: Operator | None = None
    try:

        async def holder_is(identity: str) -> bool:
            return await _lease_holder(client, namespace, lease) == identity

        await eventually(lambda: holder_is("replica-a"), timeout=30, what="replica-a leads")
        second = Operator(control_plane, namespace, "replica-b", tmp_path, f"--lease-name={lease}")
        await _configmap(client, namespace, "cm-1")

        async def reconciled_by(identity: str, name: str) -> bool:
            return await _reconciled_by(client, namespace, name) == identity

        await eventually(lambda: reconciled_by("replica-a", "cm-1"), what="leader reconciles")
        await asyncio.sleep(1.0)
        assert not second.records("reconcile started"), "the standby must not reconcile"

        # The leader dies without releasing the lease: the standby takes over
        # once the lease (4 s) expires.
        first.proc.kill()
        killed = time.monotonic()
        await eventually(lambda: holder_is("replica-b"), timeout=30, what="replica-b leads")
        handover = time.monotonic() - killed
        assert handover < 4.0 + 3.0, f"handover took {handover:.1f}s for a 4s lease"
        await _configmap(client, namespace, "cm-2")
        await eventually(lambda: reconciled_by("replica-b", "cm-2"), what="new leader reconciles")

        # The new leader loses its lease (someone else takes it) while a
        # reconcile is in flight: it is cancelled with leader_lost, and the
        # process stops reconciling and exits.
        await _configmap(client, namespace, "slow-1")
        await eventually(
            lambda: len(second.records("reconcile started")) >= 2, what="a slow reconcile in flight"
        )
        await take_lease(client, name=lease, namespace=namespace, holder="intruder")
        code = await asyncio.to_thread(second.proc.wait, 30)
        assert code == 2, second.output
        assert second.records("reason=leader_lost", level="DEBUG"), second.output
        assert not second.records(level="ERROR"), second.output
    finally:
        first.stop()
        if second is not None:
            second.stop()
