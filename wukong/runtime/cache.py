"""The local cache an informer fills: objects by key, plus field indexes.

Keys are `namespace/name` (just `name` for cluster-scoped objects), as in
client-go. `managedFields` are stripped on the way in: they are often the
largest part of an object and no reconciler reads them.

Indexes map an object to zero or more string values (e.g. a Wukong's
`spec.podName`); `by_index(index, value)` then finds objects without a scan.
This is how a watch on one kind finds the objects of another kind that refer
to it (seed 004: a pod event mapped to its VM through a field index). Indexes
must be added before the informer starts filling the cache.
"""

from collections import defaultdict
from collections.abc import Callable, Iterable

from wukong.runtime.client import Object
from wukong.runtime.labels import parse_selector

IndexFunc = Callable[[Object], Iterable[str]]


def object_key(obj: Object) -> str:
    metadata = obj["metadata"]
    namespace = metadata.get("namespace")
    return f"{namespace}/{metadata['name']}" if namespace else str(metadata["name"])


def strip(obj: Object) -> Object:
    """The object as cached: without managedFields."""
    metadata = obj.get("metadata")
    if metadata and "managedFields" in metadata:
        obj = {**obj, "metadata": {k: v for k, v in metadata.items() if k != "managedFields"}}
    return obj


class Store:
    """Objects by key with field indexes. Not thread-safe: used from one event loop."""

    def __init__(self) -> None:
        self._objects: dict[str, Object] = {}
        self._index_funcs: dict[str, IndexFunc] = {}
        # index name -> value -> keys
        self._indexes: dict[str, defaultdict[str, set[str]]] = {}

    def add_index(self, name: str, func: IndexFunc) -> None:
        if name in self._index_funcs:
            raise ValueError(f"index {name!r} already exists")
        self._index_funcs[name] = func
        self._indexes[name] = defaultdict(set)
        for key, obj in self._objects.items():
            self._index(key, obj)

    # -- reads ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._objects)

    def get(self, key: str) -> Object | None:
        return self._objects.get(key)

    def get_by_name(self, namespace: str | None, name: str) -> Object | None:
        return self._objects.get(f"{namespace}/{name}" if namespace else name)

    def list_objects(
        self, *, namespace: str | None = None, label_selector: str | None = None
    ) -> list[Object]:
        matches = parse_selector(label_selector) if label_selector else None
        result = []
        for obj in self._objects.values():
            metadata = obj["metadata"]
            if namespace is not None and metadata.get("namespace") != namespace:
                continue
            if matches is not None and not matches(metadata.get("labels") or {}):
                continue
            result.append(obj)
        return result

    def by_index(self, index: str, value: str) -> list[Object]:
        if index not in self._indexes:
            raise KeyError(f"no index named {index!r}")
        return [self._objects[key] for key in sorted(self._indexes[index].get(value, ()))]

    def keys(self) -> list[str]:
        return list(self._objects)

    # -- writes (by the informer) ---------------------------------------------------

    def upsert(self, obj: Object) -> Object | None:
        """Store `obj` (stripped); return the previous version, if any."""
        obj = strip(obj)
        key = object_key(obj)
        old = self._objects.get(key)
        if old is not None:
            self._unindex(key, old)
        self._objects[key] = obj
        self._index(key, obj)
        return old

    def remove(self, key: str) -> Object | None:
        old = self._objects.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def _index(self, key: str, obj: Object) -> None:
        for name, func in self._index_funcs.items():
            for value in func(obj):
                self._indexes[name][value].add(key)

    def _unindex(self, key: str, obj: Object) -> None:
        for name, func in self._index_funcs.items():
            for value in func(obj):
                keys = self._indexes[name].get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._indexes[name][value]
