"""The one generic mapping engine between attrs models and wire (JSON-ready) dicts.

Each wire field of a model carries a :class:`WireSpec` in its attrs metadata (under :data:`META_KEY`),
built with the helpers below (``STR``, ``INT``, ``model(Amount)``, ``enum_of(Unit)``, ...). From that:

* :func:`to_wire` is strict: it writes only fields the spec defines, never ``None``, ints as ints, enum
  members as their value, and never the ``extra`` mapping.
* :func:`from_wire` is lenient about *what* arrives and strict about *types*: unknown fields go to the
  model's ``extra`` mapping, unknown enum values stay raw strings (or map to a fallback member such as
  ``ErrorCode.UNKNOWN``, keeping the raw string in a sibling attribute), JSON ``null`` on an optional field
  reads as absent; a malformed *optional extension* (fields marked ``lenient``: evidence, deny details,
  informational balances) is kept in ``extra`` and the rest read. A missing required field or a wrongly
  typed value raises
  :class:`~runcycles.errors.ResponseFormatError` naming the field; nothing else escapes. Readers do not
  apply the construction-time validators (lengths, ranges): a server's answer is taken as sent.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
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
    lenient: bool = False  # an optional extension: a malformed value is kept in ``extra``, not an error


def _meta(spec: WireSpec) -> dict[str, Any]:
    return {META_KEY: spec}


STR = _meta(WireSpec(kind=Kind.STR))
INT = _meta(WireSpec(kind=Kind.INT))
BOOL = _meta(WireSpec(kind=Kind.BOOL))
OBJECT = _meta(WireSpec(kind=Kind.OBJECT))
STR_MAP = _meta(WireSpec(kind=Kind.STR_MAP))
STR_LIST = _meta(WireSpec(kind=Kind.STR_LIST))
SCOPES = _meta(WireSpec(kind=Kind.SCOPES))


def model(cls: type, *, lenient: bool = False) -> dict[str, Any]:
    """Metadata of a nested-model field; ``lenient`` for an optional extension whose malformed value must not
    make the whole response unreadable (it is kept in ``extra`` instead)."""
    return _meta(WireSpec(kind=Kind.MODEL, model=cls, lenient=lenient))


def model_list(cls: type, *, lenient: bool = False) -> dict[str, Any]:
    """Metadata of an array-of-models field (``lenient`` as for :func:`model`)."""
    return _meta(WireSpec(kind=Kind.MODEL_LIST, model=cls, lenient=lenient))


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
# Compiled plans
#
# The field metadata is interpreted once per model class: the first read or write of a class builds a plan
# (closures per field, the wire-name set, the defaults) that later calls only execute. Classes are immutable
# once defined, so a plan never goes stale; the caches are plain dicts (a race builds the same plan twice).
# ---------------------------------------------------------------------------------------------------------

_Encoder = Callable[[Any, Any], Any]
_Decoder = Callable[[Any, str, dict[str, Any]], Any]

_writers: dict[type, Callable[[Any], dict[str, Any]]] = {}
_readers: dict[type, Callable[[object, str], Any]] = {}


# ---------------------------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------------------------


def to_wire(value: Any) -> dict[str, Any]:
    """Serialise a model to a JSON-ready dict (strict: defined fields only, no ``None``, no ``extra``)."""
    cls = type(value)
    write = _writers.get(cls)
    if write is None:
        if not attrs.has(cls):
            raise TypeError(f"to_wire expects a runcycles model, got {cls.__name__}")
        write = _writers[cls] = _compile_writer(cls)
    return write(value)


def _compile_writer(cls: type) -> Callable[[Any], dict[str, Any]]:
    """The writer of ``cls`` as one generated function: per wire field, skip ``None``, else encode and store."""
    namespace: dict[str, Any] = {}
    lines = ["def write(value):", "    out = {}"]
    for i, field in enumerate(attrs.fields(cls)):
        spec = wire_spec(field)
        if spec is None:
            continue
        encode = _encoder(spec, f"{cls.__name__}.{field.name}")
        lines.append(f"    item = value.{field.name}")
        lines.append("    if item is not None:")
        if encode is None:
            lines.append(f"        out[{spec.name or field.name!r}] = item")
        else:
            namespace[f"_encode{i}"] = encode
            lines.append(f"        out[{spec.name or field.name!r}] = _encode{i}(item, value)")
    lines.append("    return out")
    exec(compile("\n".join(lines), f"<runcycles wire writer of {cls.__qualname__}>", "exec"), namespace)
    write: Callable[[Any], dict[str, Any]] = namespace["write"]
    return write


def _encoder(spec: WireSpec, path: str) -> _Encoder | None:
    """The encoder of one field (``None``: the value is written as it is)."""
    kind = spec.kind
    if kind is Kind.ENUM:
        fallback, raw_attr = spec.fallback, spec.raw_attr

        def encode_enum(item: Any, owner: Any) -> Any:
            if fallback is not None and item is fallback and raw_attr is not None:
                raw = getattr(owner, raw_attr, None)
                if isinstance(raw, str):
                    return raw
            return item.value if isinstance(item, enum.Enum) else str(item)

        return encode_enum
    if kind is Kind.INT:

        def encode_int(item: Any, owner: Any) -> Any:
            if isinstance(item, bool) or not isinstance(item, int):
                raise TypeError(f"{path} must be an int, got {type(item).__name__}")
            return int(item)

        return encode_int
    if kind is Kind.MODEL:
        return lambda item, owner: to_wire(item)
    if kind is Kind.MODEL_LIST:
        return lambda item, owner: [to_wire(x) for x in item]
    if kind in (Kind.STR_LIST, Kind.SCOPES):
        return lambda item, owner: list(item)
    if kind in (Kind.OBJECT, Kind.STR_MAP):
        return lambda item, owner: dict(item)
    return None


# ---------------------------------------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------------------------------------


def from_wire(cls: type[T], data: object) -> T:
    """Read a wire dict as model ``cls``; raises only :class:`ResponseFormatError`."""
    read = _readers.get(cls)
    if read is None:
        if not attrs.has(cast(Any, cls)):
            raise TypeError(f"from_wire expects a runcycles model class, got {cls!r}")
        read = _reader_of(cls)
    try:
        return cast(T, read(data, cls.__name__))
    except ResponseFormatError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:  # pragma: no cover
        # Defensive: the reader is written not to raise these, but the contract is "only ResponseFormatError".
        raise ResponseFormatError(f"{cls.__name__} could not be read: {exc}") from exc


def _reader_of(cls: type) -> Callable[[object, str], Any]:
    read = _readers.get(cls)
    if read is None:
        read = _readers[cls] = _compile_reader(cls)
    return read


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


def _compile_reader(cls: type) -> Callable[[object, str], Any]:
    """The reader of ``cls`` as one generated function: straight-line code per field, no per-field loop.

    For each wire field it reads ``data.get(name)``: a plain value of the field's exact type (a string, an
    integer, a boolean) is taken as is; ``None`` (absent or null) is an error for a required field and the
    default otherwise; anything else goes through the field's decoder (a lenient field's malformed value goes
    to ``extra``). Attributes that are not on the wire get their defaults; an enum decoder may set its raw
    string (``values``). The instance is made without ``__init__`` (readers apply no validators).
    """
    namespace: dict[str, Any] = {
        "Mapping": Mapping, "ResponseFormatError": ResponseFormatError, "_fail": _fail, "_new": object.__new__,
        "_set": object.__setattr__, "_cls": cls,
    }
    lines = [
        "def read(data, path):",
        "    if not isinstance(data, Mapping):",
        "        raise _fail(path, 'an object', data)",
        "    extra = {} if _known.issuperset(data) else {str(k): v for k, v in data.items() if k not in _known}",
        "    values = {}",
        "    get = data.get",
        "    inst = _new(_cls)",
    ]
    known: set[str] = set()
    has_extra = False
    for i, field in enumerate(attrs.fields(cls)):
        spec = wire_spec(field)
        required = field.default is attrs.NOTHING
        if field.name == "extra":
            has_extra = True
            continue
        factory = isinstance(field.default, attrs.Factory)  # type: ignore[arg-type]
        if factory and field.default.takes_self:  # pragma: no cover - no model does this
            raise TypeError(f"{cls.__name__}.{field.name}: a self-taking default cannot be read")
        if factory:
            namespace[f"_factory{i}"] = field.default.factory
            default = f"_factory{i}()"
        else:
            namespace[f"_default{i}"] = None if required else field.default
            default = f"_default{i}"
        attr = field.name
        if spec is None:
            lines.append(f"    _set(inst, {attr!r}, {default})")
            continue
        wire_name = spec.name or field.name
        known.add(wire_name)
        namespace[f"_decode{i}"] = _decoder(spec)
        exact = _EXACT.get(spec.kind)
        lines.append(f"    raw = get({wire_name!r})")
        if exact is not None:
            namespace[f"_exact{i}"] = exact
            lines.append(f"    if type(raw) is _exact{i}:")
            lines.append("        value = raw")
            lines.append("    elif raw is None:")
        else:
            lines.append("    if raw is None:")
        if required:
            lines.append(f"        reason = 'is required' if {wire_name!r} not in data else 'must not be null'")
            lines.append(f"        raise ResponseFormatError(path + {'.' + wire_name!r} + ' ' + reason)")
        else:
            lines.append(f"        value = {default}")
        lines.append("    else:")
        if spec.lenient and not required:
            lines.append("        try:")
            lines.append(f"            value = _decode{i}(raw, path + {'.' + wire_name!r}, values)")
            lines.append("        except ResponseFormatError:")
            lines.append(f"            extra[{wire_name!r}] = raw")
            lines.append(f"            value = {default}")
        else:
            lines.append(f"        value = _decode{i}(raw, path + {'.' + wire_name!r}, values)")
        lines.append(f"    _set(inst, {attr!r}, value)")
    lines.append("    for name, value in values.items():")
    lines.append("        _set(inst, name, value)")
    if has_extra:
        lines.append("    _set(inst, 'extra', extra)")
    lines.append("    return inst")
    namespace["_known"] = frozenset(known)
    exec(compile("\n".join(lines), f"<runcycles wire reader of {cls.__qualname__}>", "exec"), namespace)
    read: Callable[[object, str], Any] = namespace["read"]
    return read


_EXACT: dict[Kind, type] = {Kind.STR: str, Kind.INT: int, Kind.BOOL: bool}


def _decoder(spec: WireSpec) -> _Decoder:
    """The decoder of one field: ``(raw, path, values) -> value``; ``values`` takes an enum's raw string."""
    kind = spec.kind
    if kind is Kind.STR:
        return _read_str
    if kind is Kind.INT:
        return _read_int
    if kind is Kind.BOOL:
        return _read_bool
    if kind is Kind.OBJECT:
        return _read_object
    if kind is Kind.STR_MAP:
        return _read_str_map
    if kind is Kind.STR_LIST:
        return _read_str_list
    if kind is Kind.SCOPES:
        return _read_scopes
    if kind is Kind.MODEL or kind is Kind.MODEL_LIST:
        assert spec.model is not None
        model_cls = spec.model
        nested: list[Callable[[object, str], Any]] = []  # looked up at first use: models may refer to each other

        def nested_reader() -> Callable[[object, str], Any]:
            if not nested:
                nested.append(_reader_of(model_cls))
            return nested[0]

        if kind is Kind.MODEL:
            return lambda raw, path, values: nested_reader()(raw, path)

        def read_models(raw: Any, path: str, values: dict[str, Any]) -> Any:
            read = nested_reader()
            return tuple(read(item, f"{path}[{i}]") for i, item in enumerate(_list(raw, path)))

        return read_models
    assert kind is Kind.ENUM and spec.enum_cls is not None
    by_value: dict[str, enum.Enum] = {str(member.value): member for member in spec.enum_cls}
    fallback, raw_attr = spec.fallback, spec.raw_attr

    def read_enum(raw: Any, path: str, values: dict[str, Any]) -> Any:
        if not isinstance(raw, str):
            raise _fail(path, "a string", raw)
        member = by_value.get(raw)
        if member is not None:
            return member
        if fallback is None:
            return raw
        if raw_attr is not None:
            values[raw_attr] = raw
        return fallback

    return read_enum


