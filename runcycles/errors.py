"""The exception hierarchy and the mapping from a response to an exception."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._error_codes import ErrorCode, error_code_from_string

if TYPE_CHECKING:
    from .response import CyclesResponse

__all__ = [
    "AuthenticationError",
    "BudgetExceededError",
    "CyclesError",
    "CyclesProtocolError",
    "CyclesTransportError",
    "DebtOutstandingError",
    "JournalError",
    "MissingActualError",
    "OverdraftLimitExceededError",
    "PermissionDeniedError",
    "ReservationExpiredError",
    "ReservationFinalizedError",
    "ResponseFormatError",
    "TenantClosedError",
    "denial_error",
    "error_code_of",
    "error_from_response",
]


class CyclesError(Exception):
    """Base class of every error raised by runcycles."""


class ResponseFormatError(CyclesError, ValueError):
    """A server response could not be read as the schema it claims to be.

    Raised by every ``*_from_wire`` reader for a missing required field or a wrongly typed value;
    the lifecycle treats such a response as an ambiguous outcome, never as a success.
    """


class CyclesProtocolError(CyclesError):
    """The server answered with an error, or denied the request.

    ``error_code`` is the protocol ``ErrorCode`` (``ErrorCode.UNKNOWN`` for a code this client does not know,
    ``None`` when the response carried none); ``reason_code`` is the decision's reason code for a 200 DENY,
    else the error code's value. ``status`` is the HTTP status (200 for a DENY decision).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        error_code: ErrorCode | None = None,
        reason_code: str | None = None,
        retry_after_ms: int | None = None,
        request_id: str | None = None,
        trace_id: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_code = error_code
        self.reason_code = reason_code
        self.retry_after_ms = retry_after_ms
        self.request_id = request_id
        self.trace_id = trace_id
        self.details: Mapping[str, Any] = details if details is not None else {}

    def _is(self, name: str) -> bool:
        code = self.error_code
        return code is not None and code.value == name

    def is_budget_exceeded(self) -> bool:
        """True for ``BUDGET_EXCEEDED``."""
        return self._is("BUDGET_EXCEEDED")

    def is_overdraft_limit_exceeded(self) -> bool:
        """True for ``OVERDRAFT_LIMIT_EXCEEDED``."""
        return self._is("OVERDRAFT_LIMIT_EXCEEDED")

    def is_debt_outstanding(self) -> bool:
        """True for ``DEBT_OUTSTANDING``."""
        return self._is("DEBT_OUTSTANDING")

    def is_reservation_expired(self) -> bool:
        """True for ``RESERVATION_EXPIRED``."""
        return self._is("RESERVATION_EXPIRED")

    def is_reservation_finalized(self) -> bool:
        """True for ``RESERVATION_FINALIZED``."""
        return self._is("RESERVATION_FINALIZED")

    def is_idempotency_mismatch(self) -> bool:
        """True for ``IDEMPOTENCY_MISMATCH``."""
        return self._is("IDEMPOTENCY_MISMATCH")

    def is_unit_mismatch(self) -> bool:
        """True for ``UNIT_MISMATCH``."""
        return self._is("UNIT_MISMATCH")

    def is_tenant_closed(self) -> bool:
        """True for ``TENANT_CLOSED``."""
        return self._is("TENANT_CLOSED")

    def is_retryable(self) -> bool:
        """True when the same request may succeed later: 5xx, 429, ``INTERNAL_ERROR``, ``LIMIT_EXCEEDED``,
        an unknown code, or no response at all (status -1)."""
        if self.status == -1 or self.status >= 500 or self.status == 429:
            return True
        return self._is("INTERNAL_ERROR") or self._is("LIMIT_EXCEEDED") or self._is("UNKNOWN")

    def __repr__(self) -> str:
        code = self.error_code.value if self.error_code is not None else None
        return (
            f"{type(self).__name__}({self.message!r}, status={self.status}, error_code={code!r}, "
            f"reason_code={self.reason_code!r}, request_id={self.request_id!r})"
        )


class BudgetExceededError(CyclesProtocolError):
    """Not enough budget (``BUDGET_EXCEEDED``), whether from a 409 or a 200 DENY."""


class OverdraftLimitExceededError(CyclesProtocolError):
    """A scope is over its overdraft limit (``OVERDRAFT_LIMIT_EXCEEDED``)."""


class DebtOutstandingError(CyclesProtocolError):
    """A scope has unpaid debt (``DEBT_OUTSTANDING``)."""


class ReservationExpiredError(CyclesProtocolError):
    """The reservation expired (``RESERVATION_EXPIRED``)."""


class ReservationFinalizedError(CyclesProtocolError):
    """The reservation was already committed or released (``RESERVATION_FINALIZED``)."""


class TenantClosedError(CyclesProtocolError):
    """The owning tenant is closed (``TENANT_CLOSED``)."""


class AuthenticationError(CyclesProtocolError):
    """The server did not accept the API key (HTTP 401, ``UNAUTHORIZED``)."""


class PermissionDeniedError(CyclesProtocolError):
    """The API key may not do this (HTTP 403, ``FORBIDDEN``)."""


