"""Argument checks of the admin operations: each raises ``ValueError`` (or ``TypeError``) naming the field."""

from __future__ import annotations

import datetime as _dt
import enum
import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from ..models import Amount, CommitOveragePolicy, Unit
from ..validation import MAX_INT64

E = TypeVar("E", bound=enum.Enum)

_TENANT_ID = re.compile(r"^[a-z0-9-]{3,64}$")


def text(name: str, value: object, *, max_len: int | None = None) -> str:
    """A non-blank string of at most ``max_len`` characters."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    if max_len is not None and len(value) > max_len:
        raise ValueError(f"{name} must be at most {max_len} characters")
    return value


def new_tenant_id(value: object) -> str:
    """A tenant id as the spec allows at creation: 3..64 of ``a-z``, ``0-9`` and ``-``."""
    if not isinstance(value, str) or not _TENANT_ID.match(value):
        raise ValueError(f"tenant_id must be 3 to 64 characters of a-z, 0-9 and '-', got {value!r}")
    return value


def choice(name: str, value: object, cls: type[E]) -> str:
    """The wire value of an enum member, or of a string naming one (case-insensitive, ``-`` for ``_``)."""
    if isinstance(value, cls):
        return str(value.value)
    if isinstance(value, str):
        for member in cls:
            wanted = str(member.value)
            if value == wanted or value.upper().replace("-", "_") == wanted.upper():
                return wanted
    allowed = ", ".join(str(m.value) for m in cls)
    raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def unit(value: object) -> str:
    """A budget unit (``Unit`` member or its name)."""
    return choice("unit", value, Unit)


def policy(name: str, value: object) -> str:
    """A commit overage policy."""
    return choice(name, value, CommitOveragePolicy)


def amount(name: str, value: object, unit_value: str) -> dict[str, Any]:
    """An ``Amount`` wire object in ``unit_value`` from an ``int`` (>= 0) or an :class:`Amount` of that unit."""
    if isinstance(value, Amount):
        given = str(getattr(value.unit, "value", value.unit))
        if given != unit_value:
            raise ValueError(f"{name}.unit must be {unit_value}, got {given}")
        value = value.amount
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int (in {unit_value}) or an Amount, got {type(value).__name__}")
    if not 0 <= value <= MAX_INT64:
        raise ValueError(f"{name} must be between 0 and {MAX_INT64}, got {value}")
    return {"unit": unit_value, "amount": value}


def integer(name: str, value: object, *, minimum: int, maximum: int = MAX_INT64) -> int:
    """An ``int`` in ``minimum..maximum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def mapping(name: str, value: object, *, strings: bool = False) -> dict[str, Any]:
    """A JSON object (``strings``: of string values)."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping, got {type(value).__name__}")
    for key, item in value.items():
        if not isinstance(key, str):
            raise TypeError(f"{name} keys must be strings, got {key!r}")
        if strings and not isinstance(item, str):
            raise TypeError(f"{name}[{key!r}] must be a string, got {type(item).__name__}")
    return dict(value)


def strings(name: str, value: object) -> list[str]:
    """A list of non-empty strings (a bare string is refused: it is almost always a mistake)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a list of strings, got {type(value).__name__}")
    items = list(value)
    for i, item in enumerate(items):
        text(f"{name}[{i}]", getattr(item, "value", item))
    return [str(getattr(item, "value", item)) for item in items]


def timestamp(name: str, value: object) -> str:
    """An RFC 3339 date-time from a timezone-aware ``datetime`` or a string (sent as given)."""
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"{name} must be a timezone-aware datetime")
        return value.isoformat()
    return text(name, value)


def tenant_of_scope(scope: str) -> str | None:
    """The tenant id of a tenant-rooted scope (``tenant:acme/workspace:eng`` -> ``acme``), else ``None``."""
    level, sep, value = scope.split("/", 1)[0].partition(":")
    return value if sep and level.strip().lower() == "tenant" and value else None


def flag(name: str, value: object) -> str:
    """A boolean query value."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return "true" if value else "false"
