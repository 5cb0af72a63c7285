"""Operation -> HTTP request, and HTTP response bytes -> `CyclesResponse`. No I/O here."""

from __future__ import annotations

import datetime as _dt
import enum
import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

import attrs
import httpx

from .._text import Scrubber
from ..mappers import request_body
from ..response import CyclesResponse
from ..validation import STANDARD_SUBJECT_FIELDS as _SUBJECT_FILTERS

__all__ = [
    "HttpRequest",
    "KeyedCreate",
    "Operation",
    "balances",
    "commit",
    "create_event",
    "create_reservation",
    "decide",
    "dumps",
    "extend",
    "get_reservation",
    "list_reservations",
    "new_idempotency_key",
    "next_cursor",
    "parse_response",
    "release",
    "transport_failure",
]

_LIST_FILTERS = frozenset(
    {
        *_SUBJECT_FILTERS,
        "idempotency_key",
        "status",
        "from",
        "to",
        "expires_from",
        "expires_to",
        "finalized_from",
        "finalized_to",
        "sort_by",
        "sort_dir",
        "include",
        "limit",
        "cursor",
    }
)
_BALANCE_FILTERS = frozenset({*_SUBJECT_FILTERS, "include_children", "limit", "cursor"})
_NO_SECRET = Scrubber(None)
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]+")  # what quote(..., safe="") leaves as it is
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


class Operation(str, enum.Enum):
    """The protocol operations a client performs."""

    CREATE = "createReservation"
    COMMIT = "commitReservation"
    RELEASE = "releaseReservation"
    EXTEND = "extendReservation"
    DECIDE = "decide"
    EVENT = "createEvent"
    LIST = "listReservations"
    GET = "getReservation"
    BALANCES = "getBalances"


@attrs.frozen(kw_only=True)
class HttpRequest:
    """One HTTP request, ready to hand to any transport."""

    operation: Operation
    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    headers: Mapping[str, str] = attrs.field(factory=dict)
    content: bytes | None = None
    body: Mapping[str, Any] | None = None


def new_idempotency_key() -> str:
    """A fresh random (version 4) UUID as text: what ``str(uuid.uuid4())`` gives, without building a `UUID`."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)  # what dumps builds per call


def dumps(body: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON; NaN/Infinity are refused (they are not JSON)."""
    try:
        return _JSON.encode(body).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"request body is not JSON-serializable: {exc}") from None


def _check_traceparent(traceparent: str | None) -> dict[str, str]:
    if traceparent is None:
        return {}
    match = _TRACEPARENT.fullmatch(traceparent) if isinstance(traceparent, str) else None
    if match is None or set(match.group(1)) == {"0"} or set(match.group(2)) == {"0"}:
        raise ValueError(f"traceparent must be a W3C trace context '00-<32 hex>-<16 hex>-<2 hex>', got {traceparent!r}")
    return {"traceparent": traceparent}


def _reservation_path(reservation_id: str, suffix: str = "") -> str:
    if not isinstance(reservation_id, str) or not 1 <= len(reservation_id) <= 128:
        raise ValueError(f"reservation_id must be a string of 1 to 128 characters, got {reservation_id!r}")
    # An id of unreserved characters only (the usual case) needs no quoting: skip quote()'s work.
    segment = reservation_id if _UNRESERVED.fullmatch(reservation_id) else quote(reservation_id, safe="")
    if segment in (".", ".."):
        # A bare dot segment would be normalised away by the URL parser and change the route.
        segment = segment.replace(".", "%2E")
    return f"/v1/reservations/{segment}{suffix}"


def _post(operation: Operation, path: str, request: object, traceparent: str | None) -> HttpRequest:
    body = request_body(request)
    headers = {"Content-Type": "application/json"}
    if traceparent is not None:
        headers.update(_check_traceparent(traceparent))
    key = body.get("idempotency_key")
    if isinstance(key, str) and key:
        headers["X-Idempotency-Key"] = key
    return HttpRequest(
        operation=operation, method="POST", path=path, headers=headers, content=dumps(body), body=body
    )


def create_reservation(request: object, *, traceparent: str | None = None) -> HttpRequest:
    """``POST /v1/reservations``."""
    return _post(Operation.CREATE, "/v1/reservations", request, traceparent)


