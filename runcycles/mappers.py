"""Public mappers between the protocol models and wire (JSON-ready, snake_case) dicts.

``<schema>_to_wire(model) -> dict`` writes a request (or one of its nested values) strictly: only fields the
spec defines, never ``None``, amounts as exact ints. ``<schema>_from_wire(data) -> model`` reads a response
(or, for tests and the embedded server, a request) leniently: unknown fields go to ``model.extra``,
unknown enum values stay raw strings, and a missing required field or a wrongly typed value raises
:class:`~runcycles.errors.ResponseFormatError` naming the field -- never anything else, for any input.

All of them are thin aliases over the generic :func:`to_wire` / :func:`from_wire` engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from ._wire import from_wire, to_wire
from .models import (
    Action,
    ActionQuotaViolation,
    Amount,
    Balance,
    BalanceResponse,
    Caps,
    CommitRequest,
    CommitResponse,
    CyclesEvidenceRef,
    CyclesMetrics,
    DecisionRequest,
    DecisionResponse,
    DenyDetail,
    ErrorResponse,
    EventCreateRequest,
    EventCreateResponse,
    PolicyKeys,
    ReleaseRequest,
    ReleaseResponse,
    ReservationCreateRequest,
    ReservationCreateResponse,
    ReservationDetail,
    ReservationEvidence,
    ReservationExtendRequest,
    ReservationExtendResponse,
    ReservationListResponse,
    ReservationSummary,
    SignedAmount,
    Subject,
)

__all__ = [
    "action_from_wire",
    "action_quota_violation_from_wire",
    "action_to_wire",
    "amount_from_wire",
    "amount_to_wire",
    "balance_from_wire",
    "balance_response_from_wire",
    "caps_from_wire",
    "commit_request_from_wire",
    "commit_request_to_wire",
    "commit_response_from_wire",
    "cycles_evidence_ref_from_wire",
    "decision_request_from_wire",
    "decision_request_to_wire",
    "decision_response_from_wire",
    "deny_detail_from_wire",
    "error_response_from_wire",
    "event_create_request_from_wire",
    "event_create_request_to_wire",
    "event_create_response_from_wire",
    "from_wire",
    "metrics_from_wire",
    "metrics_to_wire",
    "policy_keys_from_wire",
    "policy_keys_to_wire",
    "release_request_from_wire",
    "release_request_to_wire",
    "release_response_from_wire",
    "request_body",
    "reservation_create_request_from_wire",
    "reservation_create_request_to_wire",
    "reservation_create_response_from_wire",
    "reservation_detail_from_wire",
    "reservation_evidence_from_wire",
    "reservation_extend_request_from_wire",
    "reservation_extend_request_to_wire",
    "reservation_extend_response_from_wire",
    "reservation_list_response_from_wire",
    "reservation_summary_from_wire",
    "signed_amount_from_wire",
    "signed_amount_to_wire",
    "standard_metrics_from_wire",
    "standard_metrics_to_wire",
    "subject_from_wire",
    "subject_to_wire",
    "to_wire",
]

M = TypeVar("M")


def request_body(request: Any) -> dict[str, Any]:
    """The wire body of ``request``: a ``dict`` is returned as is (it is taken to be wire format already);
    a model goes through :func:`to_wire`. Anything else raises ``TypeError`` naming its type."""
    if isinstance(request, dict):
        return request
    if attrs.has(type(request)):
        return to_wire(request)
    raise TypeError(f"request must be a runcycles model or a dict, got {type(request).__name__}")


def _writer(cls: type[M], name: str) -> Callable[[M], dict[str, Any]]:
    def write(model: M) -> dict[str, Any]:
        if not isinstance(model, cls):
            raise TypeError(f"{name} expects a {cls.__name__}, got {type(model).__name__}")
        return to_wire(model)

    write.__name__ = write.__qualname__ = name
    write.__doc__ = f"Write a :class:`~runcycles.models.{cls.__name__}` as its wire dict (strict)."
    return write


def _reader(cls: type[M], name: str) -> Callable[[object], M]:
    def reader(data: object) -> M:
        return from_wire(cls, data)

    reader.__name__ = reader.__qualname__ = name
    reader.__doc__ = (
        f"Read a wire dict as a :class:`~runcycles.models.{cls.__name__}` (lenient; raises only "
        "ResponseFormatError)."
    )
    return reader


# Writers: requests and the values nested in them.
amount_to_wire = _writer(Amount, "amount_to_wire")
signed_amount_to_wire = _writer(SignedAmount, "signed_amount_to_wire")
subject_to_wire = _writer(Subject, "subject_to_wire")
action_to_wire = _writer(Action, "action_to_wire")
policy_keys_to_wire = _writer(PolicyKeys, "policy_keys_to_wire")
metrics_to_wire = _writer(CyclesMetrics, "metrics_to_wire")
standard_metrics_to_wire = metrics_to_wire
reservation_create_request_to_wire = _writer(ReservationCreateRequest, "reservation_create_request_to_wire")
commit_request_to_wire = _writer(CommitRequest, "commit_request_to_wire")
release_request_to_wire = _writer(ReleaseRequest, "release_request_to_wire")
reservation_extend_request_to_wire = _writer(ReservationExtendRequest, "reservation_extend_request_to_wire")
decision_request_to_wire = _writer(DecisionRequest, "decision_request_to_wire")
event_create_request_to_wire = _writer(EventCreateRequest, "event_create_request_to_wire")

# Readers: responses and the values nested in them.
amount_from_wire = _reader(Amount, "amount_from_wire")
signed_amount_from_wire = _reader(SignedAmount, "signed_amount_from_wire")
subject_from_wire = _reader(Subject, "subject_from_wire")
action_from_wire = _reader(Action, "action_from_wire")
policy_keys_from_wire = _reader(PolicyKeys, "policy_keys_from_wire")
caps_from_wire = _reader(Caps, "caps_from_wire")
metrics_from_wire = _reader(CyclesMetrics, "metrics_from_wire")
standard_metrics_from_wire = metrics_from_wire
balance_from_wire = _reader(Balance, "balance_from_wire")
cycles_evidence_ref_from_wire = _reader(CyclesEvidenceRef, "cycles_evidence_ref_from_wire")
reservation_evidence_from_wire = _reader(ReservationEvidence, "reservation_evidence_from_wire")
action_quota_violation_from_wire = _reader(ActionQuotaViolation, "action_quota_violation_from_wire")
deny_detail_from_wire = _reader(DenyDetail, "deny_detail_from_wire")
reservation_create_response_from_wire = _reader(
    ReservationCreateResponse, "reservation_create_response_from_wire"
)
commit_response_from_wire = _reader(CommitResponse, "commit_response_from_wire")
release_response_from_wire = _reader(ReleaseResponse, "release_response_from_wire")
reservation_extend_response_from_wire = _reader(
    ReservationExtendResponse, "reservation_extend_response_from_wire"
)
decision_response_from_wire = _reader(DecisionResponse, "decision_response_from_wire")
event_create_response_from_wire = _reader(EventCreateResponse, "event_create_response_from_wire")
reservation_detail_from_wire = _reader(ReservationDetail, "reservation_detail_from_wire")
reservation_summary_from_wire = _reader(ReservationSummary, "reservation_summary_from_wire")
reservation_list_response_from_wire = _reader(ReservationListResponse, "reservation_list_response_from_wire")
balance_response_from_wire = _reader(BalanceResponse, "balance_response_from_wire")
error_response_from_wire = _reader(ErrorResponse, "error_response_from_wire")

# Readers of request schemas (tests, the embedded server).
reservation_create_request_from_wire = _reader(
    ReservationCreateRequest, "reservation_create_request_from_wire"
)
commit_request_from_wire = _reader(CommitRequest, "commit_request_from_wire")
release_request_from_wire = _reader(ReleaseRequest, "release_request_from_wire")
reservation_extend_request_from_wire = _reader(
    ReservationExtendRequest, "reservation_extend_request_from_wire"
)
decision_request_from_wire = _reader(DecisionRequest, "decision_request_from_wire")
event_create_request_from_wire = _reader(EventCreateRequest, "event_create_request_from_wire")
