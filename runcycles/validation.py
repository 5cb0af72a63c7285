"""Local validation rules with their messages, and small protocol helpers.

The rules are plain functions ``check_*(path, value, ...)`` that raise ``ValueError`` with a message naming
the field path (``"subject.tenant must be at most 128 characters"``); the request models in
:mod:`runcycles.models` call them from their attrs validators, so an invalid request fails when it is built,
before anything is sent. Five messages are part of the public contract and exact:

* ``Subject must have at least one standard field (tenant, workspace, app, workflow, agent, or toolset)``
* ``estimate must be non-negative``
* ``ttl_ms must be between 1000 and 86400000``
* ``grace_period_ms must be between 0 and 60000``
* ``extend_by_ms must be between 1 and 86400000``
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import attrs

from ._error_codes import ErrorCode, error_code_from_string
from ._worded import Worded, int_between, int_range, string

if TYPE_CHECKING:
    from .models import Caps, CyclesMetrics, Decision

__all__ = [
    "MAX_INT64",
    "STANDARD_SUBJECT_FIELDS",
    "SUBJECT_STANDARD_FIELD_MESSAGE",
    "error_code_from_string",
    "is_allowed",
    "is_denied",
    "is_metrics_empty",
    "is_retryable_error_code",
    "is_tool_allowed",
    "validate_amount",
    "validate_extend_by_ms",
    "validate_grace_period_ms",
    "validate_model",
    "validate_ttl_ms",
]

MAX_INT64 = 2**63 - 1
"""The largest value of an ``int64`` wire integer."""

STANDARD_SUBJECT_FIELDS = ("tenant", "workspace", "app", "workflow", "agent", "toolset")
"""The six standard subject fields, in canonical scope order."""

SUBJECT_STANDARD_FIELD_MESSAGE = (
    "Subject must have at least one standard field (tenant, workspace, app, workflow, agent, or toolset)"
)
"""The exact message raised for a subject without any standard field."""

# Spec limits (cycles-protocol-v0.yaml).
SUBJECT_FIELD_MAX = 128
DIMENSIONS_MAX_ENTRIES = 16
DIMENSION_VALUE_MAX = 256
ACTION_KIND_MAX = 64
ACTION_NAME_MAX = 256
TAGS_MAX_ITEMS = 10
TAG_MAX = 64
IDEMPOTENCY_KEY_MAX = 256
MODEL_VERSION_MAX = 128
RELEASE_REASON_MAX = 256
TTL_MS_MIN, TTL_MS_MAX = 1000, 86_400_000
GRACE_PERIOD_MS_MIN, GRACE_PERIOD_MS_MAX = 0, 60_000
EXTEND_BY_MS_MIN, EXTEND_BY_MS_MAX = 1, 86_400_000
# v0.1.26 Action.policy_keys limits (cycles-action-kinds companion spec, see reference/protocol.md §13).
POLICY_KEY_HOST_MAX = 253
POLICY_KEY_RECIPIENT_DOMAIN_MAX = 253
POLICY_KEY_RESOURCE_TYPE_MAX = 128
POLICY_KEY_PATH_PREFIX_MAX = 512
POLICY_KEY_CUSTOM_MAX_ENTRIES = 8
POLICY_KEY_CUSTOM_VALUE_MAX = 256

_RETRYABLE_ERROR_CODES = frozenset({"INTERNAL_ERROR", "UNKNOWN", "LIMIT_EXCEEDED"})


def _type_name(value: object) -> str:
    return type(value).__name__


# ---------------------------------------------------------------------------------------------------------
# Rules. Each raises ValueError naming ``path``; ``None`` handling (optional fields) is the caller's job.
# ---------------------------------------------------------------------------------------------------------


def check_str(path: str, value: object, *, max_len: int, min_len: int = 0) -> None:
    """A string of at most ``max_len`` (and at least ``min_len``) characters."""
    _string(max_len, min_len).check(value, path)


def check_int(path: str, value: object, *, minimum: int = 0, maximum: int = MAX_INT64) -> None:
    """An ``int`` (never a ``bool`` or ``float``) within ``minimum..maximum``."""
    _int_range(minimum, maximum).check(value, path)


def check_int_between(path: str, value: object, minimum: int, maximum: int) -> None:
    """An ``int`` within ``minimum..maximum``; out of range: ``<path> must be between <min> and <max>``."""
    _int_between(minimum, maximum).check(value, path)


# The rules are attrs validators worded by runcycles._worded, built once per set of bounds.
@functools.lru_cache(maxsize=64)
def _string(max_len: int, min_len: int) -> Worded:
    return string(None, max_len=max_len, min_len=min_len)


@functools.lru_cache(maxsize=64)
def _int_range(minimum: int, maximum: int) -> Worded:
    return int_range(None, minimum, maximum)


@functools.lru_cache(maxsize=64)
def _int_between(minimum: int, maximum: int) -> Worded:
    return int_between(None, minimum, maximum)


def check_object(path: str, value: object) -> None:
    """A free-form JSON object: a mapping with string keys."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{path} must be a mapping, got {_type_name(value)}")
    for key in value:
        if not isinstance(key, str):
            raise ValueError(f"{path} keys must be strings, got {_type_name(key)}")


