"""kopf as a capacity peer: every BenchObject gets one status patch, as kopf users write it.

`@kopf.on.resume` runs for objects that exist when the operator starts and
`@kopf.on.create` for new ones; the handler sets `patch.status`, which kopf
writes back together with its own bookkeeping (that is kopf's real cost).
Run with `kopf run --standalone --namespace NS bench/peers/kopf_status_peer.py`;
`BENCH_TAG` is the value written to status.observedBy. JSON lines on stdout.
"""

import json
import os
import sys
import time
from typing import Any

import kopf

TAG = os.environ.get("BENCH_TAG", "kopf")


def emit(event: str, **fields: object) -> None:
    sys.stdout.write(json.dumps({"event": event, "t": time.time(), **fields}) + "\n")
    sys.stdout.flush()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = False  # no Events for each handler call
    settings.watching.server_timeout = 600
    emit("ready")


@kopf.on.resume("bench.novasphere.dev", "v1", "benchobjects")
@kopf.on.create("bench.novasphere.dev", "v1", "benchobjects")
def reconcile(name: str, meta: kopf.Meta, patch: kopf.Patch, **_: Any) -> None:
    patch.status["observedBy"] = TAG
    patch.status["observedGeneration"] = meta.get("generation")
    emit("reconcile", name=name)
