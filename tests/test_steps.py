"""The lifecycle's step generators on the production sync driver: every decision tested without I/O, on a fake
clock."""

from __future__ import annotations

import json
from typing import Any

import attrs
import httpx
import pytest

from runcycles._drivers import DETACHED, Detached, SyncEnv, run_sync
from runcycles._journal import JournalRecord
from runcycles._lifecycle import (
    Reserved,
    RetryPolicy,
    Settlement,
    SettlementState,
    SettleMode,
    build_settlement,
    release_steps,
    reserve_steps,
    settle_steps,
)
from runcycles._protocol import requests as rq
from runcycles._protocol.effects import (
    Detach,
    JournalDelete,
    JournalRelease,
    JournalWrite,
    Send,
    SleepUntil,
)
from runcycles.errors import BudgetExceededError, CyclesProtocolError, CyclesTransportError
from runcycles.mappers import reservation_create_response_from_wire
from runcycles.models import Action, Amount, ReservationCreateRequest, Subject
from runcycles.response import CyclesResponse


def reply(status: int, body: Any = None, headers: dict[str, str] | None = None) -> CyclesResponse:
    content = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    return rq.parse_response(status, httpx.Headers(headers or {}), content)


LOST = rq.transport_failure(httpx.ReadTimeout("timed out"))
COMMITTED = {"status": "COMMITTED", "charged": {"unit": "USD_MICROCENTS", "amount": 7}}
APPLIED = {"status": "APPLIED", "event_id": "evt-1"}


class Script:
    """Runs a step generator on the production driver (`run_sync`) with scripted responses on a fake clock.

    ``effects`` lists what the driver performed, as the effects that asked for it; a ``Detach`` hands the
    generator over, and the rest runs on a worker environment without a background (as the worker's driver
    does), on the same fake clock.
    """

    def __init__(self, responses: list[CyclesResponse], *, wall: int = 1_000_000) -> None:
        self.responses = list(responses)
        self.now = 0.0
        self.wall0 = wall
        self.sent: list[rq.HttpRequest] = []
        self.effects: list[Any] = []
        self.sleeps: list[float] = []
        self.handed_over: list[Any] = []

    def _send(self, request: rq.HttpRequest, deadline_ms: int | None) -> CyclesResponse:
        self.effects.append(Send(request, deadline_ms))
        self.sent.append(request)
        self.now += 5
        return self.responses.pop(0)

    def _sleep(self, seconds: float) -> None:
        self.effects.append(SleepUntil(self.now + seconds * 1000))
        self.sleeps.append(round(seconds * 1000, 6))
        self.now += seconds * 1000

    def _detach(self, steps: Any) -> None:
        self.effects.append(Detach())
        self.handed_over.append(steps)

    def env(self, *, detach: bool) -> SyncEnv:
        return SyncEnv(
            send=self._send,
            journal_write=lambda record: self.effects.append(JournalWrite(record)),
            journal_delete=lambda rid: self.effects.append(JournalDelete(rid)),
            journal_release=lambda rid: self.effects.append(JournalRelease(rid)),
            detach=self._detach if detach else None,
            monotonic=lambda: self.now,
            wall=lambda: int(self.wall0 + self.now),
            sleep=self._sleep,
        )

    def run(self, steps: Any) -> Any:
        result = run_sync(steps, self.env(detach=True))
        if result is DETACHED:
            result = run_sync(self.handed_over.pop(), self.env(detach=False))
        return result

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.effects]


def create_request(*, dry_run: bool = False) -> ReservationCreateRequest:
    return ReservationCreateRequest(
        idempotency_key="key-create",
        subject=Subject(tenant="acme"),
        action=Action(kind="llm.completion", name="m"),
        estimate=Amount(unit="USD_MICROCENTS", amount=10),
        ttl_ms=60000,
        dry_run=True if dry_run else None,
    )


def pending() -> JournalRecord:
    return JournalRecord(
        reservation_id="r-1",
        idempotency_key="k-1",
        commit_body={"idempotency_key": "k-1", "actual": {"unit": "USD_MICROCENTS", "amount": 7}},
        event_body={
            "idempotency_key": "k-1",
            "subject": {"tenant": "acme"},
            "action": {"kind": "llm.completion", "name": "m"},
            "actual": {"unit": "USD_MICROCENTS", "amount": 7},
            "metadata": {"recovered_reservation_id": "r-1"},
        },
    )


