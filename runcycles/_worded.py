"""attrs' own validators, worded the way this library words a bad value: ``ValueError("<field> must ...")``.

attrs' validators raise ``TypeError`` or ``ValueError`` with messages of their own (``'ttl_ms' must be >= 1000``);
the library's contract is a ``ValueError`` whose message starts with the field's name (several messages are
exact, see :mod:`runcycles.validation`). :class:`Worded` runs attrs' validators in order and raises the
wording paired with the first that fails. The success path is just those validators.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import attrs
from attrs import validators as av

__all__ = [
    "POSITIVE_MS",
    "Validator",
    "Worded",
    "http_url",
    "int_at_least",
    "int_between",
    "int_range",
    "member_of",
    "model_of",
    "not_blank",
    "not_bool",
    "not_none",
    "of_type",
    "string",
]

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]

INT_WORDING = "must be an int, got {type}"


class Worded:
    """An attrs validator: ``steps`` are ``(attrs validator, wording)`` pairs run in order; the first that
    fails raises ``ValueError(f"{path} {wording}")``. ``path`` defaults to the attribute's name; the wording
    may use ``{value!r}`` and ``{type}`` (the value's type name). ``optional``: ``None`` passes (attrs'
    ``optional``, folded in).

    Model construction is on the hot path, so a value of exactly the type ``exact`` whose value (or length,
    ``sized``) lies within ``bounds`` passes at once: by construction every step accepts such a value. Any
    other value goes through the steps, so the rule is always the attrs validators'.
    """

    __slots__ = ("bounds", "exact", "optional", "path", "sized", "steps")

    def __init__(
        self,
        path: str | None,
        *steps: tuple[Validator, str],
        exact: type | None = None,
        bounds: tuple[int, int] | None = None,
        sized: bool = False,
        optional: bool = False,
    ) -> None:
        self.path = path
        self.steps = steps
        self.exact = exact
        self.bounds = bounds
        self.sized = sized
        self.optional = optional

    def __call__(self, instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if type(value) is self.exact:
            bounds = self.bounds
            if bounds is None or bounds[0] <= (len(value) if self.sized else value) <= bounds[1]:  # type: ignore[arg-type, operator]
                return
        elif value is None and self.optional:
            return
        for check, wording in self.steps:
            try:
                check(instance, attribute, value)
            except (TypeError, ValueError):
                path = self.path if self.path is not None else attribute.name
                text = wording.format(value=value, type=type(value).__name__)
                raise ValueError(f"{path} {text}") from None

    def check(self, value: object, path: str | None = None) -> None:
        """Validate ``value`` outside a model, naming it ``path`` (default: the rule's own path)."""
        # attrs' validators read only ``attribute.name``.
        self(None, SimpleNamespace(name=path if path is not None else self.path), value)  # type: ignore[arg-type]


def not_bool(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """``instance_of(int)`` accepts ``True``; this refuses a ``bool`` (attrs has no cheap validator for it)."""
    if isinstance(value, bool):
        raise TypeError(f"{attribute.name} must not be a bool")


def not_none(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A required field given ``None`` (worded ``<path> is required``)."""
    if value is None:
        raise TypeError(f"{attribute.name} is required")


def _head(required: bool) -> tuple[tuple[Validator, str], ...]:
    return ((not_none, "is required"),) if required else ()


def of_type(
    path: str | None, cls: type | tuple[type, ...], wording: str, *, required: bool = False, optional: bool = False
) -> Worded:
    """An instance of ``cls`` (``required``: ``None`` is worded ``<path> is required``)."""
    exact = cls if isinstance(cls, type) else None
    return Worded(path, *_head(required), (av.instance_of(cls), wording), exact=exact, optional=optional)


def model_of(path: str, cls: type, *, required: bool = False, optional: bool = False) -> Worded:
    """A nested model: ``<path> must be a <Class>, got <type>``."""
    article = "an" if cls.__name__[:1] in "AEIOU" else "a"
    wording = f"must be {article} {cls.__name__}, got {{type}}"
    return of_type(path, cls, wording, required=required, optional=optional)


def member_of(path: str | None, enum_cls: type[enum.Enum], *, required: bool = False, optional: bool = False) -> Worded:
    """A member of ``enum_cls`` (the models convert known strings to members first)."""
    allowed = ", ".join(str(member.value) for member in enum_cls)
    wording = f"must be one of {allowed}, got {{value!r}}"
    return of_type(path, enum_cls, wording, required=required, optional=optional)


def string(
    path: str | None, *, max_len: int, min_len: int = 0, required: bool = False, optional: bool = False
) -> Worded:
    """A string of ``min_len..max_len`` characters: ``<path> must be a string, got <type>``, ``<path> must
    not be empty`` (or ``at least <min_len> characters``), ``<path> must be at most <max_len> characters``."""
    steps: list[tuple[Validator, str]] = [*_head(required), (av.instance_of(str), "must be a string, got {type}")]
    if min_len:
        short = "must not be empty" if min_len == 1 else f"must be at least {min_len} characters"
        steps.append((av.min_len(min_len), short))
    steps.append((av.max_len(max_len), f"must be at most {max_len} characters"))
    return Worded(path, *steps, exact=str, bounds=(min_len, max_len), sized=True, optional=optional)


def int_range(path: str | None, minimum: int, maximum: int, *, optional: bool = False) -> Worded:
    """An ``int`` (never a ``bool`` or ``float``) in ``minimum..maximum``: ``<path> must be an int, got
    <type>``, ``<path> must be non-negative`` (``at least <minimum>`` when the floor is not 0), ``<path> must
    be at most <maximum>``."""
    low = "must be non-negative" if minimum == 0 else f"must be at least {minimum}"
    return Worded(
        path,
        (not_bool, INT_WORDING),
        (av.instance_of(int), INT_WORDING),
        (av.ge(minimum), low),
        (av.le(maximum), f"must be at most {maximum}"),
        exact=int,
        bounds=(minimum, maximum),
        optional=optional,
    )


def int_between(
    path: str | None, minimum: int, maximum: int, *, required: bool = False, optional: bool = False
) -> Worded:
    """An ``int`` in ``minimum..maximum``; out of range: ``<path> must be between <minimum> and <maximum>``."""
    between = f"must be between {minimum} and {maximum}"
    return Worded(
        path,
        *_head(required),
        (not_bool, INT_WORDING),
        (av.instance_of(int), INT_WORDING),
        (av.ge(minimum), between),
        (av.le(maximum), between),
        exact=int,
        bounds=(minimum, maximum),
        optional=optional,
    )


def _http_url(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    # attrs has no URL validator: a scheme and a host, as urlsplit reads them.
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{attribute.name} is not an http(s) URL")


_NOT_BLANK: tuple[tuple[Validator, str], ...] = (
    (av.instance_of(str), "must not be empty"),
    (av.matches_re(r"\S", func=re.search), "must not be empty"),
)


def not_blank(path: str | None = None) -> Worded:
    """A string with a non-space character: ``<path> must not be empty``."""
    return Worded(path, *_NOT_BLANK)


def http_url(path: str | None = None) -> Worded:
    """A non-blank http(s) URL with a host: ``<path> must be an http(s) URL, got <value>``."""
    return Worded(path, *_NOT_BLANK, (_http_url, "must be an http(s) URL, got {value!r}"))


def int_at_least(floor: int, wording: str, path: str | None = None) -> Worded:
    """An ``int`` (not a ``bool``) ``>= floor``, one ``wording`` for every failure."""
    return Worded(path, (not_bool, wording), (av.instance_of(int), wording), (av.ge(floor), wording))


POSITIVE_MS = "must be a positive integer (milliseconds), got {value!r}"
"""The wording of a timeout that is not a positive number of milliseconds."""
