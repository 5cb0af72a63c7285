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
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from . import _wire as w
from . import validation as v
from ._error_codes import ErrorCode
from .errors import ResponseFormatError

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


# ---------------------------------------------------------------------------------------------------------
# Enums
# ---------------------------------------------------------------------------------------------------------


class Unit(str, enum.Enum):
    """Budget units (``UnitEnum``)."""

    USD_MICROCENTS = "USD_MICROCENTS"
    TOKENS = "TOKENS"
    CREDITS = "CREDITS"
    RISK_POINTS = "RISK_POINTS"


class Decision(str, enum.Enum):
    """A budget decision (``DecisionEnum``)."""

    ALLOW = "ALLOW"
    ALLOW_WITH_CAPS = "ALLOW_WITH_CAPS"
    DENY = "DENY"


class CommitOveragePolicy(str, enum.Enum):
    """How the server handles a commit (or event) whose actual exceeds what is reserved or remaining."""

    REJECT = "REJECT"
    ALLOW_IF_AVAILABLE = "ALLOW_IF_AVAILABLE"
    ALLOW_WITH_OVERDRAFT = "ALLOW_WITH_OVERDRAFT"


class ReservationStatus(str, enum.Enum):
    """Reservation lifecycle state."""

    ACTIVE = "ACTIVE"
    COMMITTED = "COMMITTED"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"


class CommitStatus(str, enum.Enum):
    """``CommitResponse.status``."""

    COMMITTED = "COMMITTED"


class ReleaseStatus(str, enum.Enum):
    """``ReleaseResponse.status``."""

    RELEASED = "RELEASED"


class ExtendStatus(str, enum.Enum):
    """``ReservationExtendResponse.status``."""

    ACTIVE = "ACTIVE"


class EventStatus(str, enum.Enum):
    """``EventCreateResponse.status``."""

    APPLIED = "APPLIED"


class ObserveMode(str, enum.Enum):
    """v0.1.26 ``ObserveModeEnum``: per-request override of the tenant's observe mode."""

    DISABLED = "DISABLED"
    OBSERVE = "OBSERVE"
    ENFORCE = "ENFORCE"


# ---------------------------------------------------------------------------------------------------------
# Converters and validator adapters
# ---------------------------------------------------------------------------------------------------------


def _member(cls: type[enum.Enum], value: Any) -> Any:
    try:
        return cls(value)
    except (ValueError, TypeError):
        return value  # left for the validator to reject


def _to_unit(value: Unit | str) -> Unit | str:
    return _member(Unit, value)  # type: ignore[no-any-return]


def _to_policy(value: CommitOveragePolicy | str | None) -> CommitOveragePolicy | str | None:
    return None if value is None else _member(CommitOveragePolicy, value)


def _to_observe_mode(value: ObserveMode | str | None) -> ObserveMode | str | None:
    return None if value is None else _member(ObserveMode, value)


def _to_str_tuple(value: Sequence[str] | None) -> tuple[str, ...] | None:
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return value  # type: ignore[return-value]  # None, or a non-sequence left for the validator


def _to_scopes(value: Sequence[str]) -> tuple[str, ...]:
    return tuple(value) if isinstance(value, (list, tuple)) else value  # type: ignore[return-value]