POLICY = RetryPolicy(enabled=True, max_attempts=3, initial_ms=100, multiplier=2.0, max_ms=1000)
ALLOW = {
    "decision": "ALLOW",
    "reservation_id": "r-1",
    "affected_scopes": ["tenant:acme"],
    "reserved": {"unit": "USD_MICROCENTS", "amount": 10},
    "expires_at_ms": 1,
    "remaining_ttl_ms": 60000,
}


# ----------------------------------------------------------------------------- reserve


def test_reserve_success_returns_the_reservation() -> None:
    script = Script([reply(200, ALLOW)])
    reserved = script.run(reserve_steps(create_request()))
    assert isinstance(reserved, Reserved)
    assert reserved.reservation_id == "r-1"
    assert len(script.sent) == 1


@pytest.mark.parametrize("first", [LOST, reply(500, {"error": "INTERNAL_ERROR"}), reply(200, {"decision": "ALLOW"})])
def test_reserve_retries_once_with_the_same_key_and_body(first: CyclesResponse) -> None:
    script = Script([first, reply(200, ALLOW)])
    reserved = script.run(reserve_steps(create_request()))
    assert isinstance(reserved, Reserved)
    assert [r.content for r in script.sent] == [script.sent[0].content] * 2
    assert script.sent[0].headers["X-Idempotency-Key"] == script.sent[1].headers["X-Idempotency-Key"] == "key-create"


def test_reserve_transport_failure_twice_raises_transport_error_with_cause() -> None:
    script = Script([LOST, LOST])
    with pytest.raises(CyclesTransportError) as info:
        script.run(reserve_steps(create_request()))
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)


def test_reserve_ambiguous_twice_raises_protocol_error() -> None:
    script = Script([reply(202, {}), reply(204)])
    with pytest.raises(CyclesProtocolError, match="schema-valid HTTP 200"):
        script.run(reserve_steps(create_request()))


def test_reserve_409_budget_exceeded_is_typed_and_not_retried() -> None:
    body = {"error": "BUDGET_EXCEEDED", "message": "no", "request_id": "req-9"}
    script = Script([reply(409, body)])
    with pytest.raises(BudgetExceededError) as info:
        script.run(reserve_steps(create_request()))
    assert info.value.request_id == "req-9"
    assert len(script.sent) == 1


def test_dry_run_deny_raises_the_same_typed_error() -> None:
    body = {"decision": "DENY", "affected_scopes": ["tenant:acme"], "reason_code": "BUDGET_EXCEEDED"}
    script = Script([reply(200, body, {"X-Request-Id": "req-h"})])
    with pytest.raises(BudgetExceededError) as info:
        script.run(reserve_steps(create_request(dry_run=True)))
    assert info.value.is_budget_exceeded()
    assert info.value.request_id == "req-h"


def test_unknown_response_fields_do_not_break_a_reserve() -> None:
    script = Script([reply(200, {**ALLOW, "brand_new_field": {"x": 1}})])
    reserved = script.run(reserve_steps(create_request()))
    assert reserved.response.extra == {"brand_new_field": {"x": 1}}


# ----------------------------------------------------------------------------- settle


def test_settle_success_journals_first_and_deletes_after() -> None:
    script = Script([reply(200, COMMITTED)])
    outcome = script.run(settle_steps(pending(), POLICY))
    assert outcome == Settlement(state="settled", model=outcome.model)
    assert script.kinds() == ["JournalWrite", "Send", "JournalDelete"]


def test_lost_commit_response_is_retried_in_the_background_with_the_same_key_and_body() -> None:
    script = Script([LOST, reply(200, COMMITTED)])
    outcome = script.run(settle_steps(pending(), POLICY))
    assert outcome.state == "settled"
    assert script.kinds() == ["JournalWrite", "Send", "Detach", "SleepUntil", "Send", "JournalDelete"]
    assert script.sent[0].content == script.sent[1].content
    assert script.sent[0].headers["X-Idempotency-Key"] == script.sent[1].headers["X-Idempotency-Key"] == "k-1"


