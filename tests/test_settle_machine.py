"""The settlement decisions (runcycles._protocol.settle_machine) as a table, like h11's state tests:
every outcome class x mode (commit / event) x attempt state (first, retrying, retries exhausted, resumed)."""

from __future__ import annotations

import json
import random
from typing import Any

import attrs
import httpx
import pytest

from runcycles._protocol import requests as rq
from runcycles._protocol.outcomes import Outcome, OutcomeKind, classify
from runcycles._protocol.settle_machine import (
    AttemptState,
    Next,
    RetryPolicy,
    SettleMachine,
    Verdict,
    verdict_of,
)
from runcycles._protocol.states import SettleMode
from runcycles.response import CyclesResponse


class NoJitter(random.Random):
    """A random source whose jitter is always zero, so every delay is the bare backoff."""

    def uniform(self, a: float, b: float) -> float:
        return a


MAX = 3
POLICY = RetryPolicy(enabled=True, max_attempts=MAX, initial_ms=100, multiplier=2.0, max_ms=1000, rng=NoJitter())


def reply(status: int, body: Any = None, headers: dict[str, str] | None = None) -> CyclesResponse:
    content = b"" if body is None else json.dumps(body).encode()
    return rq.parse_response(status, httpx.Headers(headers or {}), content)


def error(code: str) -> dict[str, str]:
    return {"error": code, "message": "m", "request_id": "req"}


SUCCESS_BODY = {
    SettleMode.COMMIT: (200, {"status": "COMMITTED", "charged": {"unit": "USD_MICROCENTS", "amount": 7}}),
    SettleMode.EVENT: (201, {"status": "APPLIED", "event_id": "evt-1"}),
}
OPERATION = {SettleMode.COMMIT: rq.Operation.COMMIT, SettleMode.EVENT: rq.Operation.EVENT}

# outcome class -> the answer that carries it (success depends on the mode)
ANSWERS: dict[str, tuple[OutcomeKind, Any]] = {
    "success": (OutcomeKind.SUCCESS, None),
    "ambiguous": (OutcomeKind.AMBIGUOUS, (204, None, None)),
    "transient": (OutcomeKind.TRANSIENT, (503, None, None)),
    "rate_limited": (OutcomeKind.RATE_LIMITED, (429, error("LIMIT_EXCEEDED"), None)),
    "rate_limited_retry_after": (OutcomeKind.RATE_LIMITED, (429, error("LIMIT_EXCEEDED"), {"Retry-After": "3"})),
    "retain": (OutcomeKind.RETAIN, (403, {"message": "forbidden"}, None)),
    "expired": (OutcomeKind.EXPIRED, (410, error("RESERVATION_EXPIRED"), None)),
    "finalized": (OutcomeKind.FINALIZED, (409, error("RESERVATION_FINALIZED"), None)),
    "terminal": (OutcomeKind.TERMINAL, (400, error("UNIT_MISMATCH"), None)),
}
UNKNOWN = ("ambiguous", "transient", "rate_limited", "rate_limited_retry_after", "retain")


def outcome_for(name: str, mode: SettleMode) -> Outcome:
    kind, answer = ANSWERS[name]
    status, body, headers = (*SUCCESS_BODY[mode], None) if answer is None else answer
    outcome = classify(OPERATION[mode], reply(status, body, headers))
    assert outcome.kind is kind
    return outcome


def state_for(name: str, mode: SettleMode) -> AttemptState:
    return {
        "first": AttemptState.first(mode),
        "retrying": AttemptState(mode=mode, retries=1, detached=True),
        "exhausted": AttemptState(mode=mode, retries=MAX, detached=True),
        "resumed": AttemptState.resumed(mode),
    }[name]


# Outcomes whose decision does not depend on the attempt state: (class, mode) -> next.
DECIDED = {
    ("success", SettleMode.COMMIT): Next.SETTLED,
    ("success", SettleMode.EVENT): Next.SETTLED,
    ("expired", SettleMode.COMMIT): Next.SWITCH_TO_EVENT,
    ("expired", SettleMode.EVENT): Next.REJECTED,
    ("finalized", SettleMode.COMMIT): Next.VERIFY_FINALIZED,
    ("finalized", SettleMode.EVENT): Next.REJECTED,
    ("terminal", SettleMode.COMMIT): Next.REJECTED,
    ("terminal", SettleMode.EVENT): Next.REJECTED,
}
# Unknown outcomes, in either mode: attempt state -> (next, detach first, retries after, backoff base ms).
UNKNOWN_BY_STATE = {
    "first": (Next.RETRY, True, 1, 100),
    "retrying": (Next.RETRY, False, 2, 200),
    "exhausted": (Next.RETAIN, False, MAX, None),
    "resumed": (Next.RETRY, False, 1, 100),
}
STATES = tuple(UNKNOWN_BY_STATE)
MODES = (SettleMode.COMMIT, SettleMode.EVENT)


