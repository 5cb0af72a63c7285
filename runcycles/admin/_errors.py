"""Typed errors of the admin plane, built on :mod:`runcycles.errors`.

Every refusal by an admin server is a :class:`CyclesAdminError` (a
:class:`~runcycles.errors.CyclesProtocolError`) carrying the server's ``message``, HTTP ``status``, the raw
``code`` string of the admin spec's ``ErrorCode`` (``TENANT_NOT_FOUND``, ``DUPLICATE_RESOURCE``, ...), and the
``request_id`` / ``trace_id``. Codes shared with the runtime plane also match the runtime classes: a
``TENANT_CLOSED`` refusal is both an :class:`AdminConflictError` and a
:class:`~runcycles.errors.TenantClosedError`.
"""

from __future__ import annotations

from ..errors import (
    BudgetExceededError,
    CyclesProtocolError,
    CyclesTransportError,
    TenantClosedError,
    error_from_response,
)
from ..response import CyclesResponse

__all__ = [
    "AdminAuthError",
    "AdminBudgetExceededError",
    "AdminConflictError",
    "AdminInvalidRequestError",
    "AdminNotFoundError",
    "AdminTenantClosedError",
    "CyclesAdminError",
    "admin_error",
]

_RETRYABLE_CODES = frozenset({"INTERNAL_ERROR", "LIMIT_EXCEEDED"})


class CyclesAdminError(CyclesProtocolError):
    """An admin request the server refused. ``code`` is the wire error code as sent (``None`` if absent)."""

    code: str | None = None
    server_message: str | None = None
    """The server's own ``message`` (without this client's prefix)."""

    def is_retryable(self) -> bool:
        """True when the same request may succeed later: 5xx, 429, ``INTERNAL_ERROR`` or ``LIMIT_EXCEEDED``."""
        return self.status >= 500 or self.status == 429 or self.code in _RETRYABLE_CODES

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}({self.message!r}, status={self.status}, code={self.code!r}, request_id={self.request_id!r})"


class AdminInvalidRequestError(CyclesAdminError):
    """400: the server rejected the request as malformed (``INVALID_REQUEST``, ``UNIT_MISMATCH``, ...)."""


class AdminAuthError(CyclesAdminError):
    """401/403: missing or wrong admin key, or not allowed (``UNAUTHORIZED``, ``FORBIDDEN``, ...)."""


class AdminNotFoundError(CyclesAdminError):
    """404: no such tenant, key or budget (``NOT_FOUND``, ``TENANT_NOT_FOUND``, ``BUDGET_NOT_FOUND``)."""


class AdminConflictError(CyclesAdminError):
    """409: the current state forbids it (``DUPLICATE_RESOURCE``, ``BUDGET_FROZEN``, ``KEY_REVOKED``, ...)."""


class AdminTenantClosedError(AdminConflictError, TenantClosedError):
    """409 ``TENANT_CLOSED``: the tenant is closed (terminal)."""


class AdminBudgetExceededError(AdminConflictError, BudgetExceededError):
    """409 ``BUDGET_EXCEEDED``: e.g. a DEBIT that would make remaining negative."""


_BY_STATUS: dict[int, type[CyclesAdminError]] = {
    400: AdminInvalidRequestError,
    401: AdminAuthError,
    403: AdminAuthError,
    404: AdminNotFoundError,
    409: AdminConflictError,
}
_BY_CODE: dict[str, type[CyclesAdminError]] = {
    "TENANT_CLOSED": AdminTenantClosedError,
    "BUDGET_EXCEEDED": AdminBudgetExceededError,
}


def admin_error(response: CyclesResponse, what: str) -> CyclesAdminError | CyclesTransportError:
    """The typed exception for a failed admin call (a transport failure when nothing came back)."""
    if response.is_transport_error:
        return CyclesTransportError(f"{what}: {response.error_message}", response.transport_error)
    base = error_from_response(response, what)
    raw = response.get_body_attribute("error")
    code = raw if isinstance(raw, str) and raw else None
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(response.status, CyclesAdminError)
    error = cls(
        base.message,
        status=base.status,
        error_code=base.error_code,
        reason_code=code or base.reason_code,
        retry_after_ms=base.retry_after_ms,
        request_id=base.request_id,
        trace_id=base.trace_id,
        details=base.details,
    )
    error.code = code
    error.server_message = response.error_message
    return error
