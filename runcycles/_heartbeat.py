"""The heartbeat: extend a live reservation on the protocol's schedule, as a step generator.

The timing decisions are `_protocol.lease.LeaseSchedule`'s; this module only turns them into extend requests
(a fresh idempotency key per beat, the same key for every retry of one beat), reports failures, and keeps
the context's ``expires_at_ms`` current. It never raises and never cancels the guarded work.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from typing import Any, TypeVar

from . import _otel
from ._lifecycle import KeyFactory, Reserved, new_key
from ._protocol import requests as rq
from ._protocol.effects import SleepUntil, Steps, now, send, sleep_until
from ._protocol.lease import Beat, FailureKind, LeaseSchedule
from ._protocol.outcomes import Outcome, OutcomeKind, classify
from ._protocol.states import HeartbeatDisposition
from .config import CyclesConfig
from .context import CyclesContext
from .heartbeat import HeartbeatEvent
from .models import ErrorCode

__all__ = ["deferred_start_ms", "heartbeat_steps", "started_at"]

log = logging.getLogger("runcycles.heartbeat")

T = TypeVar("T")

_DEFER_MS = 1000
"""How long after the create response a long lease's heartbeat is first looked at (see `deferred_start_ms`)."""
_DEFER_MAX_RTT_MS = 1000


def deferred_start_ms(reserved: Reserved, config: CyclesConfig) -> float | None:
    """When the heartbeat of ``reserved`` may first be looked at without moving any beat: 1 s after the create
    response when its first beat is due at least 1 s after that, else ``None`` (work the schedule out now).

    The first beat comes the schedule's retry reserve before the end of the lead the create measured, and that
    reserve is at most ``2 * max(budget, 2 * rtt, 1 s) + max(2 * rtt, 1 s)`` (``budget``: the extend deadline
    configured), so a lead measured within 1 s that exceeds it by 2 s or more qualifies. A guarded call that
    ends sooner never computes its schedule; the schedule is a function of the create's recorded timings and
    response only, so working it out later gives the same beats."""
    rtt = reserved.received_at_ms - reserved.sent_at_ms
    if not 0 <= rtt <= _DEFER_MAX_RTT_MS:
        return None
    lead = reserved.request.ttl_ms or 60000
    remaining = reserved.response.remaining_ttl_ms
    if remaining is not None:
        lead = min(lead, remaining)
    budget = config.extend_timeout_ms or config.request_timeout_budget_ms
    reserve = 2 * max(budget, 2 * _DEFER_MAX_RTT_MS) + 2 * _DEFER_MAX_RTT_MS
    if lead - rtt - reserve < 2 * _DEFER_MS:
        return None
    return reserved.received_at_ms + _DEFER_MS


def started_at(at_ms: float, steps: Steps[T]) -> Generator[Any, Any, T]:
    """``steps``, not started before ``at_ms`` (a first `SleepUntil`); closing it before then closes ``steps``
    unstarted."""
    try:
        yield SleepUntil(at_ms)
    except GeneratorExit:
        steps.close()
        raise
    return (yield from steps)

_PERMANENT = frozenset(
    {
        ErrorCode.RESERVATION_EXPIRED,
        ErrorCode.RESERVATION_FINALIZED,
        ErrorCode.MAX_EXTENSIONS_EXCEEDED,
        ErrorCode.TENANT_CLOSED,
        ErrorCode.NOT_FOUND,
    }
)


def _failure_kind(outcome: Outcome) -> FailureKind:
    kind = outcome.kind
    if kind is OutcomeKind.TRANSIENT:
        return FailureKind.TRANSPORT if outcome.response.is_transport_error else FailureKind.SERVER_ERROR
    if kind is OutcomeKind.AMBIGUOUS:
        return FailureKind.AMBIGUOUS
    if kind is OutcomeKind.RATE_LIMITED:
        return FailureKind.RATE_LIMITED
    if kind in (OutcomeKind.EXPIRED, OutcomeKind.FINALIZED) or outcome.error_code in _PERMANENT:
        return FailureKind.PERMANENT
    if outcome.response.status == 404:
        return FailureKind.PERMANENT
    return FailureKind.OTHER_4XX


