"""The per-call plumbing shared by `with_cycles` and `reserve_for_stream`, sync and async.

`GuardOptions` holds the user's options (constants or callables of the call's arguments); `Guard` turns them
into a create request, a context, and the settlement record. The flavour-specific shells only decide how to
run the guarded work and the heartbeat.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ._actual import resolve_actual, warn_if_outsized
from ._journal.record import JournalRecord
from ._lifecycle import Reserved, build_create, build_settlement, new_key
from ._protocol import requests as rq
from .config import CyclesConfig
from .context import CyclesContext
from .mappers import to_wire
from .models import CommitOveragePolicy, CyclesMetrics, ReservationCreateRequest, Unit
from .validation import STANDARD_SUBJECT_FIELDS as SUBJECT_FIELDS
from .validation import validate_amount, validate_grace_period_ms, validate_ttl_ms

__all__ = ["Guard", "GuardOptions", "options_from"]


def _value(option: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    return option(*args, **kwargs) if callable(option) else option


@attrs.frozen(kw_only=True)
class GuardOptions:
    """Everything `with_cycles` / `reserve_for_stream` accept besides the client."""

    estimate: int | Callable[..., int]
    actual: int | Callable[[Any], int] | None = None
    use_estimate_if_actual_not_provided: bool = True
    action_kind: str | Callable[..., str] = "unknown"
    action_name: str | Callable[..., str] = "unknown"
    action_tags: list[str] | Callable[..., list[str]] | None = None
    unit: Unit | str = Unit.USD_MICROCENTS
    ttl_ms: int = 60000
    grace_period_ms: int | None = None
    overage_policy: CommitOveragePolicy | str = CommitOveragePolicy.ALLOW_IF_AVAILABLE
    dry_run: bool = False
    subject: Mapping[str, str | Callable[..., str | None] | None] = attrs.field(factory=dict)
    dimensions: Mapping[str, str] | Callable[..., Mapping[str, str] | None] | None = None
    metadata: Mapping[str, Any] | None = None

    def check(self, *, stream: bool = False) -> None:
        """Reject what can be known to be wrong before any call (raises ``ValueError``/``TypeError``).

        A guarded function without ``actual=`` and without the estimate fallback is a configuration error; a
        stream is not (its actual arrives through ``stream.actual`` or ``commit()``)."""
        if not stream and self._lacks_actual():
            raise ValueError("actual expression is required when use_estimate_if_actual_not_provided is False")
        if not callable(self.estimate):
            validate_amount("estimate", self.estimate)
        if self.actual is not None and not callable(self.actual):
            validate_amount("actual", self.actual)
        validate_ttl_ms(self.ttl_ms)
        if self.grace_period_ms is not None:
            validate_grace_period_ms(self.grace_period_ms)
        _check_choice("unit", Unit, self.unit)
        _check_choice("overage_policy", CommitOveragePolicy, self.overage_policy)
        for name in self.subject:
            if name not in SUBJECT_FIELDS:
                raise TypeError(f"unknown subject field {name!r}")
        if self.metadata is not None and not isinstance(self.metadata, Mapping):
            raise ValueError("metadata must be a dict")

    def _lacks_actual(self) -> bool:
        """Whether a real (not dry-run) call would have no actual: none given and no estimate fallback."""
        return not self.dry_run and self.actual is None and not self.use_estimate_if_actual_not_provided


def _check_choice(name: str, choices: type[enum.Enum], value: object) -> None:
    """``value`` must be one of the enum's values (or members); the message lists them."""
    try:
        choices(value)
    except ValueError:
        listed = ", ".join(member.value for member in choices)
        raise ValueError(f"{name} must be one of {listed}, got {value!r}") from None


def options_from(arguments: Mapping[str, Any], *, stream: bool = False) -> GuardOptions:
    """`GuardOptions` from a public function's keyword arguments (the six subject fields gathered up)."""
    names = {field.name for field in attrs.fields(GuardOptions)} - {"subject"}
    subject = {name: arguments[name] for name in SUBJECT_FIELDS if arguments.get(name) is not None}
    options = GuardOptions(subject=subject, **{name: arguments[name] for name in names if name in arguments})
    options.check(stream=stream)
    return options


_REQUEST_FIELDS = tuple(field.name for field in attrs.fields(ReservationCreateRequest))
_set = object.__setattr__


def _rekeyed(template: ReservationCreateRequest, key: str) -> ReservationCreateRequest:
    """``attrs.evolve(template, idempotency_key=key)`` (with its own copy of the metadata) without validating
    again what the template's construction validated; ``key`` is a fresh `new_key`."""
    request = object.__new__(ReservationCreateRequest)
    for name in _REQUEST_FIELDS:
        _set(request, name, getattr(template, name))
    _set(request, "idempotency_key", key)
    if template.metadata:
        _set(request, "metadata", dict(template.metadata))
    return request


