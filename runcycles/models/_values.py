"""The values nested in requests and responses: amounts, subject, action (and its policy keys), caps, metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .. import _wire as w
from .. import _worded as wd
from .. import validation as v
from ._enums import Unit
from ._fields import IDEMPOTENCY_KEY, extra, required_model, rule, to_str_tuple, to_unit

__all__ = [
    "Action",
    "Amount",
    "BudgetedRequest",
    "Caps",
    "CyclesMetrics",
    "PolicyKeys",
    "SignedAmount",
    "StandardMetrics",
    "Subject",
]


_UNIT: dict[str, Any] = {"validator": wd.member_of("unit", Unit, required=True), "metadata": w.enum_of(Unit)}


@attrs.frozen(kw_only=True)
class Amount:
    """A non-negative amount in one unit: ``amount`` is an ``int`` in ``0..2**63-1`` (never bool/float)."""

    unit: Unit | str = attrs.field(converter=to_unit, **_UNIT)
    amount: int = attrs.field(validator=wd.int_range("amount", 0, v.MAX_INT64), metadata=w.INT)
    extra: Mapping[str, Any] = extra()


@attrs.frozen(kw_only=True)
class SignedAmount:
    """Like :class:`Amount` but may be negative (``Balance.remaining`` in overdraft)."""

    unit: Unit | str = attrs.field(converter=to_unit, **_UNIT)
    amount: int = attrs.field(validator=wd.int_range("amount", -v.MAX_INT64 - 1, v.MAX_INT64), metadata=w.INT)
    extra: Mapping[str, Any] = extra()


def _optional_str(path: str, max_len: int) -> Any:
    return attrs.field(default=None, validator=wd.string(path, max_len=max_len, optional=True), metadata=w.STR)


def _has_standard_field(instance: Subject, _attribute: attrs.Attribute[Any], _value: Any) -> None:
    # A rule across fields; it runs after every field is set (attrs validates after assignment).
    v.check_subject_has_standard_field(getattr(instance, name) for name in v.STANDARD_SUBJECT_FIELDS)


@attrs.frozen(kw_only=True)
class Subject:
    """The budget dimensions of a request: at least one standard field is required (each at most 128
    characters); ``dimensions`` is an optional map of at most 16 custom string values (at most 256 each)."""

    tenant: str | None = _optional_str("subject.tenant", v.SUBJECT_FIELD_MAX)
    workspace: str | None = _optional_str("subject.workspace", v.SUBJECT_FIELD_MAX)
    app: str | None = _optional_str("subject.app", v.SUBJECT_FIELD_MAX)
    workflow: str | None = _optional_str("subject.workflow", v.SUBJECT_FIELD_MAX)
    agent: str | None = _optional_str("subject.agent", v.SUBJECT_FIELD_MAX)
    toolset: str | None = _optional_str("subject.toolset", v.SUBJECT_FIELD_MAX)
    dimensions: Mapping[str, str] | None = attrs.field(
        default=None,
        validator=[
            rule(
                v.check_str_map,
                "subject.dimensions",
                max_entries=v.DIMENSIONS_MAX_ENTRIES,
                max_len=v.DIMENSION_VALUE_MAX,
            ),
            _has_standard_field,
        ],
        metadata=w.STR_MAP,
    )
    extra: Mapping[str, Any] = extra()

    def has_standard_field(self) -> bool:
        """Whether at least one of the six standard fields is set (non-empty)."""
        return any(getattr(self, name) for name in v.STANDARD_SUBJECT_FIELDS)


@attrs.frozen(kw_only=True)
class PolicyKeys:
    """v0.1.26 ``Action.policy_keys``: extra routing dimensions for policy matching (all optional)."""

    host: str | None = _optional_str("action.policy_keys.host", v.POLICY_KEY_HOST_MAX)
    recipient_domain: str | None = _optional_str(
        "action.policy_keys.recipient_domain", v.POLICY_KEY_RECIPIENT_DOMAIN_MAX
    )
    resource_type: str | None = _optional_str("action.policy_keys.resource_type", v.POLICY_KEY_RESOURCE_TYPE_MAX)
    path_prefix: str | None = _optional_str("action.policy_keys.path_prefix", v.POLICY_KEY_PATH_PREFIX_MAX)
    custom: Mapping[str, str] | None = attrs.field(
        default=None,
        validator=rule(
            v.check_str_map,
            "action.policy_keys.custom",
            max_entries=v.POLICY_KEY_CUSTOM_MAX_ENTRIES,
            max_len=v.POLICY_KEY_CUSTOM_VALUE_MAX,
        ),
        metadata=w.STR_MAP,
    )
    extra: Mapping[str, Any] = extra()


@attrs.frozen(kw_only=True)
class Action:
    """What is being paid for: ``kind`` (at most 64 characters, e.g. ``llm.completion``), ``name`` (at most
    256), optional ``tags`` (at most 10, each at most 64) and v0.1.26 ``policy_keys``."""

    kind: str = attrs.field(
        validator=wd.string("action.kind", max_len=v.ACTION_KIND_MAX, required=True), metadata=w.STR
    )
    name: str = attrs.field(
        validator=wd.string("action.name", max_len=v.ACTION_NAME_MAX, required=True), metadata=w.STR
    )
    tags: tuple[str, ...] | None = attrs.field(
        default=None,
        converter=to_str_tuple,
        validator=rule(v.check_str_list, "action.tags", max_items=v.TAGS_MAX_ITEMS, max_len=v.TAG_MAX),
        metadata=w.STR_LIST,
    )
    policy_keys: PolicyKeys | None = attrs.field(
        default=None,
        validator=wd.model_of("action.policy_keys", PolicyKeys, optional=True),
        metadata=w.model(PolicyKeys),
    )
    extra: Mapping[str, Any] = extra()


@attrs.frozen(kw_only=True)
class Caps:
    """Soft-landing constraints of an ``ALLOW_WITH_CAPS`` decision (see :func:`runcycles.is_tool_allowed`)."""

    max_tokens: int | None = attrs.field(default=None, metadata=w.INT)
    max_steps_remaining: int | None = attrs.field(default=None, metadata=w.INT)
    tool_allowlist: tuple[str, ...] | None = attrs.field(default=None, converter=to_str_tuple, metadata=w.STR_LIST)
    tool_denylist: tuple[str, ...] | None = attrs.field(default=None, converter=to_str_tuple, metadata=w.STR_LIST)
    cooldown_ms: int | None = attrs.field(default=None, metadata=w.INT)
    extra: Mapping[str, Any] = extra()


def _metric_int(name: str) -> Any:
    return attrs.field(
        default=None, validator=wd.int_range(f"metrics.{name}", 0, v.MAX_INT64, optional=True), metadata=w.INT
    )


@attrs.frozen(kw_only=True)
class CyclesMetrics:
    """Standard metrics of a commit or event (``StandardMetrics``); all optional. Integers are ``>= 0``,
    ``model_version`` at most 128 characters, ``custom`` a free-form object."""

    tokens_input: int | None = _metric_int("tokens_input")
    tokens_output: int | None = _metric_int("tokens_output")
    latency_ms: int | None = _metric_int("latency_ms")
    model_version: str | None = _optional_str("metrics.model_version", v.MODEL_VERSION_MAX)
    custom: Mapping[str, Any] | None = attrs.field(
        default=None, validator=rule(v.check_object, "metrics.custom"), metadata=w.OBJECT
    )
    extra: Mapping[str, Any] = extra()

    def is_empty(self) -> bool:
        """Whether no standard value and no custom entry is set."""
        return v.is_metrics_empty(self)


StandardMetrics = CyclesMetrics
"""The spec's name for :class:`CyclesMetrics`."""


@attrs.frozen(kw_only=True)
class BudgetedRequest:
    """The fields every request that spends against a budget starts with (reserve, decide, event)."""

    idempotency_key: str = attrs.field(**IDEMPOTENCY_KEY)
    subject: Subject = attrs.field(**required_model("subject", Subject))
    action: Action = attrs.field(**required_model("action", Action))