@pytest.mark.parametrize(
    "bad",
    [
        reply(202, COMMITTED),
        reply(204),
        reply(200, {"status": "COMMITTED"}),
        reply(200, {"status": "WRONG", "charged": {"unit": "USD_MICROCENTS", "amount": 7}}),
        reply(200, b'{"status": "COMMI'),
        reply(201, COMMITTED),
    ],
)
def test_nonconformant_commit_success_is_ambiguous(bad: CyclesResponse) -> None:
    script = Script([bad, reply(200, COMMITTED)])
    assert script.run(settle_steps(pending(), POLICY)).state == "settled"
    assert len(script.sent) == 2
    assert script.sent[1].path == "/v1/reservations/r-1/commit"


def test_expired_commit_switches_durably_to_an_event_with_the_same_key() -> None:
    expired = reply(410, {"error": "RESERVATION_EXPIRED", "message": "gone", "request_id": "x"})
    script = Script([expired, reply(201, APPLIED)])
    outcome = script.run(settle_steps(pending(), POLICY))
    assert outcome.state == "settled"
    writes = [e for e in script.effects if isinstance(e, JournalWrite)]
    assert [w.record.mode for w in writes] == ["commit", "event"]
    # the switch is journaled before the event leaves
    kinds = script.kinds()
    assert kinds.index("JournalWrite", 1) < kinds.index("Send", 2)
    event = script.sent[1]
    assert event.path == "/v1/events"
    assert event.headers["X-Idempotency-Key"] == "k-1"
    assert json.loads(event.content or b"")["subject"] == {"tenant": "acme"}


def test_finalized_commit_is_verified_committed_means_settled() -> None:
    finalized = reply(409, {"error": "RESERVATION_FINALIZED", "message": "done", "request_id": "x"})
    script = Script([finalized, reply(200, {"status": "COMMITTED"})])
    assert script.run(settle_steps(pending(), POLICY)).state == "settled"
    assert script.sent[1].method == "GET"


def test_finalized_commit_that_was_released_falls_back_to_an_event() -> None:
    finalized = reply(409, {"error": "RESERVATION_FINALIZED", "message": "done", "request_id": "x"})
    script = Script([finalized, reply(200, {"status": "RELEASED"}), reply(201, APPLIED)])
    assert script.run(settle_steps(pending(), POLICY)).state == "settled"
    assert script.sent[2].path == "/v1/events"


def test_429_honours_retry_after_and_persists_an_absolute_not_before() -> None:
    limited = reply(429, {"error": "LIMIT_EXCEEDED", "message": "slow", "request_id": "x"}, {"Retry-After": "3"})
    script = Script([limited, reply(200, COMMITTED)])
    assert script.run(settle_steps(pending(), POLICY)).state == "settled"
    writes = [e.record for e in script.effects if isinstance(e, JournalWrite)]
    assert writes[-1].not_before_ms is not None
    assert writes[-1].not_before_ms >= script.wall0 + 3000
    assert script.sleeps[0] >= 3000


def test_resumed_record_waits_for_its_persisted_not_before() -> None:
    record = attrs.evolve(pending(), not_before_ms=1_002_500)
    script = Script([reply(200, COMMITTED)], wall=1_000_000)
    assert script.run(settle_steps(record, POLICY, resume=True)).state == "settled"
    assert script.kinds()[0] == "SleepUntil"  # no journal rewrite on resume, and no send before not_before
    assert script.sleeps[0] == pytest.approx(2500)


def test_understood_rejection_stops_and_deletes_the_record() -> None:
    body = {"error": "UNIT_MISMATCH", "message": "unit", "request_id": "x"}
    script = Script([reply(400, body)])
    outcome = script.run(settle_steps(pending(), POLICY))
    assert outcome.state == "rejected"
    assert isinstance(outcome.error, CyclesProtocolError) and outcome.error.is_unit_mismatch()
    assert script.kinds() == ["JournalWrite", "Send", "JournalDelete"]


@pytest.mark.parametrize("status", [401, 403, 418])
def test_auth_failures_and_unknown_4xx_retain_the_spend(status: int) -> None:
    script = Script([reply(status, {"message": "?"})] * 4)
    outcome = script.run(settle_steps(pending(), POLICY))
    assert outcome.state == "retained"
    assert len(script.sent) == POLICY.max_attempts + 1
    kinds = script.kinds()
    assert "JournalDelete" not in kinds and kinds[-1] == "JournalRelease"
    assert all("release" not in r.path for r in script.sent)


