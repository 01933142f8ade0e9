"""Events land on the object, and repeats are folded into a count."""

from wukong.runtime import Client, EventRecorder
from wukong.runtime.resources import CONFIGMAPS, EVENTS


async def test_repeated_events_are_counted(client: Client, namespace: str) -> None:
    obj = await client.create(CONFIGMAPS, {"metadata": {"name": "cm", "namespace": namespace}})
    obj |= {"apiVersion": "v1", "kind": "ConfigMap"}
    recorder = EventRecorder(component="wukong-test")
    for _ in range(3):
        await recorder.record(
            client,
            obj,
            type="Warning",
            reason="StorageClassNotFound",
            message="storage class fast not found",
        )
    await recorder.record(client, obj, type="Normal", reason="Created", message="created")

    events = (
        await client.list(
            EVENTS,
            namespace=namespace,
            field_selector=f"involvedObject.uid={obj['metadata']['uid']}",
        )
    )["items"]
    by_reason = {e["reason"]: e for e in events}
    assert set(by_reason) == {"StorageClassNotFound", "Created"}
    assert by_reason["StorageClassNotFound"]["count"] == 3
    assert by_reason["StorageClassNotFound"]["type"] == "Warning"
    assert by_reason["Created"]["source"]["component"] == "wukong-test"
