"""``POST /v1/decide`` (a budget decision without a reservation) and ``POST /v1/events`` (post-only
accounting): requests and responses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .. import _wire as w
from .. import _worded as wd
from .. import validation as v
from ._balances import BALANCES, Balance, to_balances
from ._denials import DenyDetail
from ._enums import CommitOveragePolicy, Decision, EventStatus
from ._evidence import CyclesEvidenceRef
from ._fields import (
    extension,
    extra,
    json_object,
    optional_enum,
    optional_model,
    required_model,
    to_policy,
    to_str_tuple,
)
from ._values import Amount, BudgetedRequest, Caps, CyclesMetrics

__all__ = ["DecisionRequest", "DecisionResponse", "EventCreateRequest", "EventCreateResponse"]


@attrs.frozen(kw_only=True)
class DecisionRequest(BudgetedRequest):
    """``POST /v1/decide`` body."""

    estimate: Amount = attrs.field(**required_model("estimate", Amount))
    metadata: Mapping[str, Any] | None = attrs.field(default=None, **json_object())
    extra: Mapping[str, Any] = extra()


@attrs.frozen(kw_only=True)
class DecisionResponse:
    """``POST /v1/decide`` 200 body."""

    decision: Decision | str = attrs.field(metadata=w.enum_of(Decision))
    caps: Caps | None = attrs.field(default=None, metadata=w.model(Caps))
    reason_code: str | None = attrs.field(default=None, metadata=w.STR)
    retry_after_ms: int | None = attrs.field(default=None, metadata=w.INT)
    affected_scopes: tuple[str, ...] | None = attrs.field(default=None, converter=to_str_tuple, metadata=w.SCOPES)
    cycles_evidence: CyclesEvidenceRef | None = attrs.field(default=None, **extension(CyclesEvidenceRef))
    deny_detail: DenyDetail | None = attrs.field(default=None, **extension(DenyDetail))
    extra: Mapping[str, Any] = extra()


@attrs.frozen(kw_only=True)
class EventCreateRequest(BudgetedRequest):
    """``POST /v1/events`` body (post-only accounting); ``client_time_ms`` is ``>= 0``."""

    actual: Amount = attrs.field(**required_model("actual", Amount))
    overage_policy: CommitOveragePolicy | str | None = attrs.field(
        default=None, converter=to_policy, **optional_enum("overage_policy", CommitOveragePolicy)
    )
    metrics: CyclesMetrics | None = attrs.field(default=None, **optional_model("metrics", CyclesMetrics))
    client_time_ms: int | None = attrs.field(
        default=None, validator=wd.int_range("client_time_ms", 0, v.MAX_INT64, optional=True), metadata=w.INT
    )
    metadata: Mapping[str, Any] | None = attrs.field(default=None, **json_object())
    extra: Mapping[str, Any] = extra()


@attrs.frozen(kw_only=True)
class EventCreateResponse:
    """``POST /v1/events`` 201 body."""

    status: EventStatus | str = attrs.field(metadata=w.enum_of(EventStatus))
    event_id: str = attrs.field(metadata=w.STR)
    charged: Amount | None = attrs.field(default=None, metadata=w.model(Amount))
    balances: tuple[Balance, ...] | None = attrs.field(default=None, converter=to_balances, metadata=BALANCES)
    extra: Mapping[str, Any] = extra()
