"""What the protocol models (and the admin models) share: converters, validators and field builders.

Every field is spelled ``attrs.field(...)``, because the attrs mypy plugin reads only those calls: a builder
returns keyword arguments (validator and :mod:`runcycles._wire` metadata) to spread into it, and the default
and the converter are written at the field (``attrs.field(default=None, **extension(DenyDetail))``), so mypy
knows which arguments are required and accepts a list where a converter keeps a tuple.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import attrs

from .. import _wire as w
from .. import _worded as wd
from .. import validation as v
from ._enums import CommitOveragePolicy, ObserveMode, Unit

__all__ = [
    "IDEMPOTENCY_KEY",
    "Paged",
    "extension",
    "extra",
    "json_object",
    "optional_enum",
    "optional_model",
    "required_model",
    "rule",
    "to_observe_mode",
    "to_policy",
    "to_str_tuple",
    "to_strs",
    "to_unit",
]

E = TypeVar("E", bound=enum.Enum)

# ---------------------------------------------------------------------------------------------------------
# Converters: a list becomes a tuple, a known enum string its member; anything else is left for the validator.
# ---------------------------------------------------------------------------------------------------------


def _member(cls: type[E], value: Any) -> E | Any:
    try:
        return cls(value)
    except (ValueError, TypeError):
        return value


def to_unit(value: Unit | str) -> Unit | str:
    """``Unit`` member of a known unit string."""
    return _member(Unit, value)


def to_policy(value: CommitOveragePolicy | str | None) -> CommitOveragePolicy | str | None:
    """``CommitOveragePolicy`` member of a known policy string."""
    return None if value is None else _member(CommitOveragePolicy, value)


def to_observe_mode(value: ObserveMode | str | None) -> ObserveMode | str | None:
    """``ObserveMode`` member of a known mode string."""
    return None if value is None else _member(ObserveMode, value)


def to_strs(value: Sequence[str]) -> tuple[str, ...]:
    """A required list of strings as a tuple."""
    return tuple(value) if isinstance(value, (list, tuple)) else value  # type: ignore[return-value]


def to_str_tuple(value: Sequence[str] | None) -> tuple[str, ...] | None:
    """An optional list of strings as a tuple."""
    return tuple(value) if isinstance(value, (list, tuple)) else value  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------
# Validators
# ---------------------------------------------------------------------------------------------------------


def rule(check: Callable[..., None], path: str, **kwargs: Any) -> wd.Validator:
    """Adapt a container rule ``validation.check_*(path, value, **kwargs)`` (one that names the failing item,
    ``tags[1]``, which attrs' ``deep_iterable`` cannot) to an optional attrs validator."""

    def validator(_instance: Any, _attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            check(path, value, **kwargs)

    return validator


# ---------------------------------------------------------------------------------------------------------
# Field builders
# ---------------------------------------------------------------------------------------------------------


def extra() -> Any:
    """The ``extra`` attribute every model has (unknown wire fields; never written)."""
    return attrs.field(factory=dict)


IDEMPOTENCY_KEY: dict[str, Any] = {
    "validator": wd.string("idempotency_key", min_len=1, max_len=v.IDEMPOTENCY_KEY_MAX, required=True),
    "metadata": w.STR,
}
"""``attrs.field(**IDEMPOTENCY_KEY)``: a request's required ``idempotency_key`` of ``1..256`` characters."""


def required_model(path: str, cls: type) -> dict[str, Any]:
    """``attrs.field(**required_model(path, cls))``: a required nested model of a request."""
    return {"validator": wd.model_of(path, cls, required=True), "metadata": w.model(cls)}


def optional_model(path: str, cls: type) -> dict[str, Any]:
    """``attrs.field(default=None, **optional_model(path, cls))``: an optional nested model of a request."""
    return {"validator": wd.model_of(path, cls, optional=True), "metadata": w.model(cls)}


def json_object(path: str = "metadata") -> dict[str, Any]:
    """``attrs.field(default=None, **json_object(path))``: a request's free-form JSON object (a mapping with
    string keys)."""
    return {"validator": rule(v.check_object, path), "metadata": w.OBJECT}


def optional_enum(path: str, cls: type[enum.Enum]) -> dict[str, Any]:
    """``attrs.field(default=None, converter=..., **optional_enum(path, cls))``: an optional enum of a request
    (an unknown string is refused, naming the allowed values)."""
    return {"validator": wd.member_of(path, cls, optional=True), "metadata": w.enum_of(cls)}


def extension(cls: type) -> dict[str, Any]:
    """``attrs.field(default=None, **extension(cls))``: an optional extension of a response (evidence, deny
    details); a malformed one is kept in ``extra`` and the rest of the response is still read."""
    return {"metadata": w.model(cls, lenient=True)}


@attrs.frozen(kw_only=True)
class Paged:
    """The paging fields every list response shares (its items field comes from the subclass)."""

    next_cursor: str | None = attrs.field(default=None, metadata=w.STR)
    has_more: bool | None = attrs.field(default=None, metadata=w.BOOL)
    extra: Mapping[str, Any] = extra()