class KeyedCreate:
    """``POST /v1/reservations`` of one body that differs per call only by its idempotency key: the rest is
    serialised once, and `with_key` gives exactly what `create_reservation` would for the keyed body."""

    __slots__ = ("_rest", "_tail")

    def __init__(self, body: Mapping[str, Any]) -> None:
        self._rest = {name: value for name, value in body.items() if name != "idempotency_key"}
        tail = dumps(self._rest)
        self._tail = b"}" if tail == b"{}" else b"," + tail[1:]

    def with_key(self, key: str) -> HttpRequest:
        """The request with ``key`` (a non-empty string) as its idempotency key, written first in the body."""
        body = {"idempotency_key": key, **self._rest}
        return HttpRequest(
            operation=Operation.CREATE,
            method="POST",
            path="/v1/reservations",
            headers={"Content-Type": "application/json", "X-Idempotency-Key": key},
            content=b'{"idempotency_key":' + _JSON.encode(key).encode("utf-8") + self._tail,
            body=body,
        )


def commit(reservation_id: str, request: object, *, traceparent: str | None = None) -> HttpRequest:
    """``POST /v1/reservations/{id}/commit``."""
    return _post(Operation.COMMIT, _reservation_path(reservation_id, "/commit"), request, traceparent)


def release(reservation_id: str, request: object, *, traceparent: str | None = None) -> HttpRequest:
    """``POST /v1/reservations/{id}/release``."""
    return _post(Operation.RELEASE, _reservation_path(reservation_id, "/release"), request, traceparent)


def extend(reservation_id: str, request: object, *, traceparent: str | None = None) -> HttpRequest:
    """``POST /v1/reservations/{id}/extend``."""
    return _post(Operation.EXTEND, _reservation_path(reservation_id, "/extend"), request, traceparent)


def decide(request: object, *, traceparent: str | None = None) -> HttpRequest:
    """``POST /v1/decide``."""
    return _post(Operation.DECIDE, "/v1/decide", request, traceparent)


def create_event(request: object, *, traceparent: str | None = None) -> HttpRequest:
    """``POST /v1/events``."""
    return _post(Operation.EVENT, "/v1/events", request, traceparent)


def get_reservation(reservation_id: str, *, traceparent: str | None = None) -> HttpRequest:
    """``GET /v1/reservations/{id}``."""
    return HttpRequest(
        operation=Operation.GET,
        method="GET",
        path=_reservation_path(reservation_id),
        headers=_check_traceparent(traceparent),
    )


def _query_value(name: str, value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"{name} must be a timezone-aware datetime")
        return value.isoformat()
    if isinstance(value, str):
        return value.strip() or None
    if name == "include" and isinstance(value, Iterable):
        tokens = [str(getattr(t, "value", t)) for t in value]
        return ",".join(tokens) or None
    raise ValueError(f"{name} must be a string, int, bool or datetime, got {type(value).__name__}")


def _query(filters: Mapping[str, object], allowed: frozenset[str], what: str) -> tuple[tuple[str, str], ...]:
    params: list[tuple[str, str]] = []
    for raw_name, value in filters.items():
        name = "from" if raw_name == "from_" else raw_name
        if name not in allowed:
            raise ValueError(f"{what} got an unknown filter {raw_name!r}; known: {', '.join(sorted(allowed))}")
        text = _query_value(name, value)
        if text is None:
            continue
        if name == "limit" and not (text.isdigit() and 1 <= int(text) <= 200):
            raise ValueError(f"limit must be between 1 and 200, got {value!r}")
        params.append((name, text))
    return tuple(params)


def _parse_bound(name: str, text: str) -> _dt.datetime:
    # Python 3.10's fromisoformat does not accept the RFC 3339 "Z" suffix.
    try:
        return _dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise ValueError(f"{name} must be an ISO 8601 date-time, got {text!r}") from None


