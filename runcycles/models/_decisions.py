"""``POST /v1/decide`` (a budget decision without a reservation) and ``POST /v1/events`` (post-only
accounting): requests and responses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
from attrs import validators as av

from .. import _wire as w
from .. import _worded as wd
from .. import validation as v
from ._balances import Balance
from ._denials import DenyDetail
from ._enums import CommitOveragePolicy, Decision, EventStatus
from ._evidence import CyclesEvidenceRef
from ._fields import (
    balances,
    enum_field,
    extension,
    extra,
    idempotency_key,
    json_object,
    optional_model,
    required_model,
    to_tuple,
)
from ._values import Action, Amount, Caps, CyclesMetrics, Subject

__all__ = ["DecisionRequest", "DecisionResponse", "EventCreateRequest", "EventCreateResponse"]


@attrs.frozen(kw_only=True)
class DecisionRequest:
    """``POST /v1/decide`` body."""

    idempotency_key: str = idempotency_key()
    subject: Subject = required_model("subject", Subject)
    action: Action = required_model("action", Action)
    estimate: Amount = required_model("estimate", Amount)
    metadata: Mapping[str, Any] | None = json_object()
    extra: Mapping[str, Any] = extra()


@attrs.frozen(kw_only=True)
class DecisionResponse:
    """``POST /v1/decide`` 200 body."""

    decision: Decision | str = enum_field(Decision, required=True)
    caps: Caps | None = attrs.field(default=None, metadata=w.model(Caps))
    reason_code: str | None = attrs.field(default=None, metadata=w.STR)
    retry_after_ms: int | None = attrs.field(default=None, metadata=w.INT)
    affected_scopes: tuple[str, ...] | None = attrs.field(default=None, converter=to_tuple, metadata=w.SCOPES)
    cycles_evidence: CyclesEvidenceRef | None = extension(CyclesEvidenceRef)
    deny_detail: DenyDetail | None = extension(DenyDetail)
    extra: Mapping[str, Any] = extra()


@attrs.frozen(kw_only=True)
class EventCreateRequest:
    """``POST /v1/events`` body (post-only accounting); ``client_time_ms`` is ``>= 0``."""

    idempotency_key: str = idempotency_key()
    subject: Subject = required_model("subject", Subject)
    action: Action = required_model("action", Action)
    actual: Amount = required_model("actual", Amount)
    overage_policy: CommitOveragePolicy | str | None = enum_field(CommitOveragePolicy, "overage_policy")
    metrics: CyclesMetrics | None = optional_model("metrics", CyclesMetrics)
    client_time_ms: int | None = attrs.field(
        default=None, validator=av.optional(wd.int_range("client_time_ms", 0, v.MAX_INT64)), metadata=w.INT
    )
    metadata: Mapping[str, Any] | None = json_object()
    extra: Mapping[str, Any] = extra()


@attrs.frozen(kw_only=True)
class EventCreateResponse:
    """``POST /v1/events`` 201 body."""

    status: EventStatus | str = enum_field(EventStatus, required=True)
    event_id: str = attrs.field(metadata=w.STR)
    charged: Amount | None = attrs.field(default=None, metadata=w.model(Amount))
    balances: tuple[Balance, ...] | None = balances(Balance)
    extra: Mapping[str, Any] = extra()
