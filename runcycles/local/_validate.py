"""A compact, strict request validator for the embedded server.

Schemas are built from small checker combinators mirroring the JSON-schema keywords the Cycles specs use
(type, required, limits, enums, patterns, ``additionalProperties: false``). A failure raises
:class:`SchemaError` whose message names the field, e.g. ``"subject.tenant must be at most 128 characters"``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from json.encoder import c_make_encoder, encode_basestring, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

INT64_MAX = 2**63 - 1
UNITS = ("USD_MICROCENTS", "TOKENS", "CREDITS", "RISK_POINTS")
OVERAGE_POLICIES = ("REJECT", "ALLOW_IF_AVAILABLE", "ALLOW_WITH_OVERDRAFT")
SCOPE_LEVELS = ("tenant", "workspace", "app", "workflow", "agent", "toolset")
SUBJECT_VALUE = re.compile(r"^[a-zA-Z0-9_.\-]+$")

Check = Callable[[Any, str], None]


class SchemaError(ValueError):
    """A request body (or query) does not match its schema."""


def _name(path: str) -> str:
    return path or "body"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


Accepts = Callable[[Any], bool]
_ACCEPTS: dict[Check, Accepts] = {}
"""For the checkers built here, a predicate that accepts exactly when the checker passes, without building
field paths: a body that passes it is not walked again; one that fails it gets the checker's named error."""


def _reject(_value: Any) -> bool:
    return False  # a checker without a predicate (e.g. a custom one): always run the checker


def _with(check: Check, accepts: Accepts) -> Check:
    _ACCEPTS[check] = accepts
    return check


def accepts(check: Check) -> Accepts:
    """The fast predicate of ``check`` (one that never accepts, if it has none)."""
    return _ACCEPTS.get(check, _reject)


def validate(schema: Check, value: Any) -> None:
    """Check ``value`` against ``schema``: the fast predicate first, the checker (and its error) if it fails."""
    if not accepts(schema)(value):
        schema(value, "")


def string(
    *,
    min_len: int = 0,
    max_len: int | None = None,
    pattern: re.Pattern[str] | None = None,
    enum: tuple[str, ...] | None = None,
) -> Check:
    """A string with optional length limits, pattern and enum."""

    def check(value: Any, path: str) -> None:
        if not isinstance(value, str):
            raise SchemaError(f"{_name(path)} must be a string")
        if enum is not None and value not in enum:
            raise SchemaError(f"{_name(path)} must be one of {', '.join(enum)}")
        if len(value) < min_len:
            raise SchemaError(f"{_name(path)} must be at least {min_len} characters")
        if max_len is not None and len(value) > max_len:
            raise SchemaError(f"{_name(path)} must be at most {max_len} characters")
        if pattern is not None and not pattern.match(value):
            raise SchemaError(f"{_name(path)} must match {pattern.pattern}")

    def ok(value: Any) -> bool:
        return (
            isinstance(value, str)
            and (enum is None or value in enum)
            and min_len <= len(value)
            and (max_len is None or len(value) <= max_len)
            and (pattern is None or pattern.match(value) is not None)
        )

    return _with(check, ok)