class MissingActualError(CyclesError):
    """The guarded work finished but its actual spend is unknown, and the estimate may not stand in for it
    (``use_estimate_if_actual_not_provided=False``).

    Nothing was committed and nothing released: the reservation ``reservation_id`` expires on its own, so
    budget that may have been spent is not freed. ``result`` is what the guarded function returned (``None``
    for a stream); ``__cause__`` is the exception the ``actual`` callable raised, if any.
    """

    def __init__(self, message: str, *, reservation_id: str, result: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.reservation_id = reservation_id
        self.result = result


class CyclesTransportError(CyclesError):
    """No usable answer from the server (connection, timeout); ``__cause__`` is the httpx exception.

    ``url`` is the address that could not be reached (taken from the httpx exception when not given); the
    message names it.
    """

    def __init__(self, message: str, cause: BaseException | None = None, *, url: str | None = None) -> None:
        url = url if url is not None else _url_of(cause)
        if url and url not in message:
            message = f"{message} (could not reach {url})"
        super().__init__(message)
        self.message = message
        self.cause = cause
        self.url = url
        if cause is not None:
            self.__cause__ = cause


def _url_of(cause: BaseException | None) -> str | None:
    """The request URL an httpx exception carries, if any (``.request`` raises when it has none)."""
    if cause is None:
        return None
    try:
        request = cause.request  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):
        return None
    url = getattr(request, "url", None)
    return str(url) if url is not None else None


_CLASS_BY_CODE: dict[str, type[CyclesProtocolError]] = {
    "BUDGET_EXCEEDED": BudgetExceededError,
    "OVERDRAFT_LIMIT_EXCEEDED": OverdraftLimitExceededError,
    "DEBT_OUTSTANDING": DebtOutstandingError,
    "RESERVATION_EXPIRED": ReservationExpiredError,
    "RESERVATION_FINALIZED": ReservationFinalizedError,
    "TENANT_CLOSED": TenantClosedError,
    "UNAUTHORIZED": AuthenticationError,
    "FORBIDDEN": PermissionDeniedError,
}

_CLASS_BY_STATUS: dict[int, type[CyclesProtocolError]] = {
    401: AuthenticationError,
    403: PermissionDeniedError,
}

_CODE_BY_STATUS: dict[int, str] = {
    400: "INVALID_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    410: "RESERVATION_EXPIRED",
    429: "LIMIT_EXCEEDED",
}


def _code(value: object) -> ErrorCode | None:
    if not isinstance(value, str) or not value:
        return None
    return error_code_from_string(value)


def error_code_of(response: CyclesResponse) -> ErrorCode | None:
    """The response's error code: the body's ``error``, else one implied by the HTTP status."""
    code = _code(response.get_body_attribute("error"))
    if code is not None:
        return code
    if response.status in _CODE_BY_STATUS:
        return ErrorCode(_CODE_BY_STATUS[response.status])
    if response.status >= 500:
        return ErrorCode.INTERNAL_ERROR
    return None


def _request_id(response: CyclesResponse) -> str | None:
    """The body's ``request_id`` first (API.md §3), else the ``X-Request-Id`` header."""
    body_value = response.get_body_attribute("request_id")
    if isinstance(body_value, str) and body_value:
        return body_value
    return response.request_id


def _class_for(code: ErrorCode | None, status: int) -> type[CyclesProtocolError]:
    cls = _CLASS_BY_CODE.get(code.value) if code is not None else None
    return cls or _CLASS_BY_STATUS.get(status, CyclesProtocolError)


def error_from_response(response: CyclesResponse, prefix: str) -> CyclesProtocolError:
    """The typed exception for a non-success response (mapped by ``error`` code, then by HTTP status:
    401 `AuthenticationError`, 403 `PermissionDeniedError`)."""
    code = error_code_of(response)
    message = response.error_message or ""
    details_raw = response.get_body_attribute("details")
    details = details_raw if isinstance(details_raw, Mapping) else None
    body_retry = response.get_body_attribute("retry_after_ms")
    retry_after = (
        body_retry
        if isinstance(body_retry, int) and not isinstance(body_retry, bool) and body_retry >= 0
        else response.retry_after_ms
    )
    reason = response.get_body_attribute("reason_code")
    cls = _class_for(code, response.status)
    return cls(
        f"{prefix}: {message}" if message else prefix,
        status=response.status,
        error_code=code,
        reason_code=reason if isinstance(reason, str) else (code.value if code is not None else None),
        retry_after_ms=retry_after,
        request_id=_request_id(response),
        trace_id=response.trace_id,
        details=details,
    )


class JournalError(CyclesError):
    """A settlement journal I/O operation failed (directory, write, read, lock).

    Durability is then best-effort: callers surface the error to operators and still attempt the
    settlement request.
    """


def denial_error(
    response: CyclesResponse, *, reason_code: str | None, retry_after_ms: int | None, prefix: str
) -> CyclesProtocolError:
    """The typed exception for a 200 ``DENY`` decision: the same class a 409 with that code would give."""
    code = _code(reason_code)
    details_raw = response.get_body_attribute("deny_detail")
    details = {"deny_detail": details_raw} if isinstance(details_raw, Mapping) else None
    cls = _CLASS_BY_CODE.get(reason_code or "", CyclesProtocolError)
    return cls(
        f"{prefix}: {reason_code}" if reason_code else prefix,
        status=response.status,
        error_code=code,
        reason_code=reason_code,
        retry_after_ms=retry_after_ms,
        request_id=_request_id(response),
        trace_id=response.trace_id,
        details=details,
    )
