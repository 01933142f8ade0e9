"""`take_lease`: the drill's intruder takes the operator's Lease even when the
holder's renewal lands between its read and its write."""

import copy
from typing import Any

import pytest

from wukong.demo.drill import take_lease
from wukong.demo.stack import DemoError
from wukong.runtime import Conflict, Resource
from wukong.runtime.resources import LEASES


class RenewingHolder:
    """A Lease store whose holder renews it `renewals` times just after a read, so
    the write that follows carries a stale resourceVersion."""

    def __init__(self, renewals: int) -> None:
        self.renewals = renewals
        self.lease: dict[str, Any] = {
            "metadata": {"name": "op", "namespace": "ns", "resourceVersion": "1"},
            "spec": {"holderIdentity": "op-0", "leaseDurationSeconds": 15},
        }
        self.reads = 0

    async def get(self, resource: Resource, name: str, *, namespace: str) -> dict[str, Any]:
        assert (resource, name, namespace) == (LEASES, "op", "ns")
        self.reads += 1
        read = copy.deepcopy(self.lease)
        if self.renewals:
            self.renewals -= 1
            self._bump()
        return read

    async def update(self, resource: Resource, lease: dict[str, Any]) -> dict[str, Any]:
        assert resource == LEASES
        version = lease["metadata"]["resourceVersion"]
        if version != self.lease["metadata"]["resourceVersion"]:
            raise Conflict(
                status=409, reason="Conflict", message="modified", verb="update", path="lease"
            )
        self.lease = copy.deepcopy(lease)
        self._bump()
        return self.lease

    def _bump(self) -> None:
        metadata = self.lease["metadata"]
        metadata["resourceVersion"] = str(int(metadata["resourceVersion"]) + 1)


async def test_a_renewal_between_read_and_write_is_retried() -> None:
    store = RenewingHolder(renewals=3)
    await take_lease(store, name="op", namespace="ns", holder="intruder")  # type: ignore[arg-type]
    spec = store.lease["spec"]
    assert spec["holderIdentity"] == "intruder"
    assert spec["renewTime"] == spec["acquireTime"]
    assert store.reads == 4  # three lost races, then the write that won


async def test_a_holder_that_always_wins_is_a_clear_error() -> None:
    store = RenewingHolder(renewals=1000)
    with pytest.raises(DemoError, match="could not take Lease ns/op"):
        await take_lease(store, name="op", namespace="ns", holder="intruder")  # type: ignore[arg-type]
    assert store.lease["spec"]["holderIdentity"] == "op-0"
