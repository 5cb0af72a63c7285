"""Why a request was refused: the v0.1.26 deny details and the body of every error answer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .. import _wire as w
from ..errors import ResponseFormatError
from ._enums import ErrorCode
from ._evidence import CyclesEvidenceRef
from ._fields import extension, extra

__all__ = ["ActionQuotaViolation", "DenyDetail", "ErrorResponse"]


@attrs.frozen(kw_only=True)
class ActionQuotaViolation:
    """v0.1.26: the quota rule that caused an ``ACTION_QUOTA_EXCEEDED`` denial. ``window`` and
    ``risk_class`` are kept as strings (open sets for this client)."""

    action_kind: str = attrs.field(metadata=w.STR)
    window: str = attrs.field(metadata=w.STR)
    used: int = attrs.field(metadata=w.INT)
    limit: int = attrs.field(metadata=w.INT)
    scope: str = attrs.field(metadata=w.STR)
    window_key: str | None = attrs.field(default=None, metadata=w.STR)
    policy_id: str | None = attrs.field(default=None, metadata=w.STR)
    risk_class: str | None = attrs.field(default=None, metadata=w.STR)
    extra: Mapping[str, Any] = extra()


@attrs.frozen(kw_only=True)
class DenyDetail:
    """v0.1.26 enriched deny context (on DENY decisions, and as ``details.deny_detail`` of 409 errors)."""

    reason_code: str = attrs.field(metadata=w.STR)
    quota_violation: ActionQuotaViolation | None = attrs.field(default=None, **extension(ActionQuotaViolation))
    blocked_by_scope: str | None = attrs.field(default=None, metadata=w.STR)
    blocked_by_policy: str | None = attrs.field(default=None, metadata=w.STR)
    suggested_fix: str | None = attrs.field(default=None, metadata=w.STR)
    budget_remaining: int | None = attrs.field(default=None, metadata=w.INT)
    extra: Mapping[str, Any] = extra()


@attrs.frozen(kw_only=True)
class ErrorResponse:
    """The body of every 4xx/5xx answer.

    ``error`` is an :class:`ErrorCode`; an unrecognised code reads as ``ErrorCode.UNKNOWN`` with the wire
    string in ``error_raw`` (``None`` otherwise). v0.1.26 servers may put a :class:`DenyDetail` in
    ``details.deny_detail`` (see :attr:`deny_detail`).
    """

    error: ErrorCode = attrs.field(metadata=w.enum_of(ErrorCode, fallback=ErrorCode.UNKNOWN, raw_attr="error_raw"))
    message: str = attrs.field(metadata=w.STR)
    request_id: str = attrs.field(metadata=w.STR)
    trace_id: str | None = attrs.field(default=None, metadata=w.STR)
    details: Mapping[str, Any] | None = attrs.field(default=None, metadata=w.OBJECT)
    cycles_evidence: CyclesEvidenceRef | None = attrs.field(default=None, **extension(CyclesEvidenceRef))
    error_raw: str | None = None
    extra: Mapping[str, Any] = extra()

    @property
    def deny_detail(self) -> DenyDetail | None:
        """``details.deny_detail`` read as a :class:`DenyDetail`; ``None`` if absent or unreadable."""
        raw = self.details.get("deny_detail") if isinstance(self.details, Mapping) else None
        if raw is None:
            return None
        try:
            return w.from_wire(DenyDetail, raw)
        except ResponseFormatError:
            return None

    @property
    def error_string(self) -> str:
        """The error code exactly as the server sent it."""
        return self.error_raw if self.error_raw is not None else self.error.value
