"""Field builders shared by the protocol models (and the admin models): converters, validators, wire metadata.

Each builder returns a whole ``attrs.field`` (validator, converter and :mod:`runcycles._wire` metadata), so a
field that several schemas share (``idempotency_key``, ``subject``, ``balances``, ``cycles_evidence`` ...) is
spelled once.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from attrs import validators as av

from .. import _wire as w
from .. import _worded as wd
from .. import validation as v

__all__ = [
    "Paged",
    "balances",
    "enum_field",
    "extension",
    "extra",
    "idempotency_key",
    "json_object",
    "optional_model",
    "paged",
    "required_model",
    "rule",
    "to_tuple",
]


def to_tuple(value: Any) -> Any:
    """Converter of sequence fields: a list or tuple becomes a tuple; anything else (``None``, or a bad value
    left for the validator) is kept."""
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _member_converter(cls: type[enum.Enum]) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if value is None:
            return None
        try:
            return cls(value)
        except (ValueError, TypeError):
            return value  # left for the validator to reject

    return convert


def rule(check: Callable[..., None], path: str, **kwargs: Any) -> wd.Validator:
    """Adapt a container rule ``validation.check_*(path, value, **kwargs)`` (one that names the failing item,
    ``tags[1]``, which attrs' ``deep_iterable`` cannot) to an optional attrs validator."""

    def validator(_instance: Any, _attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            check(path, value, **kwargs)

    return validator


def extra() -> Any:
    """The ``extra`` attribute every model has (unknown wire fields; never written)."""
    return attrs.field(factory=dict)


def enum_field(cls: type[enum.Enum], path: str | None = None, *, required: bool = False) -> Any:
    """A string-enum field: known strings become members. A request field (``path`` given) refuses anything
    else; a response field keeps an unknown wire value as the raw string."""
    if path is None:
        return attrs.field(metadata=w.enum_of(cls)) if required else attrs.field(default=None, metadata=w.enum_of(cls))
    check = wd.member_of(path, cls)
    kwargs: dict[str, Any] = {} if required else {"default": None}
    return attrs.field(
        **kwargs,
        converter=_member_converter(cls),
        validator=check if required else av.optional(check),
        metadata=w.enum_of(cls),
    )


def idempotency_key() -> Any:
    """A request's ``idempotency_key``: required, ``1..256`` characters."""
    return attrs.field(
        validator=wd.string("idempotency_key", min_len=1, max_len=v.IDEMPOTENCY_KEY_MAX, required=True),
        metadata=w.STR,
    )


def required_model(path: str, cls: type) -> Any:
    """A required nested model of a request (``<path> must be a <Class>``)."""
    return attrs.field(validator=wd.model_of(path, cls, required=True), metadata=w.model(cls))


def optional_model(path: str, cls: type) -> Any:
    """An optional nested model of a request."""
    return attrs.field(default=None, validator=av.optional(wd.model_of(path, cls)), metadata=w.model(cls))


def json_object(path: str = "metadata", *, checked: bool = True) -> Any:
    """A free-form JSON object (``checked``: a request's, which must be a mapping with string keys)."""
    if not checked:
        return attrs.field(default=None, metadata=w.OBJECT)
    return attrs.field(default=None, validator=rule(v.check_object, path), metadata=w.OBJECT)


def balances(cls: type, *, required: bool = False) -> Any:
    """``balances``: required and strict in a balance listing; elsewhere optional and informational (a
    malformed one is kept in ``extra``)."""
    if required:
        return attrs.field(converter=to_tuple, metadata=w.model_list(cls))
    return attrs.field(default=None, converter=to_tuple, metadata=w.model_list(cls, lenient=True))


def extension(cls: type) -> Any:
    """An optional extension of a response (evidence, deny details): a malformed one is kept in ``extra``
    and the rest of the response is still read."""
    return attrs.field(default=None, metadata=w.model(cls, lenient=True))


def paged(item_cls: type) -> Any:
    """The items of one page of a list response (``next_cursor`` and ``has_more`` come from :class:`Paged`)."""
    return attrs.field(converter=to_tuple, metadata=w.model_list(item_cls))


@attrs.frozen(kw_only=True)
class Paged:
    """The paging fields every list response shares; a subclass adds its items field with :func:`paged`."""

    next_cursor: str | None = attrs.field(default=None, metadata=w.STR)
    has_more: bool | None = attrs.field(default=None, metadata=w.BOOL)
    extra: Mapping[str, Any] = extra()