def test_backoff_grows_and_is_capped() -> None:
    script = Script([reply(503)] * 4)
    script.run(settle_steps(pending(), POLICY))
    assert len(script.sleeps) == 3
    for n, sleep in enumerate(script.sleeps):
        base = min(100 * 2**n, 1000)
        assert base <= sleep <= base * 1.25 + 1


def test_retry_disabled_keeps_the_record_without_retrying() -> None:
    script = Script([LOST])
    outcome = script.run(settle_steps(pending(), RetryPolicy(enabled=False)))
    assert outcome.state == "retained"
    assert len(script.sent) == 1
    assert not any(isinstance(e, Detach) for e in script.effects)


def test_without_journal_no_journal_effects() -> None:
    script = Script([reply(200, COMMITTED)])
    script.run(settle_steps(pending(), POLICY, journal=False))
    assert not any(isinstance(e, (JournalWrite, JournalDelete, JournalRelease)) for e in script.effects)


# ----------------------------------------------------------------------------- release


def test_release_retries_once_with_the_same_key_then_gives_up_quietly() -> None:
    script = Script([LOST, LOST])
    assert script.run(release_steps("r-1", "guarded_method_failed")) is False
    assert len(script.sent) == 2
    assert script.sent[0].content == script.sent[1].content
    assert json.loads(script.sent[0].content or b"")["reason"] == "guarded_method_failed"


def test_release_success() -> None:
    released = {"status": "RELEASED", "released": {"unit": "USD_MICROCENTS", "amount": 10}}
    script = Script([reply(200, released)])
    assert script.run(release_steps("r-1", "x")) is True


# ----------------------------------------------------------------------------- injected keys, typed answers


def counting_keys(prefix: str) -> Any:
    count = iter(range(1, 1000))
    return lambda: f"{prefix}-{next(count)}"


def test_injected_key_factory_makes_settlement_keys_deterministic() -> None:
    reserved = Reserved(
        request=create_request(),
        response=reservation_create_response_from_wire(ALLOW),
        sent_at_ms=0.0,
        received_at_ms=5.0,
    )
    record = build_settlement(
        reserved=reserved, actual=7, estimated=False, metrics=None, metadata=None, key_factory=counting_keys("s")
    )
    assert record.idempotency_key == record.commit_body["idempotency_key"] == record.event_body["idempotency_key"]
    assert record.idempotency_key == "s-1"
    script = Script([reply(200, COMMITTED)])
    assert script.run(settle_steps(record, POLICY)).state == "settled"
    assert script.sent[0].headers["X-Idempotency-Key"] == "s-1"


def test_injected_key_factory_for_a_release() -> None:
    released = {"status": "RELEASED", "released": {"unit": "USD_MICROCENTS", "amount": 10}}
    script = Script([reply(200, released)])
    assert script.run(release_steps("r-1", "x", key_factory=counting_keys("rel"))) is True
    assert json.loads(script.sent[0].content or b"")["idempotency_key"] == "rel-1"


def test_a_driver_answering_with_the_wrong_type_is_caught_where_the_effect_is_declared() -> None:
    steps = settle_steps(pending(), POLICY, journal=False)
    assert isinstance(next(steps), Send)
    with pytest.raises(TypeError, match="Send"):
        steps.send("not a Sent")


def test_the_settlement_states_are_str_enums_with_the_old_values() -> None:
    script = Script([reply(200, COMMITTED)])
    outcome = script.run(settle_steps(pending(), POLICY))
    assert outcome.state is SettlementState.SETTLED and outcome.state == "settled"
    assert Settlement(state="retained").state is SettlementState.RETAINED
    assert pending().mode is SettleMode.COMMIT
    assert attrs.evolve(pending(), mode="event").mode is SettleMode.EVENT


def test_detached_is_a_typed_sentinel() -> None:
    script = Script([LOST, reply(200, COMMITTED)])
    first = run_sync(settle_steps(pending(), POLICY), script.env(detach=True))
    assert first is DETACHED and isinstance(first, Detached) and repr(first) == "DETACHED"
    assert run_sync(script.handed_over.pop(), script.env(detach=False)).state == "settled"
