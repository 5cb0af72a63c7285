"""Enums and attrs value types for every Cycles protocol schema (v0.1.25 plus tolerated v0.1.26 pieces).

Conventions:

* All models are frozen, slotted, keyword-only attrs classes with snake_case fields named as on the wire.
  Optional fields default to ``None`` and are then omitted on the wire. Sequences are stored as tuples
  (lists are accepted and converted).
* Request models (and the nested ``Amount``, ``Subject``, ``Action``, ``PolicyKeys``, ``CyclesMetrics``)
  validate at construction with the spec's limits and raise ``ValueError`` naming the field; see
  :mod:`runcycles.validation`.
* Every model has ``extra``: the unknown wire fields a reader met, kept aside. It is never written.
* Enum-typed response fields are annotated ``Enum | str``: a value the client does not know stays the raw
  string, except :class:`ErrorCode`, where it becomes ``ErrorCode.UNKNOWN`` (the raw string is kept in
  ``ErrorResponse.error_raw``).

Mapping to and from the wire lives in :mod:`runcycles.mappers` (driven by the field metadata set here).

The definitions live in small private modules (enums, values, balances, evidence, denials, reservations,
decisions); this module is the public import path of every name.
"""

from __future__ import annotations

from ._balances import Balance, BalanceResponse
from ._decisions import DecisionRequest, DecisionResponse, EventCreateRequest, EventCreateResponse
from ._denials import ActionQuotaViolation, DenyDetail, ErrorResponse
from ._enums import (
    CommitOveragePolicy,
    CommitStatus,
    Decision,
    ErrorCode,
    EventStatus,
    ExtendStatus,
    ObserveMode,
    ReleaseStatus,
    ReservationStatus,
    Unit,
)
from ._evidence import CyclesEvidenceRef, ReservationEvidence
from ._reservations import (
    CommitRequest,
    CommitResponse,
    DryRunResult,
    ReleaseRequest,
    ReleaseResponse,
    ReservationCreateRequest,
    ReservationCreateResponse,
    ReservationDetail,
    ReservationExtendRequest,
    ReservationExtendResponse,
    ReservationListResponse,
    ReservationSummary,
)
from ._values import Action, Amount, Caps, CyclesMetrics, PolicyKeys, SignedAmount, StandardMetrics, Subject

__all__ = [
    "Action",
    "ActionQuotaViolation",
    "Amount",
    "Balance",
    "BalanceResponse",
    "Caps",
    "CommitOveragePolicy",
    "CommitRequest",
    "CommitResponse",
    "CommitStatus",
    "CyclesEvidenceRef",
    "CyclesMetrics",
    "Decision",
    "DecisionRequest",
    "DecisionResponse",
    "DenyDetail",
    "DryRunResult",
    "ErrorCode",
    "ErrorResponse",
    "EventCreateRequest",
    "EventCreateResponse",
    "EventStatus",
    "ExtendStatus",
    "ObserveMode",
    "PolicyKeys",
    "ReleaseRequest",
    "ReleaseResponse",
    "ReleaseStatus",
    "ReservationCreateRequest",
    "ReservationCreateResponse",
    "ReservationDetail",
    "ReservationEvidence",
    "ReservationExtendRequest",
    "ReservationExtendResponse",
    "ReservationListResponse",
    "ReservationStatus",
    "ReservationSummary",
    "SignedAmount",
    "StandardMetrics",
    "Subject",
    "Unit",
]