def _is_constant(options: GuardOptions) -> bool:
    """Whether every option that shapes the create request is a constant (no callable of the arguments)."""
    shaping = (options.estimate, options.dimensions, options.action_kind, options.action_name, options.action_tags)
    return not any(callable(value) for value in (*shaping, *options.subject.values()))


@attrs.frozen
class Guard:
    """The options of one guarded function or stream, ready to plan calls."""

    options: GuardOptions
    # With constant options, the validated request of a config is built once; a call only takes a fresh key.
    _constant: bool = attrs.field(init=False, default=attrs.Factory(lambda self: _is_constant(self.options),
                                                                    takes_self=True))
    _templates: dict[int, tuple[CyclesConfig, ReservationCreateRequest, rq.KeyedCreate]] = attrs.field(
        init=False, factory=dict, eq=False, repr=False
    )

    def plan(self, config: CyclesConfig, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> ReservationCreateRequest:
        """Evaluate the options for this call and build the validated create request."""
        if self._constant:
            return _rekeyed(self._template(config, args, kwargs)[1], new_key())
        return self._build(config, args, kwargs)

    def plan_create(
        self, config: CyclesConfig, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[ReservationCreateRequest, rq.HttpRequest | None]:
        """`plan`, and with constant options also its HTTP request (serialised once per config: a call only
        puts its fresh key in); ``None`` when `reserve_steps` is to build it."""
        if self._constant:
            _, template, create = self._template(config, args, kwargs)
            key = new_key()
            return _rekeyed(template, key), create.with_key(key)
        return self._build(config, args, kwargs), None

    def _template(
        self, config: CyclesConfig, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[CyclesConfig, ReservationCreateRequest, rq.KeyedCreate]:
        entry = self._templates.get(id(config))
        if entry is None or entry[0] is not config:
            if len(self._templates) >= 16:  # a client factory serving many configs: keep the cache small
                self._templates.clear()
            template = self._build(config, args, kwargs)
            entry = self._templates[id(config)] = (config, template, rq.KeyedCreate(to_wire(template)))
        return entry

    def _build(
        self, config: CyclesConfig, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> ReservationCreateRequest:
        o = self.options
        estimate = _value(o.estimate, args, kwargs)
        subject = {name: _value(value, args, kwargs) for name, value in o.subject.items()}
        return build_create(
            config=config,
            estimate=estimate,
            unit=o.unit,
            subject=subject,
            dimensions=_value(o.dimensions, args, kwargs),
            action_kind=_value(o.action_kind, args, kwargs),
            action_name=_value(o.action_name, args, kwargs),
            action_tags=_value(o.action_tags, args, kwargs),
            ttl_ms=o.ttl_ms,
            grace_period_ms=o.grace_period_ms,
            overage_policy=o.overage_policy,
            dry_run=o.dry_run,
            metadata=o.metadata,
        )

    @staticmethod
    def context(reserved: Reserved) -> CyclesContext:
        """The context guarded code sees."""
        model = reserved.response
        assert reserved.reservation_id is not None
        return CyclesContext(
            reservation_id=reserved.reservation_id,
            estimate=reserved.request.estimate.amount,
            decision=model.decision,
            caps=model.caps,
            expires_at_ms=model.expires_at_ms,
            affected_scopes=list(model.affected_scopes),
            scope_path=model.scope_path,
            reserved=model.reserved,
            balances=list(model.balances or ()),
        )

    def settlement(
        self,
        reserved: Reserved,
        context: CyclesContext,
        *,
        result: Any = None,
        actual: int | Callable[[Any], int] | None = None,
        elapsed_ms: float | None = None,
        metrics: CyclesMetrics | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> JournalRecord:
        """The commit for known spend: the actual (or the estimate, marked), metrics with latency filled.

        The actual comes from ``actual`` (of ``result``), else ``context.actual``, else the estimate; with
        ``use_estimate_if_actual_not_provided=False`` a missing one raises `MissingActualError` (nothing to
        settle)."""
        estimate = reserved.request.estimate.amount
        amount, estimated = resolve_actual(
            actual,
            result,
            estimate,
            reservation_id=reserved.reservation_id,
            recorded=context.actual,
            use_estimate=self.options.use_estimate_if_actual_not_provided,
        )
        if not estimated:
            warn_if_outsized(amount, estimate, action=reserved.request.action, reservation_id=reserved.reservation_id)
        metrics = metrics if metrics is not None else context.metrics
        if elapsed_ms is not None and (metrics is None or metrics.latency_ms is None):
            latency = max(0, int(elapsed_ms))
            metrics = attrs.evolve(metrics, latency_ms=latency) if metrics else CyclesMetrics(latency_ms=latency)
        merged: dict[str, Any] = dict(context.commit_metadata or {})
        if metadata:
            merged.update(metadata)
        return build_settlement(
            reserved=reserved, actual=amount, estimated=estimated, metrics=metrics, metadata=merged or None
        )