def list_reservations(filters: Mapping[str, object], *, traceparent: str | None = None) -> HttpRequest:
    """``GET /v1/reservations`` (``from_`` is accepted for the ``from`` filter)."""
    params = _query(filters, _LIST_FILTERS, "list_reservations")
    bounds = dict(params)
    for low, high in (("from", "to"), ("expires_from", "expires_to"), ("finalized_from", "finalized_to")):
        if low in bounds and high in bounds:
            try:
                if _parse_bound(low, bounds[low]) > _parse_bound(high, bounds[high]):
                    raise ValueError(f"{low} must not be later than {high}")
            except TypeError:
                raise ValueError(f"{low} and {high} must both carry a UTC offset") from None
    return HttpRequest(
        operation=Operation.LIST,
        method="GET",
        path="/v1/reservations",
        params=params,
        headers=_check_traceparent(traceparent),
    )


def balances(filters: Mapping[str, object], *, traceparent: str | None = None) -> HttpRequest:
    """``GET /v1/balances``; at least one subject filter is required."""
    params = _query(filters, _BALANCE_FILTERS, "get_balances")
    if not any(name in _SUBJECT_FILTERS for name, _ in params):
        raise ValueError(
            "get_balances requires at least one subject filter (tenant, workspace, app, workflow, agent, or toolset)"
        )
    return HttpRequest(
        operation=Operation.BALANCES,
        method="GET",
        path="/v1/balances",
        params=params,
        headers=_check_traceparent(traceparent),
    )


def with_cursor(request: HttpRequest, cursor: str) -> HttpRequest:
    """The same query, asking for the page after ``cursor``."""
    params = (*tuple(p for p in request.params if p[0] != "cursor"), ("cursor", cursor))
    return attrs.evolve(request, params=params)


def next_cursor(response: CyclesResponse, previous: str | None) -> str | None:
    """The cursor of the next page, or ``None`` when this was the last (or the server repeats itself)."""
    cursor = response.get_body_attribute("next_cursor")
    if not isinstance(cursor, str) or not cursor or cursor == previous:
        return None
    if response.get_body_attribute("has_more") is False:
        return None
    return cursor


def _error_message(status: int, body: Any, reason: str, cut_at: int | None) -> str:
    """The message of a cut body (any status) or of a complete non-2xx answer (the body's, else the reason)."""
    if cut_at is not None:
        message = f"response body larger than {cut_at} bytes (not read past the limit)"
        return message if 200 <= status < 300 else f"{reason or f'HTTP {status}'}; {message}"
    if isinstance(body, Mapping):
        for field in ("message", "error"):
            text = body.get(field)
            if isinstance(text, str) and text:
                return text
    return reason or f"HTTP {status}"


def parse_response(
    status: int,
    headers: httpx.Headers,
    content: bytes,
    reason: str = "",
    *,
    scrub: Scrubber | None = None,
    cut_at: int | None = None,
) -> CyclesResponse:
    """Decode one HTTP response; never raises, whatever the bytes.

    ``scrub`` redacts the API key from everything kept and caps the error text. ``cut_at`` says the body
    was not read past that many bytes: it is then not decoded at all (``body`` is ``None``,
    ``body_truncated`` is set), so a 2xx reads as a malformed, ambiguous answer, never as a success.
    """
    scrub = scrub if scrub is not None else _NO_SECRET
    kept = scrub.content(content)
    body: Any = None
    if content and cut_at is None:
        try:
            body = json.loads(content)
        except (ValueError, UnicodeDecodeError, RecursionError):
            body = None
        # Without escapes every decoded string is a slice of the bytes, so a secret absent from the bytes is
        # absent from the body too: the walk through every value is only needed otherwise.
        if body is not None and (kept is not content or b"\\" in content):
            body = scrub.data(body)
    # The common case, a complete 2xx, carries no message and pays for no further call.
    message = None if cut_at is None and 200 <= status < 300 else _error_message(status, body, reason, cut_at)
    return CyclesResponse(
        status=status,
        body=body,
        headers=scrub.headers(headers),
        error_message=scrub.text(message) if message is not None else None,
        content=kept,
        body_truncated=cut_at is not None,
    )


def transport_failure(exc: BaseException, *, scrub: Scrubber | None = None) -> CyclesResponse:
    """The response recorded when no HTTP answer arrived."""
    text = str(exc) or type(exc).__name__
    message = (scrub if scrub is not None else _NO_SECRET).text(f"{type(exc).__name__}: {text}")
    return CyclesResponse(status=-1, error_message=message, transport_error=exc)