def _to_scopes_opt(value: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if value is None else _to_scopes(value)


def _to_balances(value: Sequence[Balance] | None) -> tuple[Balance, ...] | None:
    return tuple(value) if isinstance(value, (list, tuple)) else value  # type: ignore[return-value]


def _to_balances_req(value: Sequence[Balance]) -> tuple[Balance, ...]:
    return tuple(value) if isinstance(value, (list, tuple)) else value  # type: ignore[return-value]


def _to_summaries(value: Sequence[ReservationSummary]) -> tuple[ReservationSummary, ...]:
    return tuple(value) if isinstance(value, (list, tuple)) else value  # type: ignore[return-value]


_Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def _check(rule: Callable[..., None], path: str, *, required: bool = False, **kwargs: Any) -> _Validator:
    """Adapt a ``validation.check_*(path, value, **kwargs)`` rule to an attrs validator."""

    def validator(_instance: Any, _attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            if required:
                raise ValueError(f"{path} is required")
            return
        rule(path, value, **kwargs)

    return validator


def _idempotency_key() -> _Validator:
    return _check(
        v.check_str, "idempotency_key", required=True, min_len=1, max_len=v.IDEMPOTENCY_KEY_MAX
    )


def _required_model(path: str, cls: type) -> _Validator:
    return _check(v.check_instance, path, required=True, cls=cls)


def _optional_model(path: str, cls: type) -> _Validator:
    return _check(v.check_instance, path, cls=cls)


def _metadata(path: str = "metadata") -> _Validator:
    return _check(v.check_object, path)


def _extra() -> Any:
    """The ``extra`` attribute every model has (unknown wire fields; never written)."""
    return attrs.field(factory=dict)


# ---------------------------------------------------------------------------------------------------------
# Nested values
# ---------------------------------------------------------------------------------------------------------


def _check_amount_value(_instance: Any, _attribute: attrs.Attribute[Any], value: Any) -> None:
    v.validate_amount("amount", value)


def _check_signed_amount_value(_instance: Any, _attribute: attrs.Attribute[Any], value: Any) -> None:
    v.check_int("amount", value, minimum=-v.MAX_INT64 - 1, maximum=v.MAX_INT64)


@attrs.frozen(kw_only=True)
class Amount:
    """A non-negative amount in one unit: ``amount`` is an ``int`` in ``0..2**63-1`` (never bool/float)."""

    unit: Unit | str = attrs.field(
        converter=_to_unit, validator=_check(v.check_enum, "unit", enum_cls=Unit), metadata=w.enum_of(Unit)
    )
    amount: int = attrs.field(validator=_check_amount_value, metadata=w.INT)
    extra: Mapping[str, Any] = _extra()


@attrs.frozen(kw_only=True)
class SignedAmount:
    """Like :class:`Amount` but may be negative (``Balance.remaining`` in overdraft)."""

    unit: Unit | str = attrs.field(
        converter=_to_unit, validator=_check(v.check_enum, "unit", enum_cls=Unit), metadata=w.enum_of(Unit)
    )
    amount: int = attrs.field(validator=_check_signed_amount_value, metadata=w.INT)
    extra: Mapping[str, Any] = _extra()


def _subject_str(name: str) -> Any:
    return attrs.field(
        default=None,
        validator=_check(v.check_str, f"subject.{name}", max_len=v.SUBJECT_FIELD_MAX),
        metadata=w.STR,
    )


def _check_dimensions(instance: Subject, _attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        v.check_str_map(
            "subject.dimensions",
            value,
            max_entries=v.DIMENSIONS_MAX_ENTRIES,
            max_len=v.DIMENSION_VALUE_MAX,
        )
    # Runs after every field is set (attrs validates after assignment), so the whole subject is visible.
    v.check_subject_has_standard_field(getattr(instance, name) for name in v.STANDARD_SUBJECT_FIELDS)


@attrs.frozen(kw_only=True)
class Subject:
    """The budget dimensions of a request: at least one standard field is required (each at most 128
    characters); ``dimensions`` is an optional map of at most 16 custom string values (at most 256 each)."""

    tenant: str | None = _subject_str("tenant")
    workspace: str | None = _subject_str("workspace")
    app: str | None = _subject_str("app")
    workflow: str | None = _subject_str("workflow")
    agent: str | None = _subject_str("agent")
    toolset: str | None = _subject_str("toolset")
    dimensions: Mapping[str, str] | None = attrs.field(
        default=None, validator=_check_dimensions, metadata=w.STR_MAP
    )
    extra: Mapping[str, Any] = _extra()

    def has_standard_field(self) -> bool:
        """Whether at least one of the six standard fields is set (non-empty)."""
        return any(getattr(self, name) for name in v.STANDARD_SUBJECT_FIELDS)


def _policy_key(name: str, max_len: int) -> Any:
    return attrs.field(
        default=None,
        validator=_check(v.check_str, f"action.policy_keys.{name}", max_len=max_len),
        metadata=w.STR,
    )


@attrs.frozen(kw_only=True)
class PolicyKeys:
    """v0.1.26 ``Action.policy_keys``: extra routing dimensions for policy matching (all optional)."""

    host: str | None = _policy_key("host", v.POLICY_KEY_HOST_MAX)
    recipient_domain: str | None = _policy_key("recipient_domain", v.POLICY_KEY_RECIPIENT_DOMAIN_MAX)
    resource_type: str | None = _policy_key("resource_type", v.POLICY_KEY_RESOURCE_TYPE_MAX)
    path_prefix: str | None = _policy_key("path_prefix", v.POLICY_KEY_PATH_PREFIX_MAX)
    custom: Mapping[str, str] | None = attrs.field(
        default=None,
        validator=_check(
            v.check_str_map,
            "action.policy_keys.custom",
            max_entries=v.POLICY_KEY_CUSTOM_MAX_ENTRIES,
            max_len=v.POLICY_KEY_CUSTOM_VALUE_MAX,
        ),
        metadata=w.STR_MAP,
    )
    extra: Mapping[str, Any] = _extra()


@attrs.frozen(kw_only=True)
class Action:
    """What is being paid for: ``kind`` (at most 64 characters, e.g. ``llm.completion``), ``name`` (at most
    256), optional ``tags`` (at most 10, each at most 64) and v0.1.26 ``policy_keys``."""

    kind: str = attrs.field(
        validator=_check(v.check_str, "action.kind", required=True, max_len=v.ACTION_KIND_MAX), metadata=w.STR
    )
    name: str = attrs.field(
        validator=_check(v.check_str, "action.name", required=True, max_len=v.ACTION_NAME_MAX), metadata=w.STR
    )
    tags: tuple[str, ...] | None = attrs.field(
        default=None,
        converter=_to_str_tuple,
        validator=_check(v.check_str_list, "action.tags", max_items=v.TAGS_MAX_ITEMS, max_len=v.TAG_MAX),
        metadata=w.STR_LIST,
    )
    policy_keys: PolicyKeys | None = attrs.field(
        default=None,
        validator=_optional_model("action.policy_keys", PolicyKeys),
        metadata=w.model(PolicyKeys),
    )
    extra: Mapping[str, Any] = _extra()


@attrs.frozen(kw_only=True)
class Caps:
    """Soft-landing constraints of an ``ALLOW_WITH_CAPS`` decision (see :func:`runcycles.is_tool_allowed`)."""

    max_tokens: int | None = attrs.field(default=None, metadata=w.INT)
    max_steps_remaining: int | None = attrs.field(default=None, metadata=w.INT)
    tool_allowlist: tuple[str, ...] | None = attrs.field(
        default=None, converter=_to_str_tuple, metadata=w.STR_LIST
    )
    tool_denylist: tuple[str, ...] | None = attrs.field(
        default=None, converter=_to_str_tuple, metadata=w.STR_LIST
    )
    cooldown_ms: int | None = attrs.field(default=None, metadata=w.INT)
    extra: Mapping[str, Any] = _extra()


def _metric_int(name: str) -> Any:
    return attrs.field(default=None, validator=_check(v.check_int, f"metrics.{name}"), metadata=w.INT)


@attrs.frozen(kw_only=True)
class CyclesMetrics:
    """Standard metrics of a commit or event (``StandardMetrics``); all optional. Integers are ``>= 0``,
    ``model_version`` at most 128 characters, ``custom`` a free-form object."""

    tokens_input: int | None = _metric_int("tokens_input")
    tokens_output: int | None = _metric_int("tokens_output")
    latency_ms: int | None = _metric_int("latency_ms")
    model_version: str | None = attrs.field(
        default=None,
        validator=_check(v.check_str, "metrics.model_version", max_len=v.MODEL_VERSION_MAX),
        metadata=w.STR,
    )
    custom: Mapping[str, Any] | None = attrs.field(
        default=None, validator=_metadata("metrics.custom"), metadata=w.OBJECT
    )
    extra: Mapping[str, Any] = _extra()

    def is_empty(self) -> bool:
        """Whether no standard value and no custom entry is set."""
        return v.is_metrics_empty(self)


StandardMetrics = CyclesMetrics
"""The spec's name for :class:`CyclesMetrics`."""


@attrs.frozen(kw_only=True)
class Balance:
    """Ledger state of one (scope, unit) balance."""

    scope: str = attrs.field(metadata=w.STR)
    scope_path: str = attrs.field(metadata=w.STR)
    remaining: SignedAmount = attrs.field(metadata=w.model(SignedAmount))
    reserved: Amount | None = attrs.field(default=None, metadata=w.model(Amount))
    spent: Amount | None = attrs.field(default=None, metadata=w.model(Amount))
    debt: Amount | None = attrs.field(default=None, metadata=w.model(Amount))
    allocated: Amount | None = attrs.field(default=None, metadata=w.model(Amount))
    overdraft_limit: Amount | None = attrs.field(default=None, metadata=w.model(Amount))
    is_over_limit: bool | None = attrs.field(default=None, metadata=w.BOOL)
    extra: Mapping[str, Any] = _extra()


@attrs.frozen(kw_only=True)
class CyclesEvidenceRef:
    """Reference to the signed CyclesEvidence envelope emitted for an operation."""

    evidence_id: str = attrs.field(metadata=w.STR)
    cycles_evidence_url: str = attrs.field(metadata=w.STR)
    extra: Mapping[str, Any] = _extra()


@attrs.frozen(kw_only=True)
class ReservationEvidence:
    """Evidence references of a reservation's operations, keyed by artifact type."""

    reserve: CyclesEvidenceRef | None = attrs.field(default=None, metadata=w.model(CyclesEvidenceRef, lenient=True))
    commit: CyclesEvidenceRef | None = attrs.field(default=None, metadata=w.model(CyclesEvidenceRef, lenient=True))
    release: CyclesEvidenceRef | None = attrs.field(default=None, metadata=w.model(CyclesEvidenceRef, lenient=True))
    extra: Mapping[str, Any] = _extra()


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
    extra: Mapping[str, Any] = _extra()


@attrs.frozen(kw_only=True)
class DenyDetail:
    """v0.1.26 enriched deny context (on DENY decisions, and as ``details.deny_detail`` of 409 errors)."""

    reason_code: str = attrs.field(metadata=w.STR)
    quota_violation: ActionQuotaViolation | None = attrs.field(
        default=None, metadata=w.model(ActionQuotaViolation, lenient=True)
    )
    blocked_by_scope: str | None = attrs.field(default=None, metadata=w.STR)
    blocked_by_policy: str | None = attrs.field(default=None, metadata=w.STR)
    suggested_fix: str | None = attrs.field(default=None, metadata=w.STR)
    budget_remaining: int | None = attrs.field(default=None, metadata=w.INT)
    extra: Mapping[str, Any] = _extra()


# ---------------------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ReservationCreateRequest:
    """``POST /v1/reservations`` body. ``ttl_ms`` is ``1000..86400000``, ``grace_period_ms`` ``0..60000``."""

    idempotency_key: str = attrs.field(validator=_idempotency_key(), metadata=w.STR)
    subject: Subject = attrs.field(validator=_required_model("subject", Subject), metadata=w.model(Subject))
    action: Action = attrs.field(validator=_required_model("action", Action), metadata=w.model(Action))
    estimate: Amount = attrs.field(validator=_required_model("estimate", Amount), metadata=w.model(Amount))
    ttl_ms: int | None = attrs.field(
        default=None,
        validator=_check(v.check_int_between, "ttl_ms", minimum=v.TTL_MS_MIN, maximum=v.TTL_MS_MAX),
        metadata=w.INT,
    )
    grace_period_ms: int | None = attrs.field(
        default=None,
        validator=_check(
            v.check_int_between,
            "grace_period_ms",
            minimum=v.GRACE_PERIOD_MS_MIN,
            maximum=v.GRACE_PERIOD_MS_MAX,
        ),
        metadata=w.INT,
    )
    overage_policy: CommitOveragePolicy | str | None = attrs.field(
        default=None,
        converter=_to_policy,
        validator=_check(v.check_enum, "overage_policy", enum_cls=CommitOveragePolicy),
        metadata=w.enum_of(CommitOveragePolicy),
    )
    dry_run: bool | None = attrs.field(
        default=None, validator=_check(v.check_bool, "dry_run"), metadata=w.BOOL
    )
    metadata: Mapping[str, Any] | None = attrs.field(default=None, validator=_metadata(), metadata=w.OBJECT)
    observe_mode: ObserveMode | str | None = attrs.field(
        default=None,
        converter=_to_observe_mode,
        validator=_check(v.check_enum, "observe_mode", enum_cls=ObserveMode),
        metadata=w.enum_of(ObserveMode),
    )
    extra: Mapping[str, Any] = _extra()


@attrs.frozen(kw_only=True)
class CommitRequest:
    """``POST /v1/reservations/{id}/commit`` body."""

    idempotency_key: str = attrs.field(validator=_idempotency_key(), metadata=w.STR)
    actual: Amount = attrs.field(validator=_required_model("actual", Amount), metadata=w.model(Amount))
    metrics: CyclesMetrics | None = attrs.field(
        default=None, validator=_optional_model("metrics", CyclesMetrics), metadata=w.model(CyclesMetrics)
    )
    metadata: Mapping[str, Any] | None = attrs.field(default=None, validator=_metadata(), metadata=w.OBJECT)
    extra: Mapping[str, Any] = _extra()


@attrs.frozen(kw_only=True)
class ReleaseRequest:
    """``POST /v1/reservations/{id}/release`` body; ``reason`` is at most 256 characters."""

    idempotency_key: str = attrs.field(validator=_idempotency_key(), metadata=w.STR)
    reason: str | None = attrs.field(
        default=None, validator=_check(v.check_str, "reason", max_len=v.RELEASE_REASON_MAX), metadata=w.STR
    )
    extra: Mapping[str, Any] = _extra()


@attrs.frozen(kw_only=True)
class ReservationExtendRequest:
    """``POST /v1/reservations/{id}/extend`` body; ``extend_by_ms`` is ``1..86400000``."""

    idempotency_key: str = attrs.field(validator=_idempotency_key(), metadata=w.STR)
    extend_by_ms: int = attrs.field(
        validator=_check(
            v.check_int_between,
            "extend_by_ms",
            required=True,
            minimum=v.EXTEND_BY_MS_MIN,
            maximum=v.EXTEND_BY_MS_MAX,
        ),
        metadata=w.INT,
    )
    metadata: Mapping[str, Any] | None = attrs.field(default=None, validator=_metadata(), metadata=w.OBJECT)
    extra: Mapping[str, Any] = _extra()


@attrs.frozen(kw_only=True)
class DecisionRequest:
    """``POST /v1/decide`` body."""

    idempotency_key: str = attrs.field(validator=_idempotency_key(), metadata=w.STR)
    subject: Subject = attrs.field(validator=_required_model("subject", Subject), metadata=w.model(Subject))
    action: Action = attrs.field(validator=_required_model("action", Action), metadata=w.model(Action))
    estimate: Amount = attrs.field(validator=_required_model("estimate", Amount), metadata=w.model(Amount))
    metadata: Mapping[str, Any] | None = attrs.field(default=None, validator=_metadata(), metadata=w.OBJECT)
    extra: Mapping[str, Any] = _extra()


@attrs.frozen(kw_only=True)
class EventCreateRequest:
    """``POST /v1/events`` body (post-only accounting); ``client_time_ms`` is ``>= 0``."""

    idempotency_key: str = attrs.field(validator=_idempotency_key(), metadata=w.STR)
    subject: Subject = attrs.field(validator=_required_model("subject", Subject), metadata=w.model(Subject))
    action: Action = attrs.field(validator=_required_model("action", Action), metadata=w.model(Action))
    actual: Amount = attrs.field(validator=_required_model("actual", Amount), metadata=w.model(Amount))
    overage_policy: CommitOveragePolicy | str | None = attrs.field(
        default=None,
        converter=_to_policy,
        validator=_check(v.check_enum, "overage_policy", enum_cls=CommitOveragePolicy),
        metadata=w.enum_of(CommitOveragePolicy),
    )
    metrics: CyclesMetrics | None = attrs.field(
        default=None, validator=_optional_model("metrics", CyclesMetrics), metadata=w.model(CyclesMetrics)
    )
    client_time_ms: int | None = attrs.field(
        default=None, validator=_check(v.check_int, "client_time_ms"), metadata=w.INT
    )
    metadata: Mapping[str, Any] | None = attrs.field(default=None, validator=_metadata(), metadata=w.OBJECT)
    extra: Mapping[str, Any] = _extra()


# ---------------------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ReservationCreateResponse:
    """``POST /v1/reservations`` 200 body."""

    decision: Decision | str = attrs.field(metadata=w.enum_of(Decision))
    affected_scopes: tuple[str, ...] = attrs.field(converter=_to_scopes, metadata=w.SCOPES)
    reservation_id: str | None = attrs.field(default=None, metadata=w.STR)
    reserved: Amount | None = attrs.field(default=None, metadata=w.model(Amount))
    expires_at_ms: int | None = attrs.field(default=None, metadata=w.INT)
    remaining_ttl_ms: int | None = attrs.field(default=None, metadata=w.INT)
    scope_path: str | None = attrs.field(default=None, metadata=w.STR)
    caps: Caps | None = attrs.field(default=None, metadata=w.model(Caps))
    balances: tuple[Balance, ...] | None = attrs.field(
        default=None, converter=_to_balances, metadata=w.model_list(Balance, lenient=True)
    )
    reason_code: str | None = attrs.field(default=None, metadata=w.STR)
    retry_after_ms: int | None = attrs.field(default=None, metadata=w.INT)
    cycles_evidence: CyclesEvidenceRef | None = attrs.field(
        default=None, metadata=w.model(CyclesEvidenceRef, lenient=True)
    )
    deny_detail: DenyDetail | None = attrs.field(default=None, metadata=w.model(DenyDetail, lenient=True))
    extra: Mapping[str, Any] = _extra()


@attrs.frozen(kw_only=True)
class CommitResponse:
    """``POST /v1/reservations/{id}/commit`` 200 body."""

    status: CommitStatus | str = attrs.field(metadata=w.enum_of(CommitStatus))
    charged: Amount = attrs.field(metadata=w.model(Amount))
    released: Amount | None = attrs.field(default=None, metadata=w.model(Amount))
    balances: tuple[Balance, ...] | None = attrs.field(
        default=None, converter=_to_balances, metadata=w.model_list(Balance, lenient=True)
    )
    cycles_evidence: CyclesEvidenceRef | None = attrs.field(
        default=None, metadata=w.model(CyclesEvidenceRef, lenient=True)
    )
    extra: Mapping[str, Any] = _extra()


@attrs.frozen(kw_only=True)
class ReleaseResponse:
    """``POST /v1/reservations/{id}/release`` 200 body."""

    status: ReleaseStatus | str = attrs.field(metadata=w.enum_of(ReleaseStatus))
    released: Amount = attrs.field(metadata=w.model(Amount))
    balances: tuple[Balance, ...] | None = attrs.field(
        default=None, converter=_to_balances, metadata=w.model_list(Balance, lenient=True)
    )
    cycles_evidence: CyclesEvidenceRef | None = attrs.field(
        default=None, metadata=w.model(CyclesEvidenceRef, lenient=True)
    )
    extra: Mapping[str, Any] = _extra()


@attrs.frozen(kw_only=True)
class ReservationExtendResponse:
    """``POST /v1/reservations/{id}/extend`` 200 body. ``remaining_ttl_ms``, when present, is the normative
    input of heartbeat scheduling."""

    status: ExtendStatus | str = attrs.field(metadata=w.enum_of(ExtendStatus))
    expires_at_ms: int = attrs.field(metadata=w.INT)
    remaining_ttl_ms: int | None = attrs.field(default=None, metadata=w.INT)
    balances: tuple[Balance, ...] | None = attrs.field(
        default=None, converter=_to_balances, metadata=w.model_list(Balance, lenient=True)
    )
    extra: Mapping[str, Any] = _extra()


@attrs.frozen(kw_only=True)
class DecisionResponse:
    """``POST /v1/decide`` 200 body."""

    decision: Decision | str = attrs.field(metadata=w.enum_of(Decision))
    caps: Caps | None = attrs.field(default=None, metadata=w.model(Caps))
    reason_code: str | None = attrs.field(default=None, metadata=w.STR)
    retry_after_ms: int | None = attrs.field(default=None, metadata=w.INT)
    affected_scopes: tuple[str, ...] | None = attrs.field(
        default=None, converter=_to_scopes_opt, metadata=w.SCOPES
    )
    cycles_evidence: CyclesEvidenceRef | None = attrs.field(
        default=None, metadata=w.model(CyclesEvidenceRef, lenient=True)
    )
    deny_detail: DenyDetail | None = attrs.field(default=None, metadata=w.model(DenyDetail, lenient=True))
    extra: Mapping[str, Any] = _extra()


@attrs.frozen(kw_only=True)
class EventCreateResponse:
    """``POST /v1/events`` 201 body."""

    status: EventStatus | str = attrs.field(metadata=w.enum_of(EventStatus))
    event_id: str = attrs.field(metadata=w.STR)
    charged: Amount | None = attrs.field(default=None, metadata=w.model(Amount))
    balances: tuple[Balance, ...] | None = attrs.field(
        default=None, converter=_to_balances, metadata=w.model_list(Balance, lenient=True)
    )
    extra: Mapping[str, Any] = _extra()


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
    affected_scopes: tuple[str, ...] = attrs.field(converter=_to_scopes, metadata=w.SCOPES)
    idempotency_key: str | None = attrs.field(default=None, metadata=w.STR)
    committed: Amount | None = attrs.field(default=None, metadata=w.model(Amount))
    finalized_at_ms: int | None = attrs.field(default=None, metadata=w.INT)
    metadata: Mapping[str, Any] | None = attrs.field(default=None, metadata=w.OBJECT)
    committed_metadata: Mapping[str, Any] | None = attrs.field(default=None, metadata=w.OBJECT)
    evidence: ReservationEvidence | None = attrs.field(
        default=None, metadata=w.model(ReservationEvidence, lenient=True)
    )
    extra: Mapping[str, Any] = _extra()


@attrs.frozen(kw_only=True)
class ReservationDetail(_ReservationView):
    """``GET /v1/reservations/{id}`` 200 body."""


@attrs.frozen(kw_only=True)
class ReservationSummary(_ReservationView):
    """One row of ``GET /v1/reservations`` (``metadata``, ``committed_metadata`` and ``evidence`` only when
    requested with ``include=``)."""


@attrs.frozen(kw_only=True)
class ReservationListResponse:
    """``GET /v1/reservations`` 200 body."""

    reservations: tuple[ReservationSummary, ...] = attrs.field(
        converter=_to_summaries, metadata=w.model_list(ReservationSummary)
    )
    next_cursor: str | None = attrs.field(default=None, metadata=w.STR)
    has_more: bool | None = attrs.field(default=None, metadata=w.BOOL)
    extra: Mapping[str, Any] = _extra()


@attrs.frozen(kw_only=True)
class BalanceResponse:
    """``GET /v1/balances`` 200 body."""

    balances: tuple[Balance, ...] = attrs.field(converter=_to_balances_req, metadata=w.model_list(Balance))
    next_cursor: str | None = attrs.field(default=None, metadata=w.STR)
    has_more: bool | None = attrs.field(default=None, metadata=w.BOOL)
    extra: Mapping[str, Any] = _extra()


@attrs.frozen(kw_only=True)
class ErrorResponse:
    """The body of every 4xx/5xx answer.

    ``error`` is an :class:`ErrorCode`; an unrecognised code reads as ``ErrorCode.UNKNOWN`` with the wire
    string in ``error_raw`` (``None`` otherwise). v0.1.26 servers may put a :class:`DenyDetail` in
    ``details.deny_detail`` (see :attr:`deny_detail`).
    """

    error: ErrorCode = attrs.field(
        metadata=w.enum_of(ErrorCode, fallback=ErrorCode.UNKNOWN, raw_attr="error_raw")
    )
    message: str = attrs.field(metadata=w.STR)
    request_id: str = attrs.field(metadata=w.STR)
    trace_id: str | None = attrs.field(default=None, metadata=w.STR)
    details: Mapping[str, Any] | None = attrs.field(default=None, metadata=w.OBJECT)
    cycles_evidence: CyclesEvidenceRef | None = attrs.field(
        default=None, metadata=w.model(CyclesEvidenceRef, lenient=True)
    )
    error_raw: str | None = None
    extra: Mapping[str, Any] = _extra()

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


@attrs.frozen(kw_only=True)
class DryRunResult:
    """What a dry-run guarded call returns instead of calling the function (API.md §3)."""

    decision: Decision | str = attrs.field(metadata=w.enum_of(Decision))
    caps: Caps | None = attrs.field(default=None, metadata=w.model(Caps))
    affected_scopes: tuple[str, ...] = attrs.field(default=(), converter=_to_scopes, metadata=w.SCOPES)
    scope_path: str | None = attrs.field(default=None, metadata=w.STR)
    reserved: Amount | None = attrs.field(default=None, metadata=w.model(Amount))
    balances: tuple[Balance, ...] | None = attrs.field(
        default=None, converter=_to_balances, metadata=w.model_list(Balance, lenient=True)
    )
    reason_code: str | None = attrs.field(default=None, metadata=w.STR)
    retry_after_ms: int | None = attrs.field(default=None, metadata=w.INT)
    extra: Mapping[str, Any] = _extra()

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
