"""Reserve -> run -> settle, written once as step generators (see `_protocol.effects`).

`with_cycles` and `reserve_for_stream` (sync and async) all use these steps; only how the guarded work is
run differs between them. Nothing here performs I/O: every request, sleep, clock read and journal write is an
effect the driver performs.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

import attrs

from . import _otel
from ._protocol import requests as rq
from ._protocol.effects import (
    Detach,
    JournalDelete,
    JournalRelease,
    JournalWrite,
    Now,
    Send,
    Sent,
    SleepUntil,
    Steps,
    WallNow,
)
from ._protocol.outcomes import Outcome, OutcomeKind, classify
from ._protocol.settlement import MAX_RETRY_AFTER_MS, retry_state, settlement_retrying
from .config import CyclesConfig
from .errors import (
    CyclesProtocolError,
    CyclesTransportError,
    denial_error,
    error_from_response,
)
from .mappers import to_wire
from .models import (
    Action,
    Amount,
    CommitOveragePolicy,
    CommitRequest,
    CyclesMetrics,
    Decision,
    DryRunResult,
    EventCreateRequest,
    ReservationCreateRequest,
    ReservationCreateResponse,
    Subject,
    Unit,
)
from .validation import validate_amount

__all__ = [
    "PendingSettlement",
    "Reserved",
    "Settlement",
    "build_create",
    "build_settlement",
    "new_key",
    "release_steps",
    "reserve_steps",
    "settle_steps",
]

log = logging.getLogger("runcycles.lifecycle")

SUBJECT_FIELDS = ("tenant", "workspace", "app", "workflow", "agent", "toolset")


def new_key() -> str:
    """A fresh idempotency key."""
    return str(uuid.uuid4())


# --------------------------------------------------------------------------- reserve


def build_create(
    *,
    config: CyclesConfig,
    estimate: int,
    unit: Unit | str,
    subject: Mapping[str, str | None],
    dimensions: Mapping[str, str] | None,
    action_kind: str,
    action_name: str,
    action_tags: list[str] | None,
    ttl_ms: int,
    grace_period_ms: int | None,
    overage_policy: CommitOveragePolicy | str,
    dry_run: bool,
    metadata: Mapping[str, Any] | None,
) -> ReservationCreateRequest:
    """The validated create request; subject fields fall back to the config's defaults."""
    validate_amount("estimate", estimate)
    fields: dict[str, Any] = {}
    for name in SUBJECT_FIELDS:
        value = subject.get(name)
        if value is None:
            value = getattr(config, name)
        if value:
            fields[name] = value
    if dimensions:
        fields["dimensions"] = dict(dimensions)
    return ReservationCreateRequest(
        idempotency_key=new_key(),
        subject=Subject(**fields),
        action=Action(kind=action_kind, name=action_name, tags=list(action_tags) if action_tags else None),
        estimate=Amount(unit=Unit(unit), amount=estimate),
        ttl_ms=ttl_ms,
        grace_period_ms=grace_period_ms,
        overage_policy=CommitOveragePolicy(overage_policy),
        dry_run=True if dry_run else None,
        metadata=dict(metadata) if metadata else None,
    )


@attrs.frozen(kw_only=True)
class Reserved:
    """A live reservation as the create response described it."""

    request: ReservationCreateRequest
    response: ReservationCreateResponse
    sent_at_ms: float
    received_at_ms: float

    @property
    def reservation_id(self) -> str | None:
        """The server's id (``None`` when an observe-mode server reserved nothing)."""
        return self.response.reservation_id


def _dry_run_result(model: ReservationCreateResponse) -> DryRunResult:
    return DryRunResult(
        decision=model.decision,
        caps=model.caps,
        affected_scopes=list(model.affected_scopes),
        scope_path=model.scope_path,
        reserved=model.reserved,
        balances=list(model.balances) if model.balances else [],
        reason_code=model.reason_code,
        retry_after_ms=model.retry_after_ms,
    )


@_otel.traced
def reserve_steps(request: ReservationCreateRequest) -> Steps[Reserved | DryRunResult]:
    """Create the reservation; one immediate same-key retry when the outcome is unknown.

    Raises `CyclesTransportError` when no answer came, the typed `CyclesProtocolError` for a denial or a
    rejection; returns `DryRunResult` for an allowed dry run.
    """
    http = rq.create_reservation(to_wire(request))
    sent: Sent = yield Send(http)
    outcome = classify(rq.Operation.CREATE, sent.response)
    if outcome.kind in (OutcomeKind.TRANSIENT, OutcomeKind.AMBIGUOUS):
        log.warning(
            "create reservation outcome unknown (%s); retrying once with the same idempotency key",
            outcome.problem or outcome.kind.value,
        )
        sent = yield Send(http)
        outcome = classify(rq.Operation.CREATE, sent.response)
    response = sent.response
    if outcome.kind is OutcomeKind.TRANSIENT and response.is_transport_error:
        raise CyclesTransportError(f"Failed to create reservation: {response.error_message}", response.transport_error)
    if outcome.kind is OutcomeKind.AMBIGUOUS:
        raise CyclesProtocolError(
            "Create reservation did not produce a schema-valid HTTP 200 response"
            + (f" ({outcome.problem})" if outcome.problem else ""),
            status=response.status,
            request_id=response.request_id,
            trace_id=response.trace_id,
        )
    if not outcome.is_success:
        raise error_from_response(response, "Failed to create reservation")
    model: ReservationCreateResponse = outcome.model
    if model.decision is Decision.DENY or not isinstance(model.decision, Decision):
        raise denial_error(
            response,
            reason_code=model.reason_code,
            retry_after_ms=model.retry_after_ms,
            prefix="Dry-run denied" if request.dry_run else "Reservation denied",
        )
    if request.dry_run:
        return _dry_run_result(model)
    if model.reservation_id is None:
        log.warning(
            "the server allowed the call without creating a reservation (observe mode?): "
            "running it without a reservation; nothing will be committed"
        )
    return Reserved(request=request, response=model, sent_at_ms=sent.sent_at_ms, received_at_ms=sent.received_at_ms)


