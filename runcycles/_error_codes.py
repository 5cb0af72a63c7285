"""The protocol's error codes (`ErrorCode`) and the reading of a wire code (`error_code_from_string`).

The bottom of the model layer: `errors`, `models` and `validation` all use it, and it imports none of them.
``runcycles.models.ErrorCode`` and ``runcycles.validation.error_code_from_string`` are the public names.
"""

from __future__ import annotations

import enum

__all__ = ["ErrorCode", "error_code_from_string"]


class ErrorCode(str, enum.Enum):
    """Error codes of ``ErrorResponse.error``: the 17 runtime codes, the three v0.1.26 codes, and the
    client-only ``UNKNOWN`` for anything else."""

    INVALID_REQUEST = "INVALID_REQUEST"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
    BUDGET_FROZEN = "BUDGET_FROZEN"
    BUDGET_CLOSED = "BUDGET_CLOSED"
    RESERVATION_EXPIRED = "RESERVATION_EXPIRED"
    RESERVATION_FINALIZED = "RESERVATION_FINALIZED"
    IDEMPOTENCY_MISMATCH = "IDEMPOTENCY_MISMATCH"
    UNIT_MISMATCH = "UNIT_MISMATCH"
    OVERDRAFT_LIMIT_EXCEEDED = "OVERDRAFT_LIMIT_EXCEEDED"
    DEBT_OUTSTANDING = "DEBT_OUTSTANDING"
    MAX_EXTENSIONS_EXCEEDED = "MAX_EXTENSIONS_EXCEEDED"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    TENANT_CLOSED = "TENANT_CLOSED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    ACTION_QUOTA_EXCEEDED = "ACTION_QUOTA_EXCEEDED"
    ACTION_KIND_NOT_ALLOWED = "ACTION_KIND_NOT_ALLOWED"
    ACTION_KIND_DENIED = "ACTION_KIND_DENIED"
    UNKNOWN = "UNKNOWN"


def error_code_from_string(value: str | None) -> ErrorCode | None:
    """Map a wire error code to :class:`~runcycles.models.ErrorCode`: ``None`` stays ``None``, a known code
    becomes its member, anything else becomes ``ErrorCode.UNKNOWN``."""
    if value is None:
        return None
    if isinstance(value, ErrorCode):
        return value
    try:
        return ErrorCode(value)
    except ValueError:
        return ErrorCode.UNKNOWN
