"""Kubernetes Events about objects, as `kubectl describe` shows them.

`EventRecorder.record(obj, type=..., reason=..., message=...)` writes a
core/v1 Event whose involvedObject is `obj`. Repeats of the same
(object, type, reason, message) within a process are folded into one Event
whose `count` and `lastTimestamp` are bumped, as client-go's correlator does,
so a reconcile that fails every few seconds does not flood etcd.

Recording is best effort: a failure is logged at DEBUG and never fails the
reconcile that reported it (an Event is commentary, not state).
"""

import datetime
import logging
import uuid
from typing import Literal

from wukong.runtime._client import Client, Object
from wukong.runtime._errors import ApiError, ApiTimeout, NotFound
from wukong.runtime.resources import EVENTS

log = logging.getLogger("wukong.runtime.events")

EventType = Literal["Normal", "Warning"]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# Names of objects, Events included, are DNS subdomains of at most 253 characters.
_MAX_NAME = 253
_SUFFIX = 12


def event_name(object_name: str) -> str:
    """`<object>.<random>`, with the object's part cut so the name stays valid."""
    prefix = object_name[: _MAX_NAME - _SUFFIX - 1].rstrip(".-")
    return f"{prefix}.{uuid.uuid4().hex[:_SUFFIX]}"


class EventRecorder:
    """Writes Events as `component`, folding repeats into one Event with a count."""

    def __init__(self, *, component: str) -> None:
        self.component = component
        # (uid, type, reason, message) -> (namespace, event name, count)
        self._seen: dict[tuple[str, str, str, str], tuple[str, str, int]] = {}

    async def record(
        self, client: Client, obj: Object, *, type: EventType, reason: str, message: str
    ) -> None:
        """An Event about `obj`; best effort (a failure is logged at DEBUG, never raised)."""
        metadata = obj["metadata"]
        namespace = metadata.get("namespace") or "default"
        key = (metadata.get("uid", ""), type, reason, message)
        try:
            seen = self._seen.get(key)
            if seen is not None:
                event_namespace, name, count = seen
                try:
                    await client.patch(
                        EVENTS,
                        name,
                        {"count": count + 1, "lastTimestamp": _now()},
                        namespace=event_namespace,
                    )
                    self._seen[key] = (event_namespace, name, count + 1)
                    return
                except NotFound:
                    pass  # expired (events have a TTL): write a new one
            name = event_name(metadata["name"])
            now = _now()
            await client.create(
                EVENTS,
                {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {"name": name, "namespace": namespace},
                    "involvedObject": {
                        "apiVersion": obj.get("apiVersion"),
                        "kind": obj.get("kind"),
                        "name": metadata["name"],
                        "namespace": metadata.get("namespace"),
                        "uid": metadata.get("uid"),
                        "resourceVersion": metadata.get("resourceVersion"),
                    },
                    "type": type,
                    "reason": reason,
                    "message": message,
                    "source": {"component": self.component},
                    "reportingComponent": self.component,
                    "firstTimestamp": now,
                    "lastTimestamp": now,
                    "count": 1,
                },
            )
            self._seen[key] = (namespace, name, 1)
        except (ApiError, ApiTimeout) as exc:
            log.debug("could not record event %s on %s: %s", reason, metadata.get("name"), exc)