# --------------------------------------------------------------------------- release


@_otel.traced
def release_steps(reservation_id: str, reason: str) -> Steps[bool]:
    """Release a reservation whose work failed; one same-key retry when the outcome is unknown.

    Never raises: a failed release only holds budget until the reservation expires. Returns True on success.
    """
    http = rq.release(reservation_id, {"idempotency_key": new_key(), "reason": reason[:256]})
    outcome: Outcome | None = None
    for _ in range(2):
        sent: Sent = yield Send(http)
        outcome = classify(rq.Operation.RELEASE, sent.response)
        if outcome.kind not in (OutcomeKind.TRANSIENT, OutcomeKind.AMBIGUOUS):
            break
    assert outcome is not None
    if outcome.is_success or outcome.kind in (OutcomeKind.FINALIZED, OutcomeKind.EXPIRED):
        return outcome.is_success
    log.warning(
        "release failed for reservation %s (%s); its budget is held until the reservation expires",
        reservation_id,
        outcome.problem or outcome.kind.value,
    )
    return False


# --------------------------------------------------------------------------- settle


@attrs.frozen(kw_only=True)
class PendingSettlement:
    """Known spend on its way to the ledger: everything a retry or a replay needs, never the API key."""

    reservation_id: str
    idempotency_key: str
    commit_body: Mapping[str, Any]
    event_body: Mapping[str, Any]
    mode: str = "commit"  # "commit" | "event"
    not_before_ms: int | None = None
    attempts: int = 0


@attrs.frozen(kw_only=True)
class Settlement:
    """How a settlement ended (or paused): ``settled``, ``rejected`` (understood, with ``error``) or
    ``retained`` (still unresolved: the journal keeps it)."""

    state: str
    model: Any = None
    error: CyclesProtocolError | None = None


def build_settlement(
    *,
    reserved: Reserved,
    actual: int,
    estimated: bool,
    metrics: CyclesMetrics | None,
    metadata: Mapping[str, Any] | None,
) -> PendingSettlement:
    """The commit body and its event fallback, both under one idempotency key."""
    reservation_id = reserved.reservation_id
    assert reservation_id is not None
    unit = reserved.response.reserved.unit if reserved.response.reserved else reserved.request.estimate.unit
    commit_metadata = dict(metadata) if metadata else {}
    if estimated:
        commit_metadata["actual_source"] = "estimate"
    key = new_key()
    amount = Amount(unit=unit, amount=actual)
    metrics = metrics if metrics is not None and not _metrics_empty(metrics) else None
    commit = CommitRequest(
        idempotency_key=key, actual=amount, metrics=metrics, metadata=commit_metadata or None
    )
    event = EventCreateRequest(
        idempotency_key=key,
        subject=reserved.request.subject,
        action=reserved.request.action,
        actual=amount,
        metrics=metrics,
        metadata={
            **commit_metadata,
            "recovered_reservation_id": reservation_id,
            "recovery_reason": "commit_after_reservation_expired",
        },
    )
    return PendingSettlement(
        reservation_id=reservation_id, idempotency_key=key, commit_body=to_wire(commit), event_body=to_wire(event)
    )


def _metrics_empty(metrics: CyclesMetrics) -> bool:
    return not to_wire(metrics)


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """The background settlement retry settings (from `CyclesConfig`)."""

    enabled: bool = True
    max_attempts: int = 5
    initial_ms: int = 500
    multiplier: float = 2.0
    max_ms: int = 30000

    @classmethod
    def from_config(cls, config: CyclesConfig) -> RetryPolicy:
        """The policy the config describes."""
        return cls(
            enabled=config.retry_enabled,
            max_attempts=config.retry_max_attempts,
            initial_ms=config.retry_initial_delay_ms,
            multiplier=config.retry_multiplier,
            max_ms=config.retry_max_delay_ms,
        )


