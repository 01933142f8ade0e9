"""`wukong_wukongset_replicas`: each cached WukongSet's counts, read at scrape time."""

from prometheus_client import CollectorRegistry, generate_latest

from tests.contract import check_exposition
from tests.exposition import metric_samples
from wukong.metrics import create_metrics
from wukong.metrics.sets import FAMILY, STATES, WukongSetReplicasCollector
from wukong.operator.wukongset import set_replicas
from wukong.runtime import Object, Store


def _set(name: str, replicas: int, status: Object | None = None) -> Object:
    body: Object = {
        "metadata": {"name": name, "namespace": "shop", "uid": f"uid-{name}"},
        "spec": {"replicas": replicas},
    }
    if status is not None:
        body["status"] = status
    return body


def _served(registry: CollectorRegistry) -> dict[tuple[str, str], dict[str, float]]:
    served: dict[tuple[str, str], dict[str, float]] = {}
    for labels, value in metric_samples(generate_latest(registry).decode(), FAMILY):
        key = (labels["object_namespace"], labels["wukongset"])
        served.setdefault(key, {})[labels["state"]] = value
    return served


def test_each_cached_set_is_served_by_state_and_goes_with_the_set() -> None:
    store = Store()
    store.upsert(
        _set(
            "web",
            1,
            {
                "replicas": 2,
                "readyReplicas": 2,
                "availableReplicas": 1,
                "updatedReplicas": 2,
                "migratingReplicas": 1,
            },
        )
    )
    store.upsert(_set("db", 3))  # not reconciled yet: no status
    registry = CollectorRegistry()
    collector = WukongSetReplicasCollector()
    registry.register(collector)
    collector.track(set_replicas(store))

    served = _served(registry)
    assert served[("shop", "web")] == {
        "desired": 1,
        "current": 2,
        "ready": 2,
        "available": 1,
        "updated": 2,
        "migrating": 1,
    }
    assert served[("shop", "db")] == {state: (3 if state == "desired" else 0) for state in STATES}

    store.remove("shop/db")
    assert set(_served(registry)) == {("shop", "web")}


def test_the_family_is_on_the_operators_registry_from_the_start() -> None:
    text = generate_latest(create_metrics().registry).decode()
    assert f"# TYPE {FAMILY} gauge" in text
    assert metric_samples(text, FAMILY) == []
    assert check_exposition(text) == []
