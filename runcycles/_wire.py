"""The one generic mapping engine between attrs models and wire (JSON-ready) dicts.

Each wire field of a model carries a :class:`WireSpec` in its attrs metadata (under :data:`META_KEY`),
built with the helpers below (``STR``, ``INT``, ``model(Amount)``, ``enum_of(Unit)``, ...). From that:

* :func:`to_wire` is strict: it writes only fields the spec defines, never ``None``, ints as ints, enum
  members as their value, and never the ``extra`` mapping.
* :func:`from_wire` is lenient about *what* arrives and strict about *types*: unknown fields go to the
  model's ``extra`` mapping, unknown enum values stay raw strings (or map to a fallback member such as
  ``ErrorCode.UNKNOWN``, keeping the raw string in a sibling attribute), JSON ``null`` on an optional field
  reads as absent. A missing required field or a wrongly typed value raises
  :class:`~runcycles.errors.ResponseFormatError` naming the field; nothing else escapes. Readers do not
  apply the construction-time validators (lengths, ranges): a server's answer is taken as sent.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, TypeVar, cast

import attrs

from .errors import ResponseFormatError

__all__ = ["META_KEY", "Kind", "WireSpec", "from_wire", "to_wire"]

META_KEY = "runcycles.wire"

T = TypeVar("T")


class Kind(enum.Enum):
    """How a field's value looks on the wire."""

    STR = "str"
    INT = "int"
    BOOL = "bool"
    OBJECT = "object"  # free-form JSON object, kept as a dict
    STR_MAP = "str_map"  # object of string values
    STR_LIST = "str_list"  # array of strings, kept as a tuple
    SCOPES = "scopes"  # array of scope strings; object items {"scope": ...} read as their scope
    MODEL = "model"  # nested model
    MODEL_LIST = "model_list"  # array of nested models, kept as a tuple
    ENUM = "enum"  # string enum; unknown values stay raw strings (or map to ``fallback``)


@attrs.frozen(kw_only=True)
class WireSpec:
    """Wire metadata of one model field."""

    kind: Kind
    name: str | None = None
    model: type | None = None
    enum_cls: type[enum.Enum] | None = None
    fallback: enum.Enum | None = None
    raw_attr: str | None = None


def _meta(spec: WireSpec) -> dict[str, Any]:
    return {META_KEY: spec}


STR = _meta(WireSpec(kind=Kind.STR))
INT = _meta(WireSpec(kind=Kind.INT))
BOOL = _meta(WireSpec(kind=Kind.BOOL))
OBJECT = _meta(WireSpec(kind=Kind.OBJECT))
STR_MAP = _meta(WireSpec(kind=Kind.STR_MAP))
STR_LIST = _meta(WireSpec(kind=Kind.STR_LIST))
SCOPES = _meta(WireSpec(kind=Kind.SCOPES))


def model(cls: type) -> dict[str, Any]:
    """Metadata of a nested-model field."""
    return _meta(WireSpec(kind=Kind.MODEL, model=cls))


def model_list(cls: type) -> dict[str, Any]:
    """Metadata of an array-of-models field."""
    return _meta(WireSpec(kind=Kind.MODEL_LIST, model=cls))


def enum_of(
    cls: type[enum.Enum], *, fallback: enum.Enum | None = None, raw_attr: str | None = None
) -> dict[str, Any]:
    """Metadata of a string-enum field.

    An unknown wire value is kept as the raw string, unless ``fallback`` is given: then the field gets that
    member and the raw string goes to the attribute ``raw_attr`` (which :func:`to_wire` writes back instead
    of the fallback's value).
    """
    return _meta(WireSpec(kind=Kind.ENUM, enum_cls=cls, fallback=fallback, raw_attr=raw_attr))


def wire_spec(field: attrs.Attribute[Any]) -> WireSpec | None:
    """The :class:`WireSpec` of an attrs field, or ``None`` for a non-wire attribute."""
    spec = field.metadata.get(META_KEY)
    return spec if isinstance(spec, WireSpec) else None


# ---------------------------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------------------------


def to_wire(value: Any) -> dict[str, Any]:
    """Serialise a model to a JSON-ready dict (strict: defined fields only, no ``None``, no ``extra``)."""
    cls = type(value)
    if not attrs.has(cls):
        raise TypeError(f"to_wire expects a runcycles model, got {cls.__name__}")
    out: dict[str, Any] = {}
    for field in attrs.fields(cls):
        spec = wire_spec(field)
        if spec is None:
            continue
        item = getattr(value, field.name)
        if item is None:
            continue
        out[spec.name or field.name] = _encode(spec, item, value, f"{cls.__name__}.{field.name}")
    return out