def check_str_list(path: str, value: object, *, max_items: int | None, max_len: int) -> None:
    """A sequence (not a string) of at most ``max_items`` strings of at most ``max_len`` characters."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{path} must be a list of strings, got {_type_name(value)}")
    if max_items is not None and len(value) > max_items:
        raise ValueError(f"{path} must have at most {max_items} items")
    for i, item in enumerate(value):
        check_str(f"{path}[{i}]", item, max_len=max_len)


def check_str_map(path: str, value: object, *, max_entries: int, max_len: int) -> None:
    """A mapping of at most ``max_entries`` string keys to strings of at most ``max_len`` characters."""
    check_object(path, value)
    assert isinstance(value, Mapping)
    if len(value) > max_entries:
        raise ValueError(f"{path} must have at most {max_entries} entries")
    for key, item in value.items():
        check_str(f"{path}[{key!r}]", item, max_len=max_len)


def check_subject_has_standard_field(values: Iterable[str | None]) -> None:
    """At least one of the six standard subject fields is a non-empty string."""
    if not any(values):
        raise ValueError(SUBJECT_STANDARD_FIELD_MESSAGE)


# ---------------------------------------------------------------------------------------------------------
# Public validators
# ---------------------------------------------------------------------------------------------------------


def validate_amount(name: str, value: object) -> int:
    """Check that ``value`` is a wire amount (an ``int`` in ``0..2**63-1``) and return it.

    Messages: ``<name> must be an int, got <type>`` (``bool`` and ``float`` are refused),
    ``<name> must be non-negative`` (so exactly ``estimate must be non-negative`` for a negative estimate),
    ``<name> must be at most 9223372036854775807``.
    """
    check_int(name, value, minimum=0, maximum=MAX_INT64)
    assert isinstance(value, int)
    return value


def validate_ttl_ms(value: object) -> int:
    """Check a reservation ``ttl_ms`` (``1000..86400000``) and return it."""
    check_int_between("ttl_ms", value, TTL_MS_MIN, TTL_MS_MAX)
    assert isinstance(value, int)
    return value


def validate_grace_period_ms(value: object) -> int:
    """Check a reservation ``grace_period_ms`` (``0..60000``) and return it."""
    check_int_between("grace_period_ms", value, GRACE_PERIOD_MS_MIN, GRACE_PERIOD_MS_MAX)
    assert isinstance(value, int)
    return value


def validate_extend_by_ms(value: object) -> int:
    """Check an extension's ``extend_by_ms`` (``1..86400000``) and return it."""
    check_int_between("extend_by_ms", value, EXTEND_BY_MS_MIN, EXTEND_BY_MS_MAX)
    assert isinstance(value, int)
    return value


def validate_model(model: object) -> None:
    """Run the construction-time validators of ``model`` and of every model nested in it.

    Models built by the lenient readers (``*_from_wire``) skip validation; this re-applies it, e.g. for a
    server that wants to reject an invalid request body. Raises ``ValueError`` like the constructors.
    """
    if not attrs.has(type(model)):
        raise TypeError(f"validate_model expects a runcycles model, got {_type_name(model)}")
    instance = cast(Any, model)
    attrs.validate(instance)
    for field in attrs.fields(type(instance)):
        value = getattr(model, field.name)
        if attrs.has(type(value)):
            validate_model(value)
        elif isinstance(value, tuple):
            for item in value:
                if attrs.has(type(item)):
                    validate_model(item)


# ---------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------


def _raw(value: object) -> object:
    return value.value if isinstance(value, enum.Enum) else value


def is_allowed(decision: Decision | str | None) -> bool:
    """``True`` for ``ALLOW`` and ``ALLOW_WITH_CAPS``."""
    return _raw(decision) in ("ALLOW", "ALLOW_WITH_CAPS")


def is_denied(decision: Decision | str | None) -> bool:
    """``True`` for ``DENY``."""
    return _raw(decision) == "DENY"


def is_retryable_error_code(code: ErrorCode | str | None) -> bool:
    """``True`` for the codes worth retrying: ``INTERNAL_ERROR``, ``LIMIT_EXCEEDED`` and ``UNKNOWN``
    (an unrecognised code string counts as ``UNKNOWN``); ``None`` is not retryable."""
    if code is None:
        return False
    member = error_code_from_string(code if isinstance(code, str) else None)
    return member is not None and member.value in _RETRYABLE_ERROR_CODES


def is_tool_allowed(caps: Caps | None, tool: str) -> bool:
    """Whether ``caps`` permit the tool named ``tool`` (case-sensitive, matched against ``Action.name``).

    Spec precedence: no caps -> allowed; a non-empty ``tool_allowlist`` -> only those tools (the denylist is
    ignored); otherwise a non-empty ``tool_denylist`` -> every tool except those; otherwise allowed. An
    empty allowlist therefore falls through to the denylist.
    """
    if caps is None:
        return True
    if caps.tool_allowlist:
        return tool in caps.tool_allowlist
    if caps.tool_denylist:
        return tool not in caps.tool_denylist
    return True


def is_metrics_empty(metrics: CyclesMetrics | None) -> bool:
    """``True`` if ``metrics`` is ``None`` or carries no standard value and no custom entry."""
    if metrics is None:
        return True
    return (
        metrics.tokens_input is None
        and metrics.tokens_output is None
        and metrics.latency_ms is None
        and metrics.model_version is None
        and not metrics.custom
    )
