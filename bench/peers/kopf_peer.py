"""kopf as a benchmark peer: the same no-op reaction to ConfigMaps, as kopf users write it.

`@kopf.on.event` is kopf's handler without state persistence (no annotations
written back), the closest to a no-op reconcile; kopf has no RequeueAfter, so
this peer takes part in the latency, throughput and memory rounds only.
Run with `kopf run --standalone --namespace NS bench/peers/kopf_peer.py`;
JSON lines on stdout as the other peers.
"""

import json
import sys
import time
from typing import Any

import kopf


def emit(event: str, **fields: object) -> None:
    sys.stdout.write(json.dumps({"event": event, "t": time.time(), **fields}) + "\n")
    sys.stdout.flush()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = False  # no Events for each handler call
    settings.watching.server_timeout = 600
    emit("ready")


@kopf.on.event("", "v1", "configmaps")
def reconcile(name: str, type: str | None, **_: Any) -> None:
    if type in (None, "ADDED", "MODIFIED"):
        emit("reconcile", name=name)
