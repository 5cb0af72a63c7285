"""Reserve -> run -> settle, written once as step generators (see `_protocol.effects`).

`with_cycles` and `reserve_for_stream` (sync and async) all use these steps; only how the guarded work is
run differs between them. Nothing here performs I/O: every request, sleep, clock read and journal write is an
effect the driver performs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from . import _otel
from ._journal.record import JournalRecord
from ._protocol import requests as rq
from ._protocol.effects import (
    Steps,
    detach,
    journal_delete,
    journal_release,
    journal_write,
    now,
    send,
    sleep_until,
    wall_now,
)
from ._protocol.outcomes import Outcome, OutcomeKind, classify
from ._protocol.settle_machine import AttemptState, Next, RetryPolicy, SettleDecision, SettleMachine, verdict_of
from ._protocol.states import SettlementState, SettleMode
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
    ReservationCreateRequest,
    ReservationCreateResponse,
    Subject,
    Unit,
)
from .validation import STANDARD_SUBJECT_FIELDS as SUBJECT_FIELDS
from .validation import is_metrics_empty, validate_amount

__all__ = [
    "JournalRecord",
    "Reserved",
    "RetryPolicy",
    "SettleMode",
    "Settlement",
    "SettlementState",
    "build_create",
    "build_settlement",
    "new_key",
    "release_steps",
    "reserve_steps",
    "settle_steps",
]

log = logging.getLogger("runcycles.lifecycle")


def new_key() -> str:
    """A fresh idempotency key."""
    return rq.new_idempotency_key()


KeyFactory = Callable[[], str]
"""Where idempotency keys come from (`new_key`; tests inject a deterministic one)."""


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
    key_factory: KeyFactory = new_key,
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
        idempotency_key=key_factory(),
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
def reserve_steps(
    request: ReservationCreateRequest, http: rq.HttpRequest | None = None
) -> Steps[Reserved | DryRunResult]:
    """Create the reservation; one immediate same-key retry when the outcome is unknown.

    ``http`` is the request's ``POST`` when the caller has it already (`_guard.Guard.plan_create`).

    Raises `CyclesTransportError` when no answer came, the typed `CyclesProtocolError` for a denial or a
    rejection; returns `DryRunResult` for an allowed dry run.
    """
    if http is None:
        http = rq.create_reservation(to_wire(request))
    sent = yield from send(http)
    outcome = classify(rq.Operation.CREATE, sent.response)
    if outcome.kind in (OutcomeKind.TRANSIENT, OutcomeKind.AMBIGUOUS):
        log.warning(
            "create reservation outcome unknown (%s); retrying once with the same idempotency key",
            outcome.problem or outcome.kind.value,
        )
        sent = yield from send(http)
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
def release_steps(reservation_id: str, reason: str, *, key_factory: KeyFactory = new_key) -> Steps[bool]:
    """Release a reservation whose work failed; one same-key retry when the outcome is unknown.

    Never raises: a failed release only holds budget until the reservation expires. Returns True on success.
    """
    http = rq.release(reservation_id, {"idempotency_key": key_factory(), "reason": reason[:256]})
    outcome: Outcome | None = None
    for _ in range(2):
        sent = yield from send(http)
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
class Settlement:
    """How a settlement ended (or paused): ``settled``, ``rejected`` (understood, with ``error``) or
    ``retained`` (still unresolved: the journal keeps it); a replay may also end ``quarantined``."""

    state: SettlementState = attrs.field(converter=SettlementState)
    model: Any = None
    error: CyclesProtocolError | None = None


def build_settlement(
    *,
    reserved: Reserved,
    actual: int,
    estimated: bool,
    metrics: CyclesMetrics | None,
    metadata: Mapping[str, Any] | None,
    key_factory: KeyFactory = new_key,
) -> JournalRecord:
    """The commit body and its event fallback, both under one idempotency key."""
    reservation_id = reserved.reservation_id
    assert reservation_id is not None
    unit = reserved.response.reserved.unit if reserved.response.reserved else reserved.request.estimate.unit
    commit_metadata = dict(metadata) if metadata else {}
    if estimated:
        commit_metadata["actual_source"] = "estimate"
    key = key_factory()
    amount = Amount(unit=unit, amount=actual)
    metrics = None if is_metrics_empty(metrics) else metrics
    commit_body = to_wire(
        CommitRequest(idempotency_key=key, actual=amount, metrics=metrics, metadata=commit_metadata or None)
    )
    return JournalRecord(
        reservation_id=reservation_id,
        idempotency_key=key,
        commit_body=commit_body,
        event_body=_event_body(reserved.request, commit_body, metrics, reservation_id),
    )


def _event_body(
    request: ReservationCreateRequest, commit: Mapping[str, Any], metrics: CyclesMetrics | None, reservation_id: str
) -> dict[str, Any]:
    """``to_wire`` of the `EventCreateRequest` with the commit's key, actual, metrics and metadata (plus the
    recovery markers) and the reservation's subject and action, made from the commit's wire body (the commit
    model validated every value it holds) without a second model."""
    body: dict[str, Any] = {
        "idempotency_key": commit["idempotency_key"],
        "subject": to_wire(request.subject),
        "action": to_wire(request.action),
        "actual": dict(commit["actual"]),
    }
    if metrics is not None:
        body["metrics"] = to_wire(metrics)
    body["metadata"] = {
        **commit.get("metadata", {}),
        "recovered_reservation_id": reservation_id,
        "recovery_reason": "commit_after_reservation_expired",
    }
    return body


@_otel.traced
def settle_steps(
    record: JournalRecord, policy: RetryPolicy, *, journal: bool = True, resume: bool = False
) -> Steps[Settlement]:
    """Bring ``record``'s spend to the ledger exactly once.

    The record is journaled before the first request leaves. Only a schema-valid success or an understood
    rejection ends it (and deletes the record); everything unknown is retried with the same key and body,
    after a ``Detach`` hands the rest to the background worker. A commit the server calls expired becomes an
    event (switched durably first); a commit it calls finalized is verified before being taken as settled.
    The decisions are `SettleMachine`'s; this loop performs their effects.
    """
    if journal and not resume:
        error = yield from journal_write(record)
        if error is not None:
            log.error(
                "could not journal the pending settlement (continuing without durability): reservation_id=%s error=%r",
                record.reservation_id,
                error,
            )
    machine = SettleMachine(policy)
    state = AttemptState.resumed(record.mode) if resume else AttemptState.first(record.mode)
    while True:
        yield from _wait_not_before(record)
        sent = yield from send(_settle_request(record))
        decision = machine.on_outcome(classify(_OPERATION[record.mode], sent.response), state)
        if decision.next is Next.VERIFY_FINALIZED:
            verified = yield from send(rq.get_reservation(record.reservation_id))
            decision = machine.on_verified(verdict_of(verified.response), decision.outcome, state)
        state = decision.state
        if decision.next is Next.SWITCH_TO_EVENT:
            record = yield from _switch_to_event(record, journal=journal)
        elif decision.next is Next.RETRY:
            record = yield from _retry(record, decision, journal=journal)
        else:
            return (yield from _finish(record, decision, policy, journal=journal))


_OPERATION = {SettleMode.COMMIT: rq.Operation.COMMIT, SettleMode.EVENT: rq.Operation.EVENT}


def _settle_request(record: JournalRecord) -> rq.HttpRequest:
    if record.mode is SettleMode.EVENT:
        assert record.event_body is not None  # a record in event mode always has one
        return rq.create_event(record.event_body)
    return rq.commit(record.reservation_id, record.commit_body)


def _wait_not_before(record: JournalRecord) -> Steps[None]:
    """Honour a persisted Retry-After (an absolute wall time, so it survives a restart)."""
    if record.not_before_ms is None:
        return
    wall = yield from wall_now()
    if wall < record.not_before_ms:
        at = yield from now()
        yield from sleep_until(at + (record.not_before_ms - wall))


def _switch_to_event(record: JournalRecord, *, journal: bool) -> Steps[JournalRecord]:
    log.warning(
        "reservation %s is no longer committable; recording the spend as an event with the same key",
        record.reservation_id,
    )
    record = attrs.evolve(record, mode=SettleMode.EVENT, not_before_ms=None)
    if journal:
        error = yield from journal_write(record)
        if error is not None:
            log.error("could not journal the switch to event mode: %r", error)
    return record


def _retry(record: JournalRecord, decision: SettleDecision, *, journal: bool) -> Steps[JournalRecord]:
    """Keep the spend and try again with the same key and body, after the decision's delay."""
    outcome = decision.outcome
    log.warning(
        "settlement outcome unknown (%s); retrying in the background with the same key: reservation_id=%s",
        outcome.problem or outcome.kind.value,
        record.reservation_id,
    )
    if decision.detach:
        yield from detach()
    record = attrs.evolve(record, attempts=record.attempts + 1)
    if decision.hold_ms is not None:
        wall = yield from wall_now()
        record = attrs.evolve(record, not_before_ms=wall + decision.hold_ms)
        if journal:
            yield from journal_write(record)
    at = yield from now()
    yield from sleep_until(decision.retry_at(at))
    return record