def _verify_finalized(reservation_id: str) -> Steps[str]:
    """After a RESERVATION_FINALIZED commit: was it committed (settled) or released (spend not on the ledger)?"""
    sent: Sent = yield Send(rq.get_reservation(reservation_id))
    status = sent.response.get_body_attribute("status")
    if sent.response.status == 200 and status == "COMMITTED":
        return "committed"
    if sent.response.status == 410 or (sent.response.status == 200 and status in ("RELEASED", "EXPIRED")):
        return "not_committed"
    return "unknown"


@_otel.traced
def settle_steps(
    record: PendingSettlement, policy: RetryPolicy, *, journal: bool = True, resume: bool = False
) -> Steps[Settlement]:
    """Bring ``record``'s spend to the ledger exactly once.

    The record is journaled before the first request leaves. Only a schema-valid success or an understood
    rejection ends it (and deletes the record); everything unknown is retried with the same key and body,
    after a ``Detach`` hands the rest to the background worker. A commit the server calls expired becomes an
    event (switched durably first); a commit it calls finalized is verified before being taken as settled.
    """
    if journal and not resume:
        error = yield JournalWrite(record)
        if error is not None:
            log.error(
                "could not journal the pending settlement (continuing without durability): reservation_id=%s error=%r",
                record.reservation_id,
                error,
            )
    detached = False
    retries = 0
    # tenacity decides when to stop and how long to wait; the generator only yields the sleep.
    retrying = settlement_retrying(
        max_attempts=policy.max_attempts,
        initial_ms=policy.initial_ms,
        multiplier=policy.multiplier,
        max_ms=policy.max_ms,
    )
    while True:
        if record.not_before_ms is not None:
            wall: int = yield WallNow()
            if wall < record.not_before_ms:
                now: float = yield Now()
                yield SleepUntil(now + (record.not_before_ms - wall))
        is_event = record.mode == "event"
        http = (
            rq.create_event(record.event_body)
            if is_event
            else rq.commit(record.reservation_id, record.commit_body)
        )
        sent: Sent = yield Send(http)
        operation = rq.Operation.EVENT if is_event else rq.Operation.COMMIT
        outcome = classify(operation, sent.response)
        if outcome.is_success:
            if journal:
                yield JournalDelete(record.reservation_id)
            if retries or is_event:
                log.info(
                    "settled reservation %s by %s after %d retr%s",
                    record.reservation_id, "event" if is_event else "commit", retries, "y" if retries == 1 else "ies",
                )
            return Settlement(state="settled", model=outcome.model)
        switch = outcome.kind is OutcomeKind.EXPIRED and not is_event
        if outcome.kind is OutcomeKind.FINALIZED and not is_event:
            verdict = yield from _verify_finalized(record.reservation_id)
            if verdict == "committed":
                if journal:
                    yield JournalDelete(record.reservation_id)
                return Settlement(state="settled")
            switch = verdict == "not_committed"
            if not switch:
                outcome = attrs.evolve(outcome, kind=OutcomeKind.AMBIGUOUS, problem="finalized, not verifiable")
        if switch:
            log.warning(
                "reservation %s is no longer committable; recording the spend as an event with the same key",
                record.reservation_id,
            )
            record = attrs.evolve(record, mode="event", not_before_ms=None)
            if journal:
                error = yield JournalWrite(record)
                if error is not None:
                    log.error("could not journal the switch to event mode: %r", error)
            continue
        if outcome.kind in (OutcomeKind.TERMINAL, OutcomeKind.FINALIZED, OutcomeKind.EXPIRED):
            rejection = error_from_response(sent.response, "Settlement rejected")
            log.error(
                "settlement rejected by the server; the spend is NOT on the ledger: reservation_id=%s mode=%s error=%s",
                record.reservation_id, record.mode, rejection,
            )
            if journal:
                yield JournalDelete(record.reservation_id)
            return Settlement(state="rejected", error=rejection)
        # Unknown outcome: keep the spend and try again with the same key and body.
        state = retry_state(retrying, retries + 1)
        if not policy.enabled or retrying.stop(state):
            log.error(
                "settlement unresolved (%s) and retries %s; the journal keeps it for replay: reservation_id=%s",
                outcome.problem or outcome.kind.value,
                "exhausted" if policy.enabled else "disabled",
                record.reservation_id,
            )
            if journal:
                yield JournalRelease(record.reservation_id)
            return Settlement(state="retained")
        log.warning(
            "settlement outcome unknown (%s); retrying in the background with the same key: reservation_id=%s",
            outcome.problem or outcome.kind.value,
            record.reservation_id,
        )
        if not detached:
            detached = True
            yield Detach()
        delay = int(retrying.wait(state) * 1000)
        if outcome.retry_after_ms is not None:
            delay = max(delay, min(outcome.retry_after_ms, MAX_RETRY_AFTER_MS))
        retries += 1
        record = attrs.evolve(record, attempts=record.attempts + 1)
        if outcome.kind is OutcomeKind.RATE_LIMITED and outcome.retry_after_ms is not None:
            wall = yield WallNow()
            record = attrs.evolve(record, not_before_ms=wall + min(outcome.retry_after_ms, MAX_RETRY_AFTER_MS))
            if journal:
                yield JournalWrite(record)
        now = yield Now()
        yield SleepUntil(now + delay)
