"""OpenAPI v3 schemas generated from dataclasses, for CRDs that cannot drift from code.

A field's Python type gives its OpenAPI type (`str`, `int`, `bool`, nested
dataclasses, `list[...]`, `dict[str, ...]` for a map; `X | None` means
optional); `spec_field(...)` adds what types cannot say: a description
(required: it becomes `kubectl explain`), a default, bounds, patterns and CEL
rules (`x-kubernetes-validations`).
JSON names are the camelCase of the Python names.

The same dataclasses read objects back (`from_json`) and write them
(`to_json`), so the types that generate the CRD are also the typed views the
controller works on: there is no second description of the fields to drift.
"""

import dataclasses
import types
import typing
from typing import Any

Schema = dict[str, Any]
_T = typing.TypeVar("_T")


def spec_field(*, description: str, default: Any = dataclasses.MISSING, **schema: Any) -> Any:
    """A dataclass field carrying its OpenAPI description and extra schema keywords."""
    metadata = {"description": description, "schema": schema}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=metadata)
    if isinstance(default, list):
        return dataclasses.field(default_factory=list, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def json_name(python_name: str) -> str:
    head, *rest = python_name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def schema_of(cls: type, *, description: str | None = None) -> Schema:
    """The OpenAPI object schema of dataclass `cls`."""
    hints = typing.get_type_hints(cls)
    properties: dict[str, Schema] = {}
    required: list[str] = []
    for field in dataclasses.fields(cls):
        python_type, optional = _unwrap_optional(hints[field.name])
        prop = _type_schema(python_type)
        prop["description"] = field.metadata["description"]
        prop.update(field.metadata.get("schema", {}))
        has_default = (
            field.default is not dataclasses.MISSING
            or field.default_factory is not dataclasses.MISSING
        )
        if field.default is not dataclasses.MISSING and field.default is not None:
            prop["default"] = field.default
        if not optional and not has_default:
            required.append(json_name(field.name))
        properties[json_name(field.name)] = prop
    schema: Schema = {"type": "object", "properties": properties}
    # Object-level keywords (e.g. CEL rules across fields) from a `SCHEMA` ClassVar.
    schema.update(getattr(cls, "SCHEMA", {}))
    if required:
        schema["required"] = required
    doc = description or (cls.__doc__ or "").strip()
    if doc:
        schema["description"] = doc
    return schema


def from_json(cls: type[_T], data: Any) -> _T:
    """An instance of dataclass `cls` read from `data` as the API server stores it
    (camelCase keys, unknown keys ignored, absent or null fields defaulted).

    The values are trusted to have the schema's types: the API server checked
    them. Lists become lists of their items' type.
    """
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        value = (data or {}).get(json_name(field.name))
        if value is not None:
            values[field.name] = _read(_unwrap_optional(hints[field.name])[0], value)
    return cls(**values)


def _read(hint: Any, value: Any) -> Any:
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return [_read(item, each) for each in value]
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return from_json(hint, value)
    return value


def to_json(instance: Any) -> Any:
    """`instance` (a dataclass, a list of them, or a plain value) as JSON, without the
    fields that are None: what `from_json` reads back equal."""
    if dataclasses.is_dataclass(instance) and not isinstance(instance, type):
        return {
            json_name(field.name): to_json(value)
            for field in dataclasses.fields(instance)
            if (value := getattr(instance, field.name)) is not None
        }
    if isinstance(instance, list | tuple):
        return [to_json(each) for each in instance]
    return instance


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
        raise TypeError(f"unsupported union {hint!r}")
    return hint, False


def _type_schema(hint: Any) -> Schema:
    if hint is str:
        return {"type": "string"}
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer", "format": "int64"}
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return {"type": "array", "items": _type_schema(item)}
    if typing.get_origin(hint) is dict:
        key, value = typing.get_args(hint)
        if key is not str:
            raise TypeError(f"map keys must be str: {hint!r}")
        return {"type": "object", "additionalProperties": _type_schema(value)}
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return schema_of(hint)
    raise TypeError(f"no OpenAPI type for {hint!r}")
