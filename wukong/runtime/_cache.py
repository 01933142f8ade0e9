"""The local cache an informer fills: objects by key, plus field indexes.

Keys are `namespace/name` (just `name` for cluster-scoped objects), as in
client-go. `managedFields` are stripped on the way in: they are often the
largest part of an object and no reconciler reads them.

Objects are kept as compact JSON and decoded on every read. A decoded
Wukong-sized object takes about 4.5 KB of Python dicts and strings, its JSON
about 0.7 KB: a cache of 100,000 objects fits in a tenth of the memory, for
some microseconds per read. Every read returns a fresh object, so a
reconciler that changes what it read cannot corrupt the cache (what
controller-runtime's cache gets by deep-copying).

Indexes map an object to zero or more string values (e.g. the
NetworkAttachmentDefinitions a Wukong names); `by_index(index, value)` then finds
objects without a scan. This is how a watch on one kind finds the objects of
another kind that refer to it (a NAD's event mapped to its Wukongs). Indexes
must be added before the informer starts filling the cache.
"""

import json
from collections import defaultdict
from collections.abc import Callable, Iterable

from wukong.runtime._client import Object
from wukong.runtime._labels import parse_selector

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
        self._objects: dict[str, bytes] = {}  # compact JSON
        self._index_funcs: dict[str, IndexFunc] = {}
        # index name -> value -> keys
        self._indexes: dict[str, defaultdict[str, set[str]]] = {}

    def add_index(self, name: str, func: IndexFunc) -> None:
        if name in self._index_funcs:
            raise ValueError(f"index {name!r} already exists")
        self._index_funcs[name] = func
        self._indexes[name] = defaultdict(set)
        for key, raw in self._objects.items():
            self._index(key, _decode(raw))

    # -- reads ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._objects)

    def get(self, key: str) -> Object | None:
        raw = self._objects.get(key)
        return None if raw is None else _decode(raw)

    def get_by_name(self, namespace: str | None, name: str) -> Object | None:
        return self.get(f"{namespace}/{name}" if namespace else name)

    def list_objects(
        self, *, namespace: str | None = None, label_selector: str | None = None
    ) -> list[Object]:
        matches = parse_selector(label_selector) if label_selector else None
        prefix = f"{namespace}/" if namespace is not None else ""
        result = []
        for key, raw in self._objects.items():
            if not key.startswith(prefix):  # the key names the namespace: no decoding
                continue
            obj = _decode(raw)
            if matches is not None and not matches(obj["metadata"].get("labels") or {}):
                continue
            result.append(obj)
        return result

    def by_index(self, index: str, value: str) -> list[Object]:
        if index not in self._indexes:
            raise KeyError(f"no index named {index!r}")
        return [_decode(self._objects[key]) for key in sorted(self._indexes[index].get(value, ()))]

    def keys(self) -> list[str]:
        return list(self._objects)

    # -- writes (by the informer) ---------------------------------------------------

    def upsert(self, obj: Object) -> tuple[Object | None, Object]:
        """Store `obj` stripped; return (the previous version or None, the stored version)."""
        obj = strip(obj)
        key = object_key(obj)
        old = self.get(key)
        if old is not None:
            self._unindex(key, old)
        self._objects[key] = _encode(obj)
        self._index(key, obj)
        return old, obj

    def remove(self, key: str) -> Object | None:
        raw = self._objects.pop(key, None)
        if raw is None:
            return None
        old = _decode(raw)
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


def _encode(obj: Object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _decode(raw: bytes) -> Object:
    obj: Object = json.loads(raw)
    return obj
