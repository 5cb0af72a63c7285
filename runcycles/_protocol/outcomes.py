"""Response -> `Outcome`: what an answer means for the operation that got it. No I/O here.

Only an exact success status with a schema-valid body of the expected shape is a success; every other 2xx is
ambiguous (the request may or may not have been applied, so it is retried with the same key).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import attrs

from ..errors import ResponseFormatError, error_code_of
from ..mappers import (
    balance_response_from_wire,
    commit_response_from_wire,
    decision_response_from_wire,
    event_create_response_from_wire,
    release_response_from_wire,
    reservation_create_response_from_wire,
    reservation_detail_from_wire,
    reservation_extend_response_from_wire,
    reservation_list_response_from_wire,
)
from ..models import Decision, ErrorCode
from ..response import CyclesResponse
from .requests import Operation

__all__ = ["Outcome", "OutcomeKind", "classify"]


class OutcomeKind(enum.Enum):
    """The meaning of one answer."""

    SUCCESS = "success"
    AMBIGUOUS = "ambiguous"  # a 2xx (or 1xx/3xx) that is not the schema-valid success
    TRANSIENT = "transient"  # no answer, or 5xx
    RATE_LIMITED = "rate_limited"  # 429 / LIMIT_EXCEEDED
    EXPIRED = "expired"  # 410 / RESERVATION_EXPIRED
    FINALIZED = "finalized"  # 409 RESERVATION_FINALIZED
    RETAIN = "retain"  # 401, 403, codeless or unknown 4xx: keep the spend, do not give up on it
    TERMINAL = "terminal"  # an understood rejection


# Understood rejections: the same request will never succeed, so retrying is pointless.
_TERMINAL_CODES = frozenset(
    {
        ErrorCode.INVALID_REQUEST,
        ErrorCode.UNIT_MISMATCH,
        ErrorCode.NOT_FOUND,
        ErrorCode.BUDGET_EXCEEDED,
        ErrorCode.BUDGET_FROZEN,
        ErrorCode.BUDGET_CLOSED,
        ErrorCode.OVERDRAFT_LIMIT_EXCEEDED,
        ErrorCode.DEBT_OUTSTANDING,
        ErrorCode.IDEMPOTENCY_MISMATCH,
        ErrorCode.TENANT_CLOSED,
        ErrorCode.MAX_EXTENSIONS_EXCEEDED,
        ErrorCode.ACTION_QUOTA_EXCEEDED,
        ErrorCode.ACTION_KIND_NOT_ALLOWED,
        ErrorCode.ACTION_KIND_DENIED,
    }
)


@attrs.frozen(kw_only=True)
class Outcome:
    """The classification of one response, with the parsed model on success."""

    kind: OutcomeKind
    response: CyclesResponse
    model: Any = None
    error_code: ErrorCode | None = None
    retry_after_ms: int | None = None
    problem: str | None = None

    @property
    def is_success(self) -> bool:
        """True for a schema-valid success."""
        return self.kind is OutcomeKind.SUCCESS


def _commit_ok(model: Any) -> bool:
    return str(getattr(model.status, "value", model.status)) == "COMMITTED"


def _release_ok(model: Any) -> bool:
    return str(getattr(model.status, "value", model.status)) == "RELEASED"


def _extend_ok(model: Any) -> bool:
    return str(getattr(model.status, "value", model.status)) == "ACTIVE"


def _event_ok(model: Any) -> bool:
    return str(getattr(model.status, "value", model.status)) == "APPLIED"


def _decision_ok(model: Any) -> bool:
    return isinstance(model.decision, Decision)


def _readable(model: Any) -> bool:
    return True


_READERS: dict[Operation, tuple[int, Callable[[Any], Any], Callable[[Any], bool]]] = {
    Operation.CREATE: (200, reservation_create_response_from_wire, _decision_ok),
    Operation.COMMIT: (200, commit_response_from_wire, _commit_ok),
    Operation.RELEASE: (200, release_response_from_wire, _release_ok),
    Operation.EXTEND: (200, reservation_extend_response_from_wire, _extend_ok),
    Operation.DECIDE: (200, decision_response_from_wire, _decision_ok),
    Operation.EVENT: (201, event_create_response_from_wire, _event_ok),
    Operation.GET: (200, reservation_detail_from_wire, _readable),
    Operation.LIST: (200, reservation_list_response_from_wire, _readable),
    Operation.BALANCES: (200, balance_response_from_wire, _readable),
}


def _read_success(operation: Operation, response: CyclesResponse) -> Outcome:
    expected, reader, check = _READERS[operation]
    if response.status != expected:
        return Outcome(
            kind=OutcomeKind.AMBIGUOUS,
            response=response,
            problem=f"status {response.status}, expected {expected}",
        )
    try:
        model = reader(response.body)
    except ResponseFormatError as exc:
        return Outcome(kind=OutcomeKind.AMBIGUOUS, response=response, problem=str(exc))
    if not check(model):
        return Outcome(kind=OutcomeKind.AMBIGUOUS, response=response, problem="unexpected status or decision")
    return Outcome(kind=OutcomeKind.SUCCESS, response=response, model=model)


def classify(operation: Operation, response: CyclesResponse) -> Outcome:
    """What ``response`` means for ``operation`` (any operation; reads succeed on a readable 200)."""
    if response.is_transport_error or response.is_server_error:
        return Outcome(
            kind=OutcomeKind.TRANSIENT, response=response, error_code=error_code_of(response),
            problem=response.error_message,
        )
    if response.is_success:
        return _read_success(operation, response)
    code = error_code_of(response)
    if response.status == 429 or code is ErrorCode.LIMIT_EXCEEDED:
        return Outcome(
            kind=OutcomeKind.RATE_LIMITED, response=response, error_code=code,
            retry_after_ms=response.retry_after_ms,
        )
    if not response.is_client_error:
        return Outcome(kind=OutcomeKind.AMBIGUOUS, response=response, problem=f"status {response.status}")
    explicit = response.get_body_attribute("error")
    if response.status == 410 or code is ErrorCode.RESERVATION_EXPIRED:
        kind = OutcomeKind.EXPIRED
    elif code is ErrorCode.RESERVATION_FINALIZED:
        kind = OutcomeKind.FINALIZED
    elif isinstance(explicit, str) and code in _TERMINAL_CODES:
        kind = OutcomeKind.TERMINAL
    else:
        kind = OutcomeKind.RETAIN
    return Outcome(kind=kind, response=response, error_code=code, problem=response.error_message)