@pytest.mark.parametrize("state_name", STATES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("outcome_name", tuple(ANSWERS))
def test_decision_table(outcome_name: str, mode: SettleMode, state_name: str) -> None:
    state = state_for(state_name, mode)
    outcome = outcome_for(outcome_name, mode)
    decision = SettleMachine(POLICY).on_outcome(outcome, state)
    assert decision.outcome is outcome
    if outcome_name not in UNKNOWN:
        expected = DECIDED[(outcome_name, mode)]
        assert decision.next is expected
        switched = attrs.evolve(state, mode=SettleMode.EVENT)
        assert decision.state == (switched if expected is Next.SWITCH_TO_EVENT else state)
        assert (decision.delay_ms, decision.hold_ms, decision.detach) == (0, None, False)
        return
    next_, detach, retries, base = UNKNOWN_BY_STATE[state_name]
    assert decision.next is next_
    assert decision.state.mode is mode  # unknown outcomes never change the mode
    assert decision.state.retries == retries
    if next_ is Next.RETAIN:
        assert decision.state == state and not decision.detach
        return
    assert decision.detach is detach
    assert decision.state.detached
    with_retry_after = outcome_name == "rate_limited_retry_after"
    assert decision.delay_ms == (max(base, 3000) if with_retry_after else base)
    assert decision.hold_ms == (3000 if with_retry_after else None)
    assert decision.retry_at(1_000.0) == 1_000.0 + decision.delay_ms


@pytest.mark.parametrize("outcome_name", UNKNOWN)
@pytest.mark.parametrize("mode", MODES)
def test_retries_disabled_retain_every_unknown_outcome_at_once(outcome_name: str, mode: SettleMode) -> None:
    machine = SettleMachine(attrs.evolve(POLICY, enabled=False))
    decision = machine.on_outcome(outcome_for(outcome_name, mode), AttemptState.first(mode))
    assert decision.next is Next.RETAIN


def test_retry_after_is_clamped_to_one_hour_and_is_a_floor_only() -> None:
    machine = SettleMachine(POLICY)
    day = classify(rq.Operation.COMMIT, reply(429, error("LIMIT_EXCEEDED"), {"Retry-After": "86400"}))
    decision = machine.on_outcome(day, AttemptState.first())
    assert (decision.delay_ms, decision.hold_ms) == (3_600_000, 3_600_000)
    short = classify(rq.Operation.COMMIT, reply(429, error("LIMIT_EXCEEDED"), {"Retry-After": "0"}))
    decision = machine.on_outcome(short, AttemptState(retries=2, detached=True))
    assert (decision.delay_ms, decision.hold_ms) == (400, 0)


def test_backoff_grows_to_its_cap() -> None:
    machine = SettleMachine(attrs.evolve(POLICY, max_attempts=10))
    state = AttemptState.first()
    delays = []
    for _ in range(6):
        decision = machine.on_outcome(outcome_for("transient", SettleMode.COMMIT), state)
        delays.append(decision.delay_ms)
        state = decision.state
    assert delays == [100, 200, 400, 800, 1000, 1000]


def test_the_jitter_comes_from_the_injected_random_source() -> None:
    def delays(seed: int) -> list[int]:
        policy = RetryPolicy(max_attempts=5, initial_ms=100, multiplier=2.0, max_ms=1000, rng=random.Random(seed))
        machine, state, out = SettleMachine(policy), AttemptState.first(), []
        for _ in range(5):
            decision = machine.on_outcome(outcome_for("transient", SettleMode.COMMIT), state)
            out.append(decision.delay_ms)
            state = decision.state
        return out

    assert delays(4) == delays(4)
    assert delays(4) != delays(5)
    assert all(base <= d <= base * 1.25 for base, d in zip([100, 200, 400, 800, 1000], delays(4), strict=True))


FINALIZED = "finalized"


@pytest.mark.parametrize("state_name", STATES)
@pytest.mark.parametrize(
    ("verdict", "expected"),
    [
        (Verdict.COMMITTED, Next.SETTLED),
        (Verdict.NOT_COMMITTED, Next.SWITCH_TO_EVENT),
        (Verdict.UNKNOWN, Next.RETRY),
    ],
)
def test_verified_finalized_commit(verdict: Verdict, expected: Next, state_name: str) -> None:
    state = state_for(state_name, SettleMode.COMMIT)
    finalized = outcome_for(FINALIZED, SettleMode.COMMIT)
    decision = SettleMachine(POLICY).on_verified(verdict, finalized, state)
    if expected is Next.RETRY and state_name == "exhausted":
        expected = Next.RETAIN
    assert decision.next is expected
    if verdict is Verdict.UNKNOWN:
        assert decision.outcome.kind is OutcomeKind.AMBIGUOUS
        assert decision.outcome.problem == "finalized, not verifiable"
    else:
        assert decision.outcome is finalized
    if expected is Next.SWITCH_TO_EVENT:
        assert decision.state.mode is SettleMode.EVENT


@pytest.mark.parametrize(
    ("status", "body", "verdict"),
    [
        (200, {"status": "COMMITTED"}, Verdict.COMMITTED),
        (200, {"status": "RELEASED"}, Verdict.NOT_COMMITTED),
        (200, {"status": "EXPIRED"}, Verdict.NOT_COMMITTED),
        (410, error("RESERVATION_EXPIRED"), Verdict.NOT_COMMITTED),
        (200, {"status": "ACTIVE"}, Verdict.UNKNOWN),
        (404, error("NOT_FOUND"), Verdict.UNKNOWN),
        (503, None, Verdict.UNKNOWN),
    ],
)
def test_verdict_of_the_reservation_read(status: int, body: Any, verdict: Verdict) -> None:
    assert verdict_of(reply(status, body)) is verdict


def test_modes_and_states_keep_their_string_values() -> None:
    assert AttemptState(mode="event").mode is SettleMode.EVENT
    assert SettleMode.EVENT == "event" and str(SettleMode.COMMIT) == "commit" and f"{SettleMode.EVENT}" == "event"
    assert json.dumps({"mode": SettleMode.EVENT}) == '{"mode": "event"}'
