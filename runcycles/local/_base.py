"""Types shared by the embedded server's handlers: the request, the error, the environment."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import attrs

from ._access import Grant
from ._ledger_store import Ledger
from ._validate import Check, SchemaError, canonical_json, compact_encoder, parse_json_object

Clock = Callable[[], int]
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# Admin date-times must stay within what both ``datetime`` and a signed 64-bit millisecond count hold.
_MIN_MS = 0
_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


class LocalServerError(Exception):
    """An error answer of the embedded server: HTTP ``status``, protocol ``code``, ``message``, ``details``.

    Raised by the handlers (and turned into an ``ErrorResponse`` body) and by the admin methods of
    :class:`~runcycles.local.LocalCyclesServer`.
    """

    # The ledger commits a transaction that ends with this error: it is raised before any mutation
    # except the expiry sweep, which must stick.
    commit_on_error = True

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class StaleAuth(Exception):
    """A key authenticated from the cache may have changed since: authenticate again and rerun the request.

    Raised inside the handler's transaction before any change but the expiry sweep, which may stick.
    """

    commit_on_error = True


def invalid(message: str) -> LocalServerError:
    """A 400 INVALID_REQUEST error."""
    return LocalServerError(400, "INVALID_REQUEST", message)


@attrs.define(kw_only=True)
class Env:
    """What handlers need: the ledger, the clock (epoch ms) and the admin secret."""

    ledger: Ledger
    clock: Clock
    admin_key: str
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    key_cache: dict[bytes, tuple[tuple[int, int], Any]] = attrs.field(factory=dict, repr=False)
    """What authenticating a key found, by a keyed hash of its secret, with the (``auth_epoch``, ledger
    rollbacks) it was read at."""
    tenant_cache: dict[str, tuple[tuple[int, int], Any]] = attrs.field(factory=dict, repr=False)
    """Tenant documents by id, with the (``auth_epoch``, ledger rollbacks) they were read at."""


@attrs.define(kw_only=True)
class Request:
    """One parsed HTTP request, plus what authentication established."""

    method: str
    segments: list[str]
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    request_id: str
    trace_id: str
    tenant: str | None = None
    admin: bool = False
    grant: Grant | None = None
    """The tenant key's permissions and scope filter (``None`` for the admin key)."""
    auth_stamp: tuple[int, int] | None = None
    """Set when the key was authenticated from the cache without reading the ledger: the (``auth_epoch``,
    rollbacks) the cached entry holds for; the handler's transaction must find the same (see
    :meth:`check_auth`) before it changes anything."""

    def check_auth(self, epoch: int, rollbacks: int) -> None:
        """Raise :class:`StaleAuth` if a cached authentication may no longer hold (``epoch``: read in the
        handler's transaction)."""
        if self.auth_stamp is not None:
            if self.auth_stamp != (epoch, rollbacks):
                raise StaleAuth()
            self.auth_stamp = None  # verified

    def param(self, name: str) -> str | None:
        """The first value of a query parameter; a blank value counts as absent."""
        values = self.query.get(name)
        if not values or values[0].strip() == "":
            return None
        return values[0]

    def json(self, schema: Check | None = None) -> dict[str, Any]:
        """The body as a validated JSON object (400 INVALID_REQUEST otherwise)."""
        try:
            return parse_json_object(self.body, schema)
        except SchemaError as exc:
            raise invalid(str(exc)) from None

    def idempotent_json(self, schema: Check) -> dict[str, Any]:
        """Like :meth:`json`, also checking that ``X-Idempotency-Key`` (if sent) equals the body key."""
        body = self.json(schema)
        header = self.headers.get("x-idempotency-key")
        if header is not None and header != body.get("idempotency_key"):
            raise invalid("X-Idempotency-Key header does not match body idempotency_key")
        return body


_COMPACT = compact_encoder(ensure_ascii=False)


def dumps(value: Any) -> bytes:
    """Compact JSON bytes."""
    return _COMPACT(value).encode("utf-8")