@_otel.traced
def heartbeat_steps(
    reserved: Reserved,
    context: CyclesContext,
    *,
    config: CyclesConfig,
    report: Callable[[HeartbeatEvent], None],
    key_factory: KeyFactory = new_key,
) -> Steps[None]:
    """Keep ``reserved`` alive until the generator is closed (by cancelling its driver)."""
    reservation_id = reserved.reservation_id
    assert reservation_id is not None
    ttl_ms = reserved.request.ttl_ms or 60000
    created = reserved.response
    schedule = LeaseSchedule(
        requested_ttl_ms=ttl_ms,
        request_timeout_budget_ms=config.extend_timeout_ms or config.request_timeout_budget_ms,
        clock_ms=reserved.sent_at_ms,
        adaptive_deadline=config.extend_timeout_ms is None,
    )
    beat: Beat = schedule.on_create_success(
        sent_at_ms=reserved.sent_at_ms,
        received_at_ms=reserved.received_at_ms,
        expires_at_ms=created.expires_at_ms,
        remaining_ttl_ms=created.remaining_ttl_ms,
    )
    key = ""  # drawn when the first beat is due (most calls end before)
    noted: set[str] = set()
    while True:
        if beat.note and beat.note not in noted:
            noted.add(beat.note)
            log.warning("heartbeat: %s: reservation_id=%s", beat.note, reservation_id)
        if beat.is_stop:
            message = beat.reason or "stopped"
            log.warning("heartbeat stopped: reservation_id=%s reason=%s", reservation_id, message)
            stopped = HeartbeatDisposition.STOPPED
            report(HeartbeatEvent(reservation_id=reservation_id, disposition=stopped, reason=message))
            return
        yield from sleep_until(beat.due_at_ms)
        if beat.fresh_key or not key:
            key = key_factory()
        request = rq.extend(reservation_id, {"idempotency_key": key, "extend_by_ms": ttl_ms})
        sent = yield from send(request, deadline_ms=_deadline(schedule))
        outcome = classify(rq.Operation.EXTEND, sent.response)
        if outcome.is_success:
            model = outcome.model
            context.expires_at_ms = model.expires_at_ms
            beat = schedule.on_extend_success(
                sent_at_ms=sent.sent_at_ms,
                received_at_ms=sent.received_at_ms,
                expires_at_ms=model.expires_at_ms,
                remaining_ttl_ms=model.remaining_ttl_ms,
            )
            continue
        at = yield from now()
        retry_after = outcome.retry_after_ms
        beat = schedule.on_extend_failure(
            now_ms=at,
            kind=_failure_kind(outcome),
            retry_after_s=None if retry_after is None else retry_after // 1000,
        )
        report(_failure_event(reservation_id, outcome, beat, at))
        if beat.is_stop:
            return


def _failure_event(reservation_id: str, outcome: Outcome, beat: Beat, now_ms: float) -> HeartbeatEvent:
    """Log a failed extend and describe it for ``on_heartbeat_failure`` (stopped, or retrying per ``beat``)."""
    status = outcome.response.status
    code = outcome.error_code.value if outcome.error_code is not None else None
    reason = outcome.problem or outcome.kind.value
    if beat.is_stop:
        reason = f"{reason}; {beat.reason}" if beat.reason else reason
        log.warning(
            "heartbeat extend failed, stopping: reservation_id=%s status=%s error=%s reason=%s",
            reservation_id, status, code, reason,
        )
        return HeartbeatEvent(
            reservation_id=reservation_id, disposition=HeartbeatDisposition.STOPPED, reason=reason,
            status=status, error_code=code,
        )
    delay = max(0, int(beat.due_at_ms - now_ms))
    log.warning(
        "heartbeat extend failed, retrying with the same idempotency key in %d ms: reservation_id=%s "
        "status=%s error=%s reason=%s",
        delay, reservation_id, status, code, reason,
    )
    return HeartbeatEvent(
        reservation_id=reservation_id, disposition=HeartbeatDisposition.RETRYING, reason=reason,
        status=status, error_code=code, retry_in_ms=delay,
    )


def _deadline(schedule: LeaseSchedule) -> int | None:
    deadline = schedule.attempt_deadline_ms
    if deadline is None or deadline == float("inf"):
        return None
    return max(1, int(deadline))