def _encode(spec: WireSpec, item: Any, owner: Any, path: str) -> Any:
    kind = spec.kind
    if kind is Kind.ENUM:
        if spec.fallback is not None and item is spec.fallback and spec.raw_attr is not None:
            raw = getattr(owner, spec.raw_attr, None)
            if isinstance(raw, str):
                return raw
        return item.value if isinstance(item, enum.Enum) else str(item)
    if kind is Kind.INT:
        if isinstance(item, bool) or not isinstance(item, int):
            raise TypeError(f"{path} must be an int, got {type(item).__name__}")
        return int(item)
    if kind is Kind.MODEL:
        return to_wire(item)
    if kind is Kind.MODEL_LIST:
        return [to_wire(x) for x in item]
    if kind in (Kind.STR_LIST, Kind.SCOPES):
        return list(item)
    if kind in (Kind.OBJECT, Kind.STR_MAP):
        return dict(item)
    return item


# ---------------------------------------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------------------------------------


def from_wire(cls: type[T], data: object) -> T:
    """Read a wire dict as model ``cls``; raises only :class:`ResponseFormatError`."""
    if not attrs.has(cast(Any, cls)):
        raise TypeError(f"from_wire expects a runcycles model class, got {cls!r}")
    try:
        return _read(cls, data, cls.__name__)
    except ResponseFormatError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:  # pragma: no cover
        # Defensive: the reader is written not to raise these, but the contract is "only ResponseFormatError".
        raise ResponseFormatError(f"{cls.__name__} could not be read: {exc}") from exc


def _fail(path: str, expected: str, value: object) -> ResponseFormatError:
    return ResponseFormatError(f"{path} must be {expected}, got {_json_type(value)}")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _read(cls: type[T], data: object, path: str) -> T:
    if not isinstance(data, Mapping):
        raise _fail(path, "an object", data)
    fields = attrs.fields(cast(Any, cls))
    by_wire: dict[str, attrs.Attribute[Any]] = {}
    for field in fields:
        spec = wire_spec(field)
        if spec is not None:
            by_wire[spec.name or field.name] = field
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, raw in data.items():
        if key not in by_wire:
            extra[str(key)] = raw
    for wire_name, field in by_wire.items():
        spec = wire_spec(field)
        assert spec is not None
        raw = data.get(wire_name)
        field_path = f"{path}.{wire_name}"
        if raw is None:
            if field.default is attrs.NOTHING:
                reason = "is required" if wire_name not in data else "must not be null"
                raise ResponseFormatError(f"{field_path} {reason}")
            continue  # absent (or null) optional field: the attribute's default
        values[field.name] = _decode(spec, raw, field_path, values)
    instance = object.__new__(cls)
    for field in fields:
        if field.name in values:
            value = values[field.name]
        elif field.name == "extra":
            value = extra
        elif isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
            value = field.default.factory()
        elif field.default is attrs.NOTHING:
            value = None
        else:
            value = field.default
        object.__setattr__(instance, field.name, value)
    return instance


def _decode(spec: WireSpec, raw: object, path: str, values: dict[str, Any]) -> Any:
    kind = spec.kind
    if kind is Kind.STR:
        if not isinstance(raw, str):
            raise _fail(path, "a string", raw)
        return raw
    if kind is Kind.INT:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise _fail(path, "an integer", raw)
        return int(raw)
    if kind is Kind.BOOL:
        if not isinstance(raw, bool):
            raise _fail(path, "a boolean", raw)
        return raw
    if kind is Kind.OBJECT:
        if not isinstance(raw, Mapping):
            raise _fail(path, "an object", raw)
        return dict(raw)
    if kind is Kind.STR_MAP:
        if not isinstance(raw, Mapping):
            raise _fail(path, "an object", raw)
        for key, item in raw.items():
            if not isinstance(item, str):
                raise _fail(f"{path}[{key!r}]", "a string", item)
        return dict(raw)
    if kind is Kind.STR_LIST:
        items = _list(raw, path)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise _fail(f"{path}[{i}]", "a string", item)
        return tuple(items)
    if kind is Kind.SCOPES:
        return tuple(_scope(item, f"{path}[{i}]") for i, item in enumerate(_list(raw, path)))
    if kind is Kind.MODEL:
        assert spec.model is not None
        return _read(spec.model, raw, path)
    if kind is Kind.MODEL_LIST:
        assert spec.model is not None
        model_cls = spec.model
        return tuple(_read(model_cls, item, f"{path}[{i}]") for i, item in enumerate(_list(raw, path)))
    assert kind is Kind.ENUM and spec.enum_cls is not None
    if not isinstance(raw, str):
        raise _fail(path, "a string", raw)
    try:
        return spec.enum_cls(raw)
    except ValueError:
        if spec.fallback is None:
            return raw
        if spec.raw_attr is not None:
            values[spec.raw_attr] = raw
        return spec.fallback


def _list(raw: object, path: str) -> list[Any] | tuple[Any, ...]:
    if not isinstance(raw, (list, tuple)):
        raise _fail(path, "an array", raw)
    return raw


def _scope(item: object, path: str) -> str:
    if isinstance(item, str):
        return item
    # Some extension test vectors send {"scope": "tenant:a", "remaining": {...}} items.
    if isinstance(item, Mapping):
        scope = item.get("scope")
        if isinstance(scope, str):
            return scope
        raise _fail(f"{path}.scope", "a string", scope)
    raise _fail(path, "a string", item)