def dumps_with(value: dict[str, Any], name: str, raw_json: str) -> bytes:
    """:func:`dumps` of a non-empty object ``value`` with one more member, ``name``, appended last, whose
    value is the JSON text ``raw_json`` (already encoded, e.g. by a faster special-purpose encoder)."""
    return f"{_COMPACT(value)[:-1]},{_COMPACT(name)}:{raw_json}}}".encode()


def payload_hash(body: dict[str, Any], defaults: dict[str, Any] | None = None) -> str:
    """SHA-256 of the canonical JSON of the defaults-filled request."""
    filled = {**defaults, **body} if defaults else body
    return hashlib.sha256(canonical_json(filled).encode("utf-8")).hexdigest()


# The RFC 4122 variant digit (binary 10xx) for each random hex digit.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def new_id() -> str:
    """A fresh opaque identifier (a random version-4 UUID, as ``str(uuid.uuid4())`` but cheaper)."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def amount(unit: str, value: int) -> dict[str, Any]:
    """An ``Amount`` wire object."""
    return {"unit": unit, "amount": value}


def iso(ms: int) -> str:
    """Epoch milliseconds as an ISO 8601 UTC timestamp (admin-plane style)."""
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(value: str, name: str) -> int:
    """An ISO 8601 date-time as epoch milliseconds (naive values are taken as UTC), 1970..9999."""
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        ms = int(moment.timestamp() * 1000)
    except (ValueError, OverflowError):
        raise invalid(f"{name} must be an ISO 8601 date-time") from None
    if not _MIN_MS <= ms <= _MAX_MS:
        raise invalid(f"{name} must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z")
    return ms


def encode_cursor(secret: bytes, value: dict[str, Any]) -> str:
    """An opaque pagination cursor, signed with the database's cursor ``secret``."""
    payload = base64.urlsafe_b64encode(dumps(value)).decode("ascii").rstrip("=")
    return f"{payload}.{_cursor_mac(secret, payload)}"


def _cursor_mac(secret: bytes, payload: str) -> str:
    mac = hmac.new(secret, payload.encode("ascii"), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac).decode("ascii").rstrip("=")


def decode_cursor(secret: bytes, cursor: str, binding: str) -> dict[str, Any]:
    """Decode a cursor made by :func:`encode_cursor`: its signature must verify and it must carry the
    same filter ``binding``; a forged or foreign cursor is a 400."""
    payload, _, mac = cursor.partition(".")
    try:
        ascii_payload = payload.encode("ascii")
        good = hmac.compare_digest(_cursor_mac(secret, payload).encode("ascii"), mac.encode("ascii"))
    except UnicodeEncodeError:
        good = False
    if not good:
        raise invalid("cursor is malformed")
    try:
        value = json.loads(base64.urlsafe_b64decode(ascii_payload + b"=" * (-len(payload) % 4)))
    except (ValueError, TypeError):
        raise invalid("cursor is malformed") from None
    if not isinstance(value, dict) or value.get("h") != binding:
        raise invalid("cursor does not match the query parameters")
    return value


def cursor_offset(value: dict[str, Any]) -> int:
    """The ``o`` (offset) field of a decoded cursor."""
    offset = value.get("o", 0)
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise invalid("cursor is malformed")
    return offset


def page_limit(req: Request, default: int = 50, maximum: int = 200) -> int:
    """The ``limit`` query parameter, checked against 1..maximum."""
    raw = req.param("limit")
    if raw is None:
        return default
    try:
        limit = int(raw)
    except ValueError:
        raise invalid("limit must be an integer") from None
    if not 1 <= limit <= maximum:
        raise invalid(f"limit must be between 1 and {maximum}")
    return limit


def binding(*parts: Any) -> str:
    """A short hash of the parameters a cursor is bound to."""
    return hashlib.sha256(canonical_json(list(parts)).encode("utf-8")).hexdigest()[:16]