def integer(*, minimum: int | None = None, maximum: int = INT64_MAX) -> Check:
    """A JSON integer (never a bool or a float) within bounds."""

    def check(value: Any, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SchemaError(f"{_name(path)} must be an integer")
        if minimum is not None and value < minimum:
            raise SchemaError(f"{_name(path)} must be at least {minimum}")
        if value > maximum:
            raise SchemaError(f"{_name(path)} must be at most {maximum}")

    def ok(value: Any) -> bool:
        return type(value) is int and (minimum is None or value >= minimum) and value <= maximum

    return _with(check, ok)


def boolean() -> Check:
    """A JSON boolean."""

    def check(value: Any, path: str) -> None:
        if not isinstance(value, bool):
            raise SchemaError(f"{_name(path)} must be a boolean")

    return _with(check, lambda value: value is True or value is False)


def array(items: Check, *, max_items: int | None = None) -> Check:
    """A JSON array whose items all pass ``items``."""

    def check(value: Any, path: str) -> None:
        if not isinstance(value, list):
            raise SchemaError(f"{_name(path)} must be an array")
        if max_items is not None and len(value) > max_items:
            raise SchemaError(f"{_name(path)} must have at most {max_items} items")
        for index, item in enumerate(value):
            items(item, f"{_name(path)}[{index}]")

    items_ok = accepts(items)

    def ok(value: Any) -> bool:
        return (
            isinstance(value, list)
            and (max_items is None or len(value) <= max_items)
            and all(items_ok(item) for item in value)
        )

    return _with(check, ok)


def obj(
    props: Mapping[str, Check] | None = None,
    *,
    required: tuple[str, ...] = (),
    additional: Check | bool = False,
    min_props: int | None = None,
    max_props: int | None = None,
    one_of_required: tuple[str, ...] = (),
    message: str | None = None,
) -> Check:
    """A JSON object: known ``props``, ``required`` names, and what to do with other keys.

    ``additional`` is ``False`` (unknown keys rejected), ``True`` (anything) or a checker for their values.
    ``one_of_required`` means at least one of those names must be present (``message`` overrides the error).
    """
    known = dict(props or {})
    counted = min_props is not None or max_props is not None or bool(one_of_required)

    def check_counts(value: dict[str, Any], path: str) -> None:
        if min_props is not None and len(value) < min_props:
            raise SchemaError(message or f"{_name(path)} must have at least {min_props} properties")
        if max_props is not None and len(value) > max_props:
            raise SchemaError(f"{_name(path)} must have at most {max_props} properties")
        if one_of_required and not any(key in value for key in one_of_required):
            raise SchemaError(message or f"{_name(path)} needs one of {', '.join(one_of_required)}")

    def check(value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise SchemaError(f"{_name(path)} must be an object")
        for key in required:
            if key not in value:
                raise SchemaError(f"{_join(path, key)} is required")
        if counted:
            check_counts(value, path)
        for key, item in value.items():
            sub = known.get(key)
            if sub is not None:
                sub(item, _join(path, key))
            elif additional is False:
                raise SchemaError(f"{_join(path, key)} is not a known field")
            elif additional is not True:
                additional(item, _join(path, key))

    known_ok = {key: accepts(sub) for key, sub in known.items()}
    one_of = frozenset(one_of_required)
    other_ok = None if isinstance(additional, bool) else accepts(additional)

    def ok(value: Any) -> bool:
        if not isinstance(value, dict):
            return False
        for key in required:
            if key not in value:
                return False
        if counted and (
            (min_props is not None and len(value) < min_props)
            or (max_props is not None and len(value) > max_props)
            or (one_of and one_of.isdisjoint(value))
        ):
            return False
        for key, item in value.items():
            sub = known_ok.get(key)
            if sub is not None:
                if not sub(item):
                    return False
            elif other_ok is not None:
                if not other_ok(item):
                    return False
            elif additional is False:
                return False
        return True

    return _with(check, ok)


FREE_OBJECT = obj(additional=True)
UNIT = string(enum=UNITS)
OVERAGE = string(enum=OVERAGE_POLICIES)
IDEMPOTENCY_KEY = string(min_len=1, max_len=256)
AMOUNT = obj({"unit": UNIT, "amount": integer(minimum=0)}, required=("unit", "amount"))

_SUBJECT_FIELD = string(max_len=128, pattern=SUBJECT_VALUE)
SUBJECT = obj(
    {
        **{level: _SUBJECT_FIELD for level in SCOPE_LEVELS},
        "dimensions": obj(additional=string(max_len=256), max_props=16),
    },
    min_props=1,
    one_of_required=SCOPE_LEVELS,
    message=(
        "Subject must have at least one standard field (tenant, workspace, app, workflow, agent, or toolset)"
    ),
)
# v0.1.26 `policy_keys` is accepted (within its companion-spec limits) and ignored.
POLICY_KEYS = obj(
    {
        "host": string(max_len=253),
        "recipient_domain": string(max_len=253),
        "resource_type": string(max_len=128),
        "path_prefix": string(max_len=512),
        "custom": obj(additional=string(max_len=256), max_props=8),
    }
)
ACTION = obj(
    {
        "kind": string(max_len=64),
        "name": string(max_len=256),
        "tags": array(string(max_len=64), max_items=10),
        "policy_keys": POLICY_KEYS,
    },
    required=("kind", "name"),
)
CAPS = obj(
    {
        "max_tokens": integer(minimum=0),
        "max_steps_remaining": integer(minimum=0),
        "cooldown_ms": integer(minimum=0),
        "tool_allowlist": array(string(max_len=256)),
        "tool_denylist": array(string(max_len=256)),
    }
)
METRICS = obj(
    {
        "tokens_input": integer(minimum=0),
        "tokens_output": integer(minimum=0),
        "latency_ms": integer(minimum=0),
        "model_version": string(max_len=128),
        "custom": FREE_OBJECT,
    }
)

DECISION_REQUEST = obj(
    {
        "idempotency_key": IDEMPOTENCY_KEY,
        "subject": SUBJECT,
        "action": ACTION,
        "estimate": AMOUNT,
        "metadata": FREE_OBJECT,
    },
    required=("idempotency_key", "subject", "action", "estimate"),
)
RESERVATION_CREATE_REQUEST = obj(
    {
        "idempotency_key": IDEMPOTENCY_KEY,
        "subject": SUBJECT,
        "action": ACTION,
        "estimate": AMOUNT,
        "ttl_ms": integer(minimum=1000, maximum=86_400_000),
        "grace_period_ms": integer(minimum=0, maximum=60_000),
        "overage_policy": OVERAGE,
        "dry_run": boolean(),
        "metadata": FREE_OBJECT,
        "observe_mode": string(enum=("DISABLED", "OBSERVE", "ENFORCE")),
    },
    required=("idempotency_key", "subject", "action", "estimate"),
)
COMMIT_REQUEST = obj(
    {"idempotency_key": IDEMPOTENCY_KEY, "actual": AMOUNT, "metrics": METRICS, "metadata": FREE_OBJECT},
    required=("idempotency_key", "actual"),
)
RELEASE_REQUEST = obj(
    {"idempotency_key": IDEMPOTENCY_KEY, "reason": string(max_len=256)}, required=("idempotency_key",)
)
EXTEND_REQUEST = obj(
    {
        "idempotency_key": IDEMPOTENCY_KEY,
        "extend_by_ms": integer(minimum=1, maximum=86_400_000),
        "metadata": FREE_OBJECT,
    },
    required=("idempotency_key", "extend_by_ms"),
)
EVENT_REQUEST = obj(
    {
        "idempotency_key": IDEMPOTENCY_KEY,
        "subject": SUBJECT,
        "action": ACTION,
        "actual": AMOUNT,
        "overage_policy": OVERAGE,
        "metrics": METRICS,
        "client_time_ms": integer(minimum=0),
        "metadata": FREE_OBJECT,
    },
    required=("idempotency_key", "subject", "action", "actual"),
)

# Schema defaults, filled in before the idempotency payload hash so that omitting a field and sending its
# default are the same request.
DEFAULTS: dict[str, dict[str, Any]] = {
    "reserve": {
        "ttl_ms": 60_000,
        "grace_period_ms": 5_000,
        "overage_policy": "ALLOW_IF_AVAILABLE",
        "dry_run": False,
    },
    "event": {"overage_policy": "ALLOW_IF_AVAILABLE"},
}


MAX_JSON_DEPTH = 64
_SURROGATE = re.compile("[\ud800-\udfff]")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise SchemaError(f"number {text[:32]} is out of range")
    return value


def _reject_constant(name: str) -> Any:
    raise SchemaError(f"invalid JSON number {name}")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite)


def _decode(text: str) -> Any:
    """``_DECODER.decode(text)``, without its two whitespace matches for the usual ``{...}`` body."""
    if text[:1] == "{" and text[-1:] == "}":
        try:
            value, end = _SCAN(text, 0)
        except (StopIteration, ValueError, RecursionError):
            end = -1  # malformed: decode again below for the usual error
        if end == len(text):
            return value
    return _DECODER.decode(text)


_SCAN = _DECODER.scan_once  # type: ignore[attr-defined]


def _check_tree(value: Any) -> None:
    """Nesting depth within :data:`MAX_JSON_DEPTH` and no lone surrogates in any key or string.

    Iterative, so a hostile document cannot exhaust the stack here either.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise SchemaError("strings must not contain unpaired UTF-16 surrogates")
        elif isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise SchemaError(f"JSON is nested deeper than {MAX_JSON_DEPTH} levels")
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)


def parse_json_object(body: bytes, schema: Check | None = None) -> dict[str, Any]:
    """Decode a request body as a JSON object and check it against ``schema``.

    Bodies Python's decoder cannot take safely are malformed too: nesting beyond :data:`MAX_JSON_DEPTH`,
    integers beyond the interpreter's digit limit, numbers that overflow to infinity, lone surrogates.
    """
    try:
        text = body.decode("utf-8")
        value = _decode(text) if body else None
    except SchemaError as exc:
        raise SchemaError(f"Malformed request body: {exc}") from None
    except RecursionError:
        raise SchemaError(f"Malformed request body: JSON is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, the int digit limit
        raise SchemaError(f"Malformed request body: {str(exc)[:200]}") from None
    if not isinstance(value, dict):
        raise SchemaError("Malformed request body: a JSON object is required")
    try:
        # Only a \\u escape can produce a lone surrogate (the UTF-8 decoder refuses encoded ones), and a body
        # with at most MAX_JSON_DEPTH brackets cannot nest deeper: most bodies need no walk at all.
        if "\\u" in text or text.count("{") + text.count("[") > MAX_JSON_DEPTH:
            _check_tree(value)
    except SchemaError as exc:
        raise SchemaError(f"Malformed request body: {exc}") from None
    if schema is not None:
        validate(schema, value)
    return value


def _cannot_encode(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def compact_encoder(*, sort_keys: bool = False, ensure_ascii: bool = True) -> Callable[[Any], str]:
    """A compact JSON encoder (no whitespace) built once: ``json.JSONEncoder(...).encode`` without the cost,
    per call, of making its C encoder again. Values must not be cyclic (the server encodes JSON-decoded
    values and its own fresh ones)."""
    escape = encode_basestring_ascii if ensure_ascii else encode_basestring
    if c_make_encoder is None:  # no C accelerator (another interpreter): the standard encoder
        return json.JSONEncoder(
            sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=ensure_ascii, check_circular=False
        ).encode
    chunks = c_make_encoder(None, _cannot_encode, escape, None, ":", ",", sort_keys, False, True)

    def encode(value: Any) -> str:
        return "".join(chunks(value, 0))

    return encode


_CANONICAL = compact_encoder(sort_keys=True, ensure_ascii=False)


def canonical_json(value: Any) -> str:
    """Canonical JSON (sorted keys, no whitespace) used for idempotency payload comparison."""
    return _CANONICAL(value)
