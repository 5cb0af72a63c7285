"""Reservations: create, commit, release and extend (requests and responses), the reservation reads, and the
result of a dry-run guarded call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from .. import _wire as w
from .. import _worded as wd
from .. import validation as v
from ._balances import BALANCES, Balance, to_balances
from ._denials import DenyDetail
from ._enums import (
    CommitOveragePolicy,
    CommitStatus,
    Decision,
    ExtendStatus,
    ObserveMode,
    ReleaseStatus,
    ReservationStatus,
)
from ._evidence import CyclesEvidenceRef, ReservationEvidence
from ._fields import (
    IDEMPOTENCY_KEY,
    Paged,
    extension,
    extra,
    json_object,
    optional_enum,
    optional_model,
    required_model,
    to_observe_mode,
    to_policy,
    to_strs,
)
from ._values import Action, Amount, BudgetedRequest, Caps, CyclesMetrics, Subject

__all__ = [
    "CommitRequest",
    "CommitResponse",
    "DryRunResult",
    "ReleaseRequest",
    "ReleaseResponse",
    "ReservationCreateRequest",
    "ReservationCreateResponse",
    "ReservationDetail",
    "ReservationExtendRequest",
    "ReservationExtendResponse",
    "ReservationListResponse",
    "ReservationSummary",
]


def _to_summaries(value: Sequence[ReservationSummary]) -> tuple[ReservationSummary, ...]:
    return tuple(value) if isinstance(value, (list, tuple)) else value  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ReservationCreateRequest(BudgetedRequest):
    """``POST /v1/reservations`` body. ``ttl_ms`` is ``1000..86400000``, ``grace_period_ms`` ``0..60000``."""

    estimate: Amount = attrs.field(**required_model("estimate", Amount))
    ttl_ms: int | None = attrs.field(
        default=None, validator=wd.int_between("ttl_ms", v.TTL_MS_MIN, v.TTL_MS_MAX, optional=True), metadata=w.INT
    )
    grace_period_ms: int | None = attrs.field(
        default=None,
        validator=wd.int_between("grace_period_ms", v.GRACE_PERIOD_MS_MIN, v.GRACE_PERIOD_MS_MAX, optional=True),
        metadata=w.INT,
    )
    overage_policy: CommitOveragePolicy | str | None = attrs.field(
        default=None, converter=to_policy, **optional_enum("overage_policy", CommitOveragePolicy)
    )
    dry_run: bool | None = attrs.field(
        default=None,
        validator=wd.of_type("dry_run", bool, "must be a bool, got {type}", optional=True),
        metadata=w.BOOL,
    )
    metadata: Mapping[str, Any] | None = attrs.field(default=None, **json_object())
    observe_mode: ObserveMode | str | None = attrs.field(
        default=None, converter=to_observe_mode, **optional_enum("observe_mode", ObserveMode)
    )
    extra: Mapping[str, Any] = extra()


@attrs.frozen(kw_only=True)
class CommitRequest:
    """``POST /v1/reservations/{id}/commit`` body."""

    idempotency_key: str = attrs.field(**IDEMPOTENCY_KEY)
    actual: Amount = attrs.field(**required_model("actual", Amount))
    metrics: CyclesMetrics | None = attrs.field(default=None, **optional_model("metrics", CyclesMetrics))
    metadata: Mapping[str, Any] | None = attrs.field(default=None, **json_object())
    extra: Mapping[str, Any] = extra()


@attrs.frozen(kw_only=True)
class ReleaseRequest:
    """``POST /v1/reservations/{id}/release`` body; ``reason`` is at most 256 characters."""

    idempotency_key: str = attrs.field(**IDEMPOTENCY_KEY)
    reason: str | None = attrs.field(
        default=None, validator=wd.string("reason", max_len=v.RELEASE_REASON_MAX, optional=True), metadata=w.STR
    )
    extra: Mapping[str, Any] = extra()


@attrs.frozen(kw_only=True)
class ReservationExtendRequest:
    """``POST /v1/reservations/{id}/extend`` body; ``extend_by_ms`` is ``1..86400000``."""

    idempotency_key: str = attrs.field(**IDEMPOTENCY_KEY)
    extend_by_ms: int = attrs.field(
        validator=wd.int_between("extend_by_ms", v.EXTEND_BY_MS_MIN, v.EXTEND_BY_MS_MAX, required=True),
        metadata=w.INT,
    )
    metadata: Mapping[str, Any] | None = attrs.field(default=None, **json_object())
    extra: Mapping[str, Any] = extra()


# ---------------------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ReservationCreateResponse:
    """``POST /v1/reservations`` 200 body."""

    decision: Decision | str = attrs.field(metadata=w.enum_of(Decision))
    affected_scopes: tuple[str, ...] = attrs.field(converter=to_strs, metadata=w.SCOPES)
    reservation_id: str | None = attrs.field(default=None, metadata=w.STR)
    reserved: Amount | None = attrs.field(default=None, metadata=w.model(Amount))
    expires_at_ms: int | None = attrs.field(default=None, metadata=w.INT)
    remaining_ttl_ms: int | None = attrs.field(default=None, metadata=w.INT)
    scope_path: str | None = attrs.field(default=None, metadata=w.STR)
    caps: Caps | None = attrs.field(default=None, metadata=w.model(Caps))
    balances: tuple[Balance, ...] | None = attrs.field(default=None, converter=to_balances, metadata=BALANCES)
    reason_code: str | None = attrs.field(default=None, metadata=w.STR)
    retry_after_ms: int | None = attrs.field(default=None, metadata=w.INT)
    cycles_evidence: CyclesEvidenceRef | None = attrs.field(default=None, **extension(CyclesEvidenceRef))
    deny_detail: DenyDetail | None = attrs.field(default=None, **extension(DenyDetail))
    extra: Mapping[str, Any] = extra()


@attrs.frozen(kw_only=True)
class CommitResponse:
    """``POST /v1/reservations/{id}/commit`` 200 body."""

    status: CommitStatus | str = attrs.field(metadata=w.enum_of(CommitStatus))
    charged: Amount = attrs.field(metadata=w.model(Amount))
    released: Amount | None = attrs.field(default=None, metadata=w.model(Amount))
    balances: tuple[Balance, ...] | None = attrs.field(default=None, converter=to_balances, metadata=BALANCES)
    cycles_evidence: CyclesEvidenceRef | None = attrs.field(default=None, **extension(CyclesEvidenceRef))
    extra: Mapping[str, Any] = extra()


@attrs.frozen(kw_only=True)
class ReleaseResponse:
    """``POST /v1/reservations/{id}/release`` 200 body."""

    status: ReleaseStatus | str = attrs.field(metadata=w.enum_of(ReleaseStatus))
    released: Amount = attrs.field(metadata=w.model(Amount))
    balances: tuple[Balance, ...] | None = attrs.field(default=None, converter=to_balances, metadata=BALANCES)
    cycles_evidence: CyclesEvidenceRef | None = attrs.field(default=None, **extension(CyclesEvidenceRef))
    extra: Mapping[str, Any] = extra()


@attrs.frozen(kw_only=True)
class ReservationExtendResponse:
    """``POST /v1/reservations/{id}/extend`` 200 body. ``remaining_ttl_ms``, when present, is the normative
    input of heartbeat scheduling."""

    status: ExtendStatus | str = attrs.field(metadata=w.enum_of(ExtendStatus))
    expires_at_ms: int = attrs.field(metadata=w.INT)
    remaining_ttl_ms: int | None = attrs.field(default=None, metadata=w.INT)
    balances: tuple[Balance, ...] | None = attrs.field(default=None, converter=to_balances, metadata=BALANCES)
    extra: Mapping[str, Any] = extra()


# ---------------------------------------------------------------------------------------------------------
# Reads
# ---------------------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class _ReservationView:
    """The fields a reservation read shares (the spec's ReservationDetail and ReservationSummary agree)."""

    reservation_id: str = attrs.field(metadata=w.STR)
    status: ReservationStatus | str = attrs.field(metadata=w.enum_of(ReservationStatus))
    subject: Subject = attrs.field(metadata=w.model(Subject))
    action: Action = attrs.field(metadata=w.model(Action))
    reserved: Amount = attrs.field(metadata=w.model(Amount))
    created_at_ms: int = attrs.field(metadata=w.INT)
    expires_at_ms: int = attrs.field(metadata=w.INT)
    scope_path: str = attrs.field(metadata=w.STR)
    affected_scopes: tuple[str, ...] = attrs.field(converter=to_strs, metadata=w.SCOPES)
    idempotency_key: str | None = attrs.field(default=None, metadata=w.STR)
    committed: Amount | None = attrs.field(default=None, metadata=w.model(Amount))
    finalized_at_ms: int | None = attrs.field(default=None, metadata=w.INT)
    metadata: Mapping[str, Any] | None = attrs.field(default=None, metadata=w.OBJECT)
    committed_metadata: Mapping[str, Any] | None = attrs.field(default=None, metadata=w.OBJECT)
    evidence: ReservationEvidence | None = attrs.field(default=None, **extension(ReservationEvidence))
    extra: Mapping[str, Any] = extra()


@attrs.frozen(kw_only=True)
class ReservationDetail(_ReservationView):
    """``GET /v1/reservations/{id}`` 200 body."""


@attrs.frozen(kw_only=True)
class ReservationSummary(_ReservationView):
    """One row of ``GET /v1/reservations`` (``metadata``, ``committed_metadata`` and ``evidence`` only when
    requested with ``include=``)."""


@attrs.frozen(kw_only=True)
class ReservationListResponse(Paged):
    """``GET /v1/reservations`` 200 body."""

    reservations: tuple[ReservationSummary, ...] = attrs.field(
        converter=_to_summaries, metadata=w.model_list(ReservationSummary)
    )


# ---------------------------------------------------------------------------------------------------------
# Dry run
# ---------------------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class DryRunResult:
    """What a dry-run guarded call returns instead of calling the function (API.md §3)."""

    decision: Decision | str = attrs.field(metadata=w.enum_of(Decision))
    caps: Caps | None = attrs.field(default=None, metadata=w.model(Caps))
    affected_scopes: tuple[str, ...] = attrs.field(default=(), converter=to_strs, metadata=w.SCOPES)
    scope_path: str | None = attrs.field(default=None, metadata=w.STR)
    reserved: Amount | None = attrs.field(default=None, metadata=w.model(Amount))
    balances: tuple[Balance, ...] | None = attrs.field(default=None, converter=to_balances, metadata=BALANCES)
    reason_code: str | None = attrs.field(default=None, metadata=w.STR)
    retry_after_ms: int | None = attrs.field(default=None, metadata=w.INT)
    extra: Mapping[str, Any] = extra()

    @classmethod
    def from_response(cls, response: ReservationCreateResponse) -> DryRunResult:
        """The dry-run view of a (``dry_run=true``) reservation create response."""
        return cls(
            decision=response.decision,
            caps=response.caps,
            affected_scopes=response.affected_scopes,
            scope_path=response.scope_path,
            reserved=response.reserved,
            balances=response.balances,
            reason_code=response.reason_code,
            retry_after_ms=response.retry_after_ms,
        )