def _finish(
    record: JournalRecord, decision: SettleDecision, policy: RetryPolicy, *, journal: bool
) -> Steps[Settlement]:
    """Settled, rejected or retained: log it, end the journal record's run, and say so."""
    outcome = decision.outcome
    rid = record.reservation_id
    if decision.next is Next.RETAIN:
        log.error(
            "settlement unresolved (%s) and retries %s; the journal keeps it for replay: reservation_id=%s",
            outcome.problem or outcome.kind.value,
            "exhausted" if policy.enabled else "disabled",
            rid,
        )
        if journal:
            yield from journal_release(rid)
        return Settlement(state=SettlementState.RETAINED)
    if decision.next is Next.REJECTED:
        rejection = error_from_response(outcome.response, "Settlement rejected")
        log.error(
            "settlement rejected by the server; the spend is NOT on the ledger: reservation_id=%s mode=%s error=%s",
            rid, record.mode, rejection,
        )
        if journal:
            yield from journal_delete(rid)
        return Settlement(state=SettlementState.REJECTED, error=rejection)
    if journal:
        yield from journal_delete(rid)
    retries = decision.state.retries
    if outcome.is_success and (retries or record.mode is SettleMode.EVENT):
        log.info(
            "settled reservation %s by %s after %d retr%s",
            rid, record.mode, retries, "y" if retries == 1 else "ies",
        )
    return Settlement(state=SettlementState.SETTLED, model=outcome.model)
