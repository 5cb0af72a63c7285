"""`CyclesResponse`: what every wire-client call returns, success or not."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs
import httpx

if TYPE_CHECKING:
    from .models import ErrorResponse

__all__ = ["CyclesResponse", "TypedCyclesResponse"]

M = TypeVar("M")

_INT64_MAX = 2**63 - 1


def _header_int(headers: httpx.Headers, name: str) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    text = raw.strip()
    digits = text[1:] if text.startswith("-") else text
    if not digits.isascii() or not digits.isdigit():
        return None
    value = int(text)
    return value if -_INT64_MAX <= value <= _INT64_MAX else None


@attrs.frozen(kw_only=True)
class CyclesResponse:
    """One HTTP exchange with a Cycles server, or the transport failure that prevented it.

    ``status`` is the HTTP status, or ``-1`` when no response arrived (``transport_error`` then holds the
    httpx exception). ``body`` is the decoded JSON (any JSON value) or ``None`` when the body was empty or
    not JSON. No accessor raises, whatever the server sent.

    The wire clients read at most ``max_response_bytes`` of a body: past it ``body_truncated`` is True,
    ``content`` holds the bytes read and ``body`` is ``None``. The configured API key is redacted from
    ``body``, ``headers``, ``content`` and ``error_message``; ``error_message`` is capped at 2,048 characters.
    """

    status: int
    body: Any = None
    headers: httpx.Headers = attrs.field(factory=httpx.Headers)
    error_message: str | None = None
    transport_error: BaseException | None = attrs.field(default=None, eq=False)
    content: bytes = attrs.field(default=b"", repr=False)
    body_truncated: bool = False

    @property
    def is_success(self) -> bool:
        """True for a 2xx status."""
        return 200 <= self.status < 300

    @property
    def is_client_error(self) -> bool:
        """True for a 4xx status."""
        return 400 <= self.status < 500

    @property
    def is_server_error(self) -> bool:
        """True for a 5xx status."""
        return 500 <= self.status < 600

    @property
    def is_transport_error(self) -> bool:
        """True when no HTTP response was received."""
        return self.status == -1

    @property
    def request_id(self) -> str | None:
        """``X-Request-Id``, else the body's ``request_id``."""
        value: str | None = self.headers.get("x-request-id")
        if value:
            return value
        body_value = self.get_body_attribute("request_id")
        return body_value if isinstance(body_value, str) else None

    @property
    def trace_id(self) -> str | None:
        """``X-Cycles-Trace-Id``, else the body's ``trace_id``."""
        value: str | None = self.headers.get("x-cycles-trace-id")
        if value:
            return value
        body_value = self.get_body_attribute("trace_id")
        return body_value if isinstance(body_value, str) else None

    @property
    def cycles_tenant(self) -> str | None:
        """``X-Cycles-Tenant``: the effective tenant the server derived from the key."""
        return self.headers.get("x-cycles-tenant") or None

    @property
    def rate_limit_remaining(self) -> int | None:
        """``X-RateLimit-Remaining`` as an int, or ``None`` when absent or malformed."""
        return _header_int(self.headers, "x-ratelimit-remaining")

    @property
    def rate_limit_reset(self) -> int | None:
        """``X-RateLimit-Reset`` (unix seconds) as an int, or ``None`` when absent or malformed."""
        return _header_int(self.headers, "x-ratelimit-reset")

    @property
    def retry_after_ms(self) -> int | None:
        """``Retry-After`` in milliseconds; only the delta-seconds form counts (an HTTP date is ignored)."""
        raw = self.headers.get("retry-after")
        if raw is None:
            return None
        text = raw.strip()
        if not text.isascii() or not text.isdigit():
            return None
        seconds = int(text)
        return seconds * 1000 if seconds <= _INT64_MAX // 1000 else None

    def get_body_attribute(self, key: str) -> Any:
        """``body[key]`` when the body is a JSON object, else ``None``."""
        return self.body.get(key) if isinstance(self.body, Mapping) else None

    def get_error_response(self) -> ErrorResponse | None:
        """The body read as an ``ErrorResponse``, or ``None`` when it is not one (never raises)."""
        if self.is_success or not isinstance(self.body, Mapping):
            return None
        from .errors import ResponseFormatError
        from .mappers import error_response_from_wire

        try:
            return error_response_from_wire(self.body)
        except ResponseFormatError:
            return None


@attrs.frozen(kw_only=True)
class TypedCyclesResponse(CyclesResponse, Generic[M]):
    """A `CyclesResponse` from a wire-client method that knows its success schema: ``parsed`` reads it.

    ``client.create_reservation(...)`` returns ``TypedCyclesResponse[ReservationCreateResponse]``, and so on.
    """

    reader: Callable[[object], M] = attrs.field(repr=False, eq=False)

    @property
    def parsed(self) -> M:
        """The body read as the operation's success model.

        Raises the typed `CyclesProtocolError` (or `CyclesTransportError`) for a non-2xx answer, and
        `ResponseFormatError` for a 2xx body that is not the schema."""
        from .errors import CyclesTransportError, error_from_response

        if self.is_transport_error:
            raise CyclesTransportError(f"no response: {self.error_message}", self.transport_error)
        if not self.is_success:
            raise error_from_response(self, f"HTTP {self.status}")
        return self.reader(self.body)

    @classmethod
    def of(cls, response: CyclesResponse, reader: Callable[[object], M]) -> TypedCyclesResponse[M]:
        """``response`` with ``reader`` attached."""
        fields = {(f.alias or f.name): getattr(response, f.name) for f in attrs.fields(CyclesResponse) if f.init}
        return cls(reader=reader, **fields)
