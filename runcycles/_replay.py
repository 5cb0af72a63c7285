"""Replay of a journaled settlement, with a check before resending an old one.

A server keeps idempotency keys for a limited time (the reference server: events for 7 days). A record
replayed after that could be applied twice: an event whose first send was applied (its answer lost) would be
charged again. So a record older than ``replay_verify_after_ms`` is never resent blind; its reservation is
read first:

* ``COMMITTED``: the spend is on the ledger; the record is settled (deleted).
* ``ACTIVE``, commit mode: resent as usual (a reservation commits at most once, whatever the key's age).
* anything else (expired, released, unknown to the server), either mode: the record is quarantined (kept
  under ``quarantine/`` for an operator) and reported at ERROR; nothing is sent. Commit mode is included
  because its next step would be the event fallback, which is exactly the blind resend this avoids.
* no clear answer (transport failure, 5xx, 429, 401/403...): retried with the settlement backoff, then the
  record is kept for a later replay.
"""

from __future__ import annotations

import logging
from typing import Any

from ._journal.record import JournalRecord
from ._lifecycle import RetryPolicy, Settlement, settle_steps
from ._protocol import requests as rq
from ._protocol.effects import (
    Steps,
    journal_delete,
    journal_quarantine,
    journal_release,
    now,
    send,
    sleep_until,
    wall_now,
)
from ._protocol.outcomes import Outcome, OutcomeKind, classify
from ._protocol.settlement import clamp_retry_after, retry_state
from ._protocol.states import SettlementState, SettleMode
from ._text import cap

__all__ = ["replay_steps"]

log = logging.getLogger("runcycles.lifecycle")

_DAY_MS = 86_400_000
_GONE = {404: "not found", 410: "expired"}
_UNCLEAR = (OutcomeKind.TRANSIENT, OutcomeKind.AMBIGUOUS, OutcomeKind.RATE_LIMITED, OutcomeKind.RETAIN)


def replay_steps(record: JournalRecord, policy: RetryPolicy, *, verify_after_ms: int) -> Steps[Settlement]:
    """Resume ``record`` (claimed by the caller); verify it first when it is older than ``verify_after_ms``.

    Ends as ``settled``, ``rejected`` or ``retained`` (see `settle_steps`), or ``quarantined``.
    """
    wall = yield from wall_now()
    age_ms = wall - record.recorded_at_ms
    if age_ms < verify_after_ms:
        return (yield from settle_steps(record, policy, journal=True, resume=True))
    rid = record.reservation_id
    outcome = yield from _read_reservation(rid, policy)
    status = _status(outcome)
    if status == "COMMITTED":
        log.info("old journaled settlement verified as committed: reservation_id=%s", rid)
        yield from journal_delete(rid)
        return Settlement(state=SettlementState.SETTLED)
    if status == "ACTIVE" and record.mode is SettleMode.COMMIT:
        log.info("old journaled commit: reservation %s is still active; committing with the same key", rid)
        return (yield from settle_steps(record, policy, journal=True, resume=True))
    if status is None and outcome.kind in _UNCLEAR and outcome.response.status not in _GONE:
        log.warning(
            "could not verify an old journaled settlement (%s); kept for a later replay: reservation_id=%s",
            outcome.problem or outcome.kind.value,
            rid,
        )
        yield from journal_release(rid)
        return Settlement(state=SettlementState.RETAINED)
    http_status = outcome.response.status
    if status is not None:
        found = f"reservation {status}"
    elif http_status in _GONE:
        found = f"reservation {_GONE[http_status]} (HTTP {http_status})"
    else:
        found = f"HTTP {http_status} reading the reservation"
    reason = (
        f"journaled {age_ms / _DAY_MS:.1f} days ago (verify after {verify_after_ms / _DAY_MS:.1f}), "
        f"{record.mode} mode, {found}"
    )
    log.error(
        "journaled settlement too old to resend safely and not committed; quarantined for manual "
        "reconciliation (the spend is not on the ledger unless an earlier attempt was applied): "
        "reservation_id=%s mode=%s idempotency_key=%s actual=%s (%s)",
        rid,
        record.mode,
        record.idempotency_key,
        cap(repr(_actual(record))),
        reason,
    )
    yield from journal_quarantine(rid, reason)
    return Settlement(state=SettlementState.QUARANTINED)


def _read_reservation(reservation_id: str, policy: RetryPolicy) -> Steps[Outcome]:
    retrying = policy.retrying()
    attempts = 0
    while True:
        sent = yield from send(rq.get_reservation(reservation_id))
        outcome = classify(rq.Operation.GET, sent.response)
        attempts += 1
        if outcome.kind not in (OutcomeKind.TRANSIENT, OutcomeKind.AMBIGUOUS, OutcomeKind.RATE_LIMITED):
            return outcome
        state = retry_state(retrying, attempts)
        if not policy.enabled or retrying.stop(state):
            return outcome
        delay = int(retrying.wait(state) * 1000)
        retry_after = clamp_retry_after(outcome.retry_after_ms)
        if retry_after is not None:
            delay = max(delay, retry_after)
        at = yield from now()
        yield from sleep_until(at + delay)


def _status(outcome: Outcome) -> str | None:
    if not outcome.is_success:
        return None
    status = outcome.model.status
    return str(getattr(status, "value", status))


def _actual(record: JournalRecord) -> Any:
    body = record.event_body if record.mode is SettleMode.EVENT else record.commit_body
    return (body or {}).get("actual")