def _read_str(raw: Any, path: str, values: dict[str, Any]) -> Any:
    if not isinstance(raw, str):
        raise _fail(path, "a string", raw)
    return raw


def _read_int(raw: Any, path: str, values: dict[str, Any]) -> Any:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise _fail(path, "an integer", raw)
    return int(raw)


def _read_bool(raw: Any, path: str, values: dict[str, Any]) -> Any:
    if not isinstance(raw, bool):
        raise _fail(path, "a boolean", raw)
    return raw


def _read_object(raw: Any, path: str, values: dict[str, Any]) -> Any:
    if not isinstance(raw, Mapping):
        raise _fail(path, "an object", raw)
    return dict(raw)


def _read_str_map(raw: Any, path: str, values: dict[str, Any]) -> Any:
    if not isinstance(raw, Mapping):
        raise _fail(path, "an object", raw)
    for key, item in raw.items():
        if not isinstance(item, str):
            raise _fail(f"{path}[{key!r}]", "a string", item)
    return dict(raw)


def _read_str_list(raw: Any, path: str, values: dict[str, Any]) -> Any:
    items = _list(raw, path)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise _fail(f"{path}[{i}]", "a string", item)
    return tuple(items)


def _read_scopes(raw: Any, path: str, values: dict[str, Any]) -> Any:
    return tuple(_scope(item, f"{path}[{i}]") for i, item in enumerate(_list(raw, path)))


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
