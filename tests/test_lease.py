"""The heartbeat schedule (runcycles._protocol.lease), on a fake clock: every time is an explicit argument."""

from __future__ import annotations

import math

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runcycles._protocol.lease import (
    STOP_SHORT_LEASE,
    Beat,
    BeatKind,
    FailureKind,
    LeaseMode,
    LeaseSchedule,
    Regime,
    extend_deadline_ms,
)


def _new(ttl: int, budget: float | None, adaptive: bool) -> LeaseSchedule:
    return LeaseSchedule(requested_ttl_ms=ttl, request_timeout_budget_ms=budget, clock_ms=0, adaptive_deadline=adaptive)


def _primary(
    *,
    ttl: int = 60000,
    budget: float | None = 10000,
    sent: float = 0,
    received: float = 1500,
    remaining: int = 61500,
    adaptive: bool = False,
) -> tuple[LeaseSchedule, Beat]:
    schedule = LeaseSchedule(
        requested_ttl_ms=ttl, request_timeout_budget_ms=budget, clock_ms=sent, adaptive_deadline=adaptive
    )
    beat = schedule.on_create_success(
        sent_at_ms=sent, received_at_ms=received, expires_at_ms=10**12 + remaining, remaining_ttl_ms=remaining
    )
    return schedule, beat


# -- primary algorithm --------------------------------------------------------------------------------


def test_spec_worked_example() -> None:
    # lead 60000 (remaining 61500 minus the 1500 ms rtt), 10000 ms timeout, 1500 ms max rtt.
    schedule, beat = _primary()
    assert schedule.mode is LeaseMode.PRIMARY
    assert schedule.lead_floor_ms == 60000
    assert schedule.attempt_budget_ms == 10000
    assert schedule.safety_margin_ms == 3000
    assert schedule.retry_reserve_ms == 23000
    assert beat.kind is BeatKind.EXTEND and beat.fresh_key
    assert beat.delay_ms == 37000
    assert beat.due_at_ms == 1500 + 37000 == schedule.due_at_ms
    assert schedule.attempt_deadline_ms == 10000


def test_30s_timeout_gives_zero_delay() -> None:
    schedule, beat = _primary(budget=30000)
    assert schedule.retry_reserve_ms == 63000
    assert beat.is_extend and beat.delay_ms == 0 and beat.fresh_key
    assert beat.due_at_ms == 1500


def test_max_rtt_dominates_small_budgets() -> None:
    schedule, beat = _primary(budget=500, sent=0, received=800, remaining=60800)
    assert schedule.attempt_budget_ms == 1600  # 2 x max rtt beats both 500 and 1000
    assert schedule.safety_margin_ms == 1600
    assert beat.delay_ms == 60000 - (2 * 1600 + 1600)


def test_max_rtt_is_seeded_by_create_and_only_grows() -> None:
    schedule, _ = _primary(sent=0, received=1500)
    beat = schedule.on_extend_success(
        sent_at_ms=38500, received_at_ms=38600, expires_at_ms=1, remaining_ttl_ms=83000
    )
    assert schedule.max_rtt_ms == 1500
    # lead 82900 - (2*10000 + 3000): the safety margin still uses the create's 1500 ms rtt.
    assert beat.delay_ms == 82900 - 23000
    assert beat.due_at_ms == 38600 + beat.delay_ms


def test_unbounded_timeout_gives_zero_delay_and_no_deadline() -> None:
    schedule, beat = _primary(budget=None)
    assert math.isinf(schedule.attempt_budget_ms)
    assert schedule.attempt_deadline_ms is None
    assert beat.is_extend and beat.delay_ms == 0


def test_rounding_budgets_up_delays_down() -> None:
    schedule, beat = _primary(sent=0.0, received=1500.4, remaining=61500)
    assert schedule.lead_floor_ms == 59999  # floor(61500 - 1500.4)
    assert schedule.safety_margin_ms == 3001  # ceil(3000.8)
    assert schedule.attempt_budget_ms == 10000
    assert beat.delay_ms == 59999 - 23001
    assert isinstance(beat.delay_ms, int)


def test_unreliable_timing_gives_zero_delay_without_switching_to_fallback() -> None:
    schedule = LeaseSchedule(requested_ttl_ms=60000, request_timeout_budget_ms=7000, clock_ms=100)
    beat = schedule.on_create_success(sent_at_ms=100, received_at_ms=50, expires_at_ms=1, remaining_ttl_ms=60000)
    assert schedule.mode is LeaseMode.PRIMARY
    assert beat.is_extend and beat.delay_ms == 0
    # And a failure now has no provable lead left: stop instead of retrying.
    assert schedule.on_extend_failure(now_ms=60, kind=FailureKind.TRANSPORT).is_stop


def test_first_beat_is_counted_from_receipt_so_setup_time_is_deducted() -> None:
    _, beat = _primary()
    # The caller finished its local setup 5 s after the create response arrived.
    assert beat.delay_from(1500 + 5000) == 37000 - 5000
    assert beat.delay_from(1500 + 50000) == 0
    assert beat.due_at_ms == 38500


def test_huge_remaining_is_overflow_safe() -> None:
    _, beat = _primary(remaining=2**80)
    assert beat.is_extend and beat.delay_ms > 10**20


# -- zero-delay guard ---------------------------------------------------------------------------------


def test_zero_delay_guard_allows_one_immediate_fresh_beat_then_stops() -> None:
    schedule, first = _primary(budget=30000)
    assert first.delay_ms == 0 and first.fresh_key
    second = schedule.on_extend_success(
        sent_at_ms=1500, received_at_ms=1600, expires_at_ms=1, remaining_ttl_ms=60000
    )
    assert second.is_stop
    assert second.reason == STOP_SHORT_LEASE
    assert second.disposition == "stopped"
    # Stopped is final.
    again = schedule.on_extend_success(sent_at_ms=2000, received_at_ms=2100, expires_at_ms=1, remaining_ttl_ms=10**6)
    assert again.is_stop


def test_immediate_beat_that_establishes_a_positive_lead_continues() -> None:
    # An additive server: the immediate extension doubles the lead and a positive delay appears.
    schedule, first = _primary(budget=30000)
    assert first.delay_ms == 0
    second = schedule.on_extend_success(
        sent_at_ms=1500, received_at_ms=1600, expires_at_ms=1, remaining_ttl_ms=121400
    )
    assert second.is_extend and second.fresh_key
    assert second.delay_ms == 121400 - 100 - 63000  # this attempt's rtt, the max rtt in the margins
    # The guard was reset: a later zero delay gets its one immediate beat again.
    third = schedule.on_extend_success(sent_at_ms=58000, received_at_ms=58100, expires_at_ms=1, remaining_ttl_ms=1000)
    assert third.is_extend and third.delay_ms == 0


def test_zero_delay_guard_survives_failed_attempts_of_the_immediate_beat() -> None:
    schedule, first = _primary(budget=7000, remaining=31500)  # lead 30000, reserve 17000 -> positive
    assert first.delay_ms == 30000 - 17000
    schedule2, zero = _primary(budget=7000, remaining=18500)  # lead 17000 -> 0
    assert zero.delay_ms == 0
    retry = schedule2.on_extend_failure(now_ms=1600, kind=FailureKind.SERVER_ERROR)
    assert retry.is_extend and not retry.fresh_key and retry.delay_ms > 0
    # The same-key retry of the immediate beat succeeds, again with no positive delay: stop.
    done = schedule2.on_extend_success(
        sent_at_ms=retry.due_at_ms, received_at_ms=retry.due_at_ms + 100, expires_at_ms=1, remaining_ttl_ms=12000
    )
    assert done.is_stop and done.reason == STOP_SHORT_LEASE


def test_no_two_zero_delay_beats_in_a_row() -> None:
    # lead 17000 = retry reserve: the immediate fresh beat; it fails with a retry window of exactly 0.
    schedule, zero = _primary(budget=7000, remaining=18500)
    assert zero.delay_ms == 0
    beat = schedule.on_extend_failure(now_ms=8500, kind=FailureKind.TRANSPORT)
    assert beat.is_stop
    # After a positive beat, the zero window's immediate retry is allowed; its success with 0 delay stops.
    schedule, _ = _primary()
    retry = schedule.on_extend_failure(now_ms=48500, kind=FailureKind.TRANSPORT)
    assert retry.is_extend and retry.delay_ms == 0
    done = schedule.on_extend_success(sent_at_ms=48500, received_at_ms=48600, expires_at_ms=1, remaining_ttl_ms=20000)
    assert done.is_stop and done.reason == STOP_SHORT_LEASE


# -- transient failures -------------------------------------------------------------------------------


def test_transient_failures_retry_with_the_same_key_with_shrinking_delays_then_stop() -> None:
    schedule, beat = _primary()  # lead 60000 established at 1500; beat due at 38500
    first = schedule.on_extend_failure(now_ms=39000, kind=FailureKind.TRANSPORT)
    # estimate 60000 - 37500 = 22500; window 22500 - 10000 - 3000 = 9500; min(30000, 5625, 9500)
    assert first.is_extend and not first.fresh_key and first.disposition == "retrying"
    assert first.delay_ms == 5625 and first.due_at_ms == 44625
    second = schedule.on_extend_failure(now_ms=44725, kind=FailureKind.SERVER_ERROR)
    # estimate 16775; window 3775; min(30000, 4193, 3775)
    assert second.delay_ms == 3775 and not second.fresh_key
    assert second.delay_ms < first.delay_ms
    third = schedule.on_extend_failure(now_ms=48600, kind=FailureKind.AMBIGUOUS)
    # estimate 12900; window -100 < 0
    assert third.is_stop
    assert "retry window" in (third.reason or "")


def test_retry_delay_is_capped_at_30_seconds() -> None:
    schedule, _ = _primary(remaining=10**7)
    beat = schedule.on_extend_failure(now_ms=2000, kind=FailureKind.TRANSPORT)
    assert beat.delay_ms == 30000


def test_no_progress_between_failures_stops() -> None:
    schedule, _ = _primary()
    assert schedule.on_extend_failure(now_ms=39000, kind=FailureKind.TRANSPORT).is_extend
    again = schedule.on_extend_failure(now_ms=39000, kind=FailureKind.TRANSPORT)
    assert again.is_stop and "no progress" in (again.reason or "")


def test_clock_going_backwards_between_failures_is_no_progress() -> None:
    schedule, _ = _primary()
    assert schedule.on_extend_failure(now_ms=39000, kind=FailureKind.TRANSPORT).is_extend
    assert schedule.on_extend_failure(now_ms=38000, kind=FailureKind.TRANSPORT).is_stop


def test_zero_retry_window_allows_one_immediate_retry_only() -> None:
    schedule, _ = _primary()
    # estimate 13000 at now 48500: window exactly 0.
    beat = schedule.on_extend_failure(now_ms=48500, kind=FailureKind.TRANSPORT)
    assert beat.is_extend and beat.delay_ms == 0 and not beat.fresh_key
    # That retry failed too: stop, even though a coarse clock reports no elapsed time.
    assert schedule.on_extend_failure(now_ms=48500, kind=FailureKind.TRANSPORT).is_stop


def test_success_resets_failure_tracking() -> None:
    schedule, _ = _primary()
    assert schedule.on_extend_failure(now_ms=39000, kind=FailureKind.TRANSPORT).is_extend
    schedule.on_extend_success(sent_at_ms=44625, received_at_ms=44700, expires_at_ms=1, remaining_ttl_ms=76000)
    # Same wall time as an earlier failure would be "no progress" without the intervening success.
    beat = schedule.on_extend_failure(now_ms=44800, kind=FailureKind.TRANSPORT)
    assert beat.is_extend and not beat.fresh_key


def test_429_within_window_waits_retry_after() -> None:
    schedule, _ = _primary()
    beat = schedule.on_extend_failure(now_ms=39000, kind=FailureKind.RATE_LIMITED, retry_after_s=2)
    assert beat.is_extend and not beat.fresh_key
    assert beat.delay_ms == 2000 and beat.due_at_ms == 41000


def test_429_at_exactly_the_window_is_allowed() -> None:
    schedule, _ = _primary()
    # window 9500 at now 39000: 9 s fits, 10 s does not.
    assert schedule.on_extend_failure(now_ms=39000, kind=FailureKind.RATE_LIMITED, retry_after_s=9).delay_ms == 9000


@pytest.mark.parametrize("retry_after_s", [10, 10**30, None, -1])
def test_429_outside_window_or_without_retry_after_stops(retry_after_s: int | None) -> None:
    schedule, _ = _primary()
    beat = schedule.on_extend_failure(now_ms=39000, kind=FailureKind.RATE_LIMITED, retry_after_s=retry_after_s)
    assert beat.is_stop
    assert "cannot be safely renewed" in (beat.reason or "")


def test_permanent_failure_stops() -> None:
    schedule, _ = _primary()
    beat = schedule.on_extend_failure(now_ms=39000, kind=FailureKind.PERMANENT)
    assert beat.is_stop and "permanent" in (beat.reason or "")
    assert schedule.due_at_ms is None
    assert schedule.on_extend_failure(now_ms=40000, kind=FailureKind.TRANSPORT).is_stop


def test_other_4xx_stops_without_rotating_the_key() -> None:
    schedule, _ = _primary()
    beat = schedule.on_extend_failure(now_ms=39000, kind=FailureKind.OTHER_4XX)
    assert beat.is_stop and not beat.fresh_key
    # Nothing more is scheduled: no fresh-key resend of the unchanged request.
    later = schedule.on_extend_failure(now_ms=45000, kind=FailureKind.TRANSPORT)
    assert later.is_stop and later == beat


def _after_zero_beat() -> tuple[LeaseSchedule, Beat]:
    return _primary(budget=7000, remaining=18500)  # lead 17000 = retry reserve: an immediate fresh beat


def _failed_once(now_ms: float) -> tuple[LeaseSchedule, Beat]:
    schedule, _ = _primary()
    return schedule, schedule.on_extend_failure(now_ms=now_ms, kind=FailureKind.TRANSPORT)


_PERMANENT = "the reservation can no longer be extended (permanent error)"
_REJECTED = "extend rejected by the server; not retried with a new key"
_NO_WINDOW = "no safe retry window left before the lease ends"
_ZERO_WINDOW_AGAIN = "the immediate retry allowed by a zero retry window failed too"
_NO_PROGRESS = "no progress between consecutive failed extend attempts"
_NO_RETRY_AFTER = "rate limited without a usable Retry-After; the lease cannot be safely renewed"
_BEYOND_WINDOW = "rate limited beyond the safe retry window; the lease cannot be safely renewed"
_AFTER_ZERO = "no time left for a retry after an immediate extension failed"

# case: (schedule factory, failure now, kind, Retry-After, the exact stop reason)
_FAILURE_STOPS = {
    "permanent": (_primary, 39000, FailureKind.PERMANENT, None, _PERMANENT),
    "other 4xx": (_primary, 39000, FailureKind.OTHER_4XX, None, _REJECTED),
    "negative window": (_primary, 48600, FailureKind.AMBIGUOUS, None, _NO_WINDOW),
    "zero window retried": (lambda: _failed_once(48500), 48500, FailureKind.TRANSPORT, None, _ZERO_WINDOW_AGAIN),
    "no progress": (lambda: _failed_once(39000), 39000, FailureKind.SERVER_ERROR, None, _NO_PROGRESS),
    "429 without Retry-After": (_primary, 39000, FailureKind.RATE_LIMITED, None, _NO_RETRY_AFTER),
    "429 with a boolean Retry-After": (_primary, 39000, FailureKind.RATE_LIMITED, True, _NO_RETRY_AFTER),
    "429 beyond the window": (_primary, 39000, FailureKind.RATE_LIMITED, 10, _BEYOND_WINDOW),
    "zero delay after a zero beat": (_after_zero_beat, 8500, FailureKind.TRANSPORT, None, _AFTER_ZERO),
    "429 of 0 s after a zero beat": (_after_zero_beat, 3000, FailureKind.RATE_LIMITED, 0, _AFTER_ZERO),
}


@pytest.mark.parametrize("case", list(_FAILURE_STOPS))
def test_every_failure_stop_has_its_own_reason(case: str) -> None:
    make, now_ms, kind, retry_after_s, reason = _FAILURE_STOPS[case]
    schedule, _ = make()
    beat = schedule.on_extend_failure(now_ms=now_ms, kind=kind, retry_after_s=retry_after_s)
    assert beat.is_stop and not beat.fresh_key and beat.reason == reason
    assert schedule.due_at_ms is None and schedule.last_beat is beat


def test_429_of_0_s_is_an_immediate_same_key_retry() -> None:
    schedule, _ = _primary()
    beat = schedule.on_extend_failure(now_ms=39000, kind=FailureKind.RATE_LIMITED, retry_after_s=0)
    assert beat.is_extend and not beat.fresh_key and beat.delay_ms == 0 and beat.due_at_ms == 39000


# -- adaptive deadline --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lead", "configured", "rtt", "expected"),
    [
        (9950, 7000, 50, 2237),  # floor((9950 - 1000) / 4)
        (60000, 7000, 50, 7000),  # never above the configured budget
        (60000, None, 50, 14750),
        (0, 7000, 50, 1000),  # no provable lead: the floor
        (3000, 7000, 800, 1600),  # the floor follows 2 x max rtt
        (math.inf, None, 0, 30000),
        (math.inf, 7000, 0, 7000),
        (60000, 500, 0, 500),  # a configured budget below the floor is kept
    ],
)
def test_extend_deadline(lead: float, configured: float | None, rtt: float, expected: int) -> None:
    assert extend_deadline_ms(lead, configured, rtt) == expected


def test_adaptive_deadline_gives_a_short_lease_a_positive_first_delay() -> None:
    fixed, fixed_beat = _primary(ttl=10000, budget=7000, sent=0, received=50, remaining=10000)
    assert fixed_beat.delay_ms == 0  # 7000 ms attempts cannot fit in a 10 s lease
    schedule, beat = _primary(ttl=10000, budget=7000, sent=0, received=50, remaining=10000, adaptive=True)
    assert schedule.attempt_deadline_ms == 2237  # floor((9950 - 1000) / 4); 2 x rtt 50 < 1000
    assert schedule.attempt_budget_ms == schedule.attempt_deadline_ms
    assert beat.delay_ms == 9950 - (2 * 2237 + 1000)
    assert beat.delay_ms > 0


# -- simulated server ---------------------------------------------------------------------------------


@attrs.define
class _Server:
    """Additive extends (expires += ttl), remaining = expires - now, a tenant extension limit."""

    ttl: int
    expires_at: float
    fieldless: bool = False
    max_extensions: int = 10
    extensions: int = 0
    lapsed: bool = False

    def extend(self, now: float) -> int | None:
        if now > self.expires_at:
            self.lapsed = True
            return None
        if self.extensions >= self.max_extensions:
            return None
        self.extensions += 1
        self.expires_at += self.ttl
        return int(self.expires_at)


def _simulate(
    *,
    ttl: int,
    duration: float,
    budget: int,
    adaptive: bool,
    rtt: float = 80,
    fieldless: bool = False,
    fail_at: frozenset[int] = frozenset(),
) -> tuple[_Server, LeaseSchedule, list[Beat]]:
    """Drive one schedule against the server until ``duration``; failing attempts time out."""
    server = _Server(ttl=ttl, expires_at=0 + ttl)
    schedule = _new(ttl, budget, adaptive)
    beat = schedule.on_create_success(
        sent_at_ms=0, received_at_ms=rtt, expires_at_ms=ttl, remaining_ttl_ms=None if fieldless else int(ttl - rtt)
    )
    beats = [beat]
    attempt = 0
    while beat.is_extend and beat.due_at_ms < duration:
        sent = beat.due_at_ms
        assert sent < server.expires_at, "a beat was scheduled after the lease ended"
        if attempt in fail_at:
            deadline = schedule.attempt_deadline_ms
            assert deadline is not None
            beat = schedule.on_extend_failure(now_ms=sent + deadline, kind=FailureKind.TRANSPORT)
        else:
            expires = server.extend(sent + rtt / 2)
            assert expires is not None, "the server refused an extend"
            beat = schedule.on_extend_success(
                sent_at_ms=sent,
                received_at_ms=sent + rtt,
                expires_at_ms=expires,
                remaining_ttl_ms=None if fieldless else int(expires - (sent + rtt / 2)),
            )
        attempt += 1
        beats.append(beat)
    return server, schedule, beats


@pytest.mark.parametrize("fieldless", [False, True])
@pytest.mark.parametrize("adaptive", [True, False])
def test_ten_second_lease_survives_a_sixty_second_call(adaptive: bool, fieldless: bool) -> None:
    server, _, beats = _simulate(ttl=10000, duration=60000, budget=7000, adaptive=adaptive, fieldless=fieldless)
    assert not any(b.is_stop for b in beats)
    assert server.extensions <= 10
    assert not server.lapsed
    # The lease is still live when the commit goes out at 60 s (and until the next beat would be due).
    assert server.expires_at > 60000 + 1000
    assert beats[-1].due_at_ms < server.expires_at


def test_ten_second_lease_with_adaptive_deadline_does_not_prime_immediately() -> None:
    _, _, beats = _simulate(ttl=10000, duration=60000, budget=7000, adaptive=True)
    assert all(b.delay_ms > 0 for b in beats)


@pytest.mark.parametrize("failing_attempt", range(7))
def test_ten_second_lease_survives_one_timed_out_extend(failing_attempt: int) -> None:
    server, _, beats = _simulate(
        ttl=10000, duration=60000, budget=7000, adaptive=True, fail_at=frozenset({failing_attempt})
    )
    assert not any(b.is_stop for b in beats)
    assert any(not b.fresh_key for b in beats)  # the timed-out beat was retried with its key
    assert server.extensions <= 10 and not server.lapsed
    assert server.expires_at > 60000


# -- fallback -----------------------------------------------------------------------------------------


def _fallback(*, ttl: int = 60000, budget: int = 7000, adaptive: bool = False) -> tuple[LeaseSchedule, Beat]:
    schedule = _new(ttl, budget, adaptive)
    beat = schedule.on_create_success(
        sent_at_ms=0, received_at_ms=50, expires_at_ms=1_000_000 + ttl, remaining_ttl_ms=None
    )
    return schedule, beat


@pytest.mark.parametrize(("ttl", "delay"), [(60000, 30000), (600000, 30000), (40000, 20000), (20000, 4950)])
def test_fallback_first_beat_is_not_immediate(ttl: int, delay: int) -> None:
    schedule, beat = _fallback(ttl=ttl)
    assert schedule.mode is LeaseMode.FALLBACK
    # min(ttl - rtt - retry_reserve, ttl / 2, 30 s); for 20 s: 19950 - 15000.
    assert beat.is_extend and beat.fresh_key and beat.delay_ms == delay


def test_fallback_first_beat_is_immediate_only_when_the_requested_lease_cannot_hold_a_retry() -> None:
    _, beat = _fallback(ttl=10000, budget=7000)
    assert beat.delay_ms == 0
    _, adaptive_beat = _fallback(ttl=10000, budget=7000, adaptive=True)
    assert adaptive_beat.delay_ms == 9950 - (2 * 2237 + 1000)


def test_fallback_normal_regime_beats_at_half_the_grant() -> None:
    schedule, beat = _fallback()
    beat = schedule.on_extend_success(
        sent_at_ms=30050, received_at_ms=30100, expires_at_ms=1_000_000 + 120000, remaining_ttl_ms=None
    )
    assert schedule.regime is Regime.NORMAL
    assert beat.delay_ms == 30000 and beat.note is None


def test_fallback_normal_regime_has_a_one_second_floor() -> None:
    schedule = LeaseSchedule(requested_ttl_ms=1500, request_timeout_budget_ms=100, clock_ms=0)
    schedule.on_create_success(sent_at_ms=0, received_at_ms=10, expires_at_ms=1500, remaining_ttl_ms=None)
    beat = schedule.on_extend_success(sent_at_ms=20, received_at_ms=30, expires_at_ms=3000, remaining_ttl_ms=None)
    assert schedule.regime is Regime.NORMAL and beat.delay_ms == 1000


def test_fallback_max_lead_clamp_holds_the_cadence_and_surfaces_budget_burn() -> None:
    # The server holds expiry at now + 60 s: a beat 30 s later measures a 30 s "grant".
    schedule, _ = _fallback()
    beat = schedule.on_extend_success(
        sent_at_ms=30050, received_at_ms=30100, expires_at_ms=1_000_000 + 90000, remaining_ttl_ms=None
    )
    assert schedule.regime is Regime.MAX_LEAD
    assert beat.delay_ms == 30000
    assert beat.note is not None and "MAX_EXTENSIONS_EXCEEDED" in beat.note
    # An echo of the same spacing keeps the held cadence (no tightening).
    beat = schedule.on_extend_success(
        sent_at_ms=60100, received_at_ms=60150, expires_at_ms=1_000_000 + 120050, remaining_ttl_ms=None
    )
    assert schedule.regime is Regime.MAX_LEAD and beat.delay_ms == 30000


def test_fallback_zero_grant_is_max_lead() -> None:
    schedule, _ = _fallback()
    beat = schedule.on_extend_success(
        sent_at_ms=30050, received_at_ms=30100, expires_at_ms=1_000_000 + 60000, remaining_ttl_ms=None
    )
    assert schedule.regime is Regime.MAX_LEAD and beat.delay_ms == 30000


def test_fallback_grant_cap_tightens_to_half_the_grant() -> None:
    schedule, _ = _fallback()
    beat = schedule.on_extend_success(
        sent_at_ms=30050, received_at_ms=30100, expires_at_ms=1_000_000 + 70000, remaining_ttl_ms=None
    )
    assert schedule.regime is Regime.GRANT_CAPPED
    assert beat.delay_ms == 5000


def test_fallback_skip_rule_defers_beats_while_lead_min_is_large() -> None:
    # A generous server granting 2 x ttl per extend: the lead lower bound grows, and beats are pushed out
    # to when lead_min has come down to 1.5 x the last grant instead of firing only to be skipped.
    ttl = 60000
    schedule = LeaseSchedule(requested_ttl_ms=ttl, request_timeout_budget_ms=1000, clock_ms=0)
    beat = schedule.on_create_success(sent_at_ms=0, received_at_ms=10, expires_at_ms=ttl, remaining_ttl_ms=None)
    expires = ttl
    deferred = 0
    for _ in range(8):
        sent = beat.due_at_ms
        expires += 2 * ttl
        beat = schedule.on_extend_success(
            sent_at_ms=sent, received_at_ms=sent + 10, expires_at_ms=expires, remaining_ttl_ms=None
        )
        assert beat.is_extend
        grant = 2 * ttl
        if beat.delay_ms > grant // 2:
            deferred += 1
        # Never a beat the skip rule would skip (up to rounding).
        assert schedule.lead_min_ms(beat.due_at_ms) <= 1.5 * grant + 1
    assert deferred > 0


def test_fallback_failure_before_any_grant_uses_the_requested_ttl() -> None:
    schedule, beat = _fallback()
    failed = schedule.on_extend_failure(now_ms=beat.due_at_ms + 100, kind=FailureKind.TRANSPORT)
    # assumed lead 60000 - 30150 = 29850; window 29850 - 7000 - 1000 = 21850; min(30000, 7462, 21850)
    assert failed.is_extend and not failed.fresh_key and failed.delay_ms == 7462


def test_fallback_failure_after_a_grant_uses_the_sound_lower_bound() -> None:
    schedule, _ = _fallback()
    schedule.on_extend_success(
        sent_at_ms=30050, received_at_ms=30100, expires_at_ms=1_000_000 + 120000, remaining_ttl_ms=None
    )
    # lead_min at 60100: max(60000 - 60100, 60000 - (60100 - 30050)) = 29950; window 21950.
    assert schedule.lead_min_ms(60100) == 29950
    failed = schedule.on_extend_failure(now_ms=60100, kind=FailureKind.SERVER_ERROR)
    assert failed.delay_ms == 7487
    # Past the bound, no retry.
    assert schedule.on_extend_failure(now_ms=85000, kind=FailureKind.SERVER_ERROR).is_stop


def test_modes_switch_when_the_field_appears_and_disappears() -> None:
    schedule, beat = _primary(budget=7000, remaining=61500)  # lead 60000 at 1500
    assert schedule.mode is LeaseMode.PRIMARY
    # The next answer lacks the field: fallback, with the primary lead floor seeding lead_min.
    beat = schedule.on_extend_success(
        sent_at_ms=46500, received_at_ms=46600, expires_at_ms=10**12 + 61500 + 60000, remaining_ttl_ms=None
    )
    assert schedule.mode is LeaseMode.FALLBACK and schedule.regime is Regime.NORMAL
    assert schedule.lead_min_ms(46600) == 60000 + 60000 - (46600 - 1500)
    assert beat.is_extend and beat.delay_ms == 30000
    beat = schedule.on_extend_success(
        sent_at_ms=76600, received_at_ms=76700, expires_at_ms=10**12 + 181500, remaining_ttl_ms=60000
    )
    assert schedule.mode is LeaseMode.PRIMARY
    assert beat.delay_ms == 60000 - 100 - (2 * 7000 + 3000)


def test_fallback_create_with_unreliable_timing_beats_at_once() -> None:
    schedule = _new(60000, 7000, False)
    beat = schedule.on_create_success(sent_at_ms=100, received_at_ms=50, expires_at_ms=10**6, remaining_ttl_ms=None)
    assert schedule.mode is LeaseMode.FALLBACK and schedule.max_rtt_ms == 0
    assert beat.is_extend and beat.fresh_key and beat.delay_ms == 0 and beat.due_at_ms == 50


def test_fallback_extend_with_unreliable_timing_still_measures_the_grant() -> None:
    schedule, first = _fallback()
    assert first.delay_ms == 30000
    beat = schedule.on_extend_success(
        sent_at_ms=30050, received_at_ms=math.nan, expires_at_ms=1_000_000 + 120000, remaining_ttl_ms=None
    )
    # The grant (60000) is still measured and classified, but the delay is 0: an immediate fresh beat.
    assert schedule.regime is Regime.NORMAL and schedule.max_rtt_ms == 50
    assert beat.is_extend and beat.fresh_key and beat.delay_ms == 0
    # A second success with no positive delay stops (zero-delay guard).
    again = schedule.on_extend_success(
        sent_at_ms=30100, received_at_ms=30000, expires_at_ms=1_000_000 + 180000, remaining_ttl_ms=None
    )
    assert again.is_stop and again.reason == STOP_SHORT_LEASE


# -- properties ---------------------------------------------------------------------------------------

_answers = st.lists(
    st.one_of(
        st.tuples(
            st.just("ok"),
            st.integers(min_value=0, max_value=5000),  # time before the attempt is sent
            st.integers(min_value=0, max_value=3000),  # rtt
            st.one_of(st.none(), st.integers(min_value=-1000, max_value=300000)),  # remaining_ttl_ms
            st.integers(min_value=-60000, max_value=120000),  # grant
        ),
        st.tuples(
            st.sampled_from([k.value for k in FailureKind]),
            st.integers(min_value=0, max_value=5000),
            st.integers(min_value=0, max_value=12000),  # time the failed attempt took
            st.one_of(st.none(), st.integers(min_value=-1, max_value=60)),  # Retry-After
            st.just(0),
        ),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(
    ttl=st.integers(min_value=1000, max_value=600000),
    budget=st.one_of(st.none(), st.integers(min_value=1, max_value=60000)),
    adaptive=st.booleans(),
    create_rtt=st.integers(min_value=0, max_value=3000),
    create_remaining=st.one_of(st.none(), st.integers(min_value=0, max_value=600000)),
    answers=_answers,
)
def test_schedule_invariants(
    ttl: int,
    budget: int | None,
    adaptive: bool,
    create_rtt: int,
    create_remaining: int | None,
    answers: list[tuple[str, int, int, int | None, int]],
) -> None:
    schedule = _new(ttl, budget, adaptive)
    expires = 10**9
    beat = schedule.on_create_success(
        sent_at_ms=0, received_at_ms=create_rtt, expires_at_ms=expires, remaining_ttl_ms=create_remaining
    )
    now = float(create_rtt)
    previous_zero = False
    for what, setup, took, extra, grant in answers:
        if beat.is_stop:
            assert beat.reason
            break
        assert beat.delay_ms >= 0
        assert beat.due_at_ms >= now - 1e-9 or beat.delay_ms == 0
        assert not (previous_zero and beat.delay_ms == 0), "two zero-delay beats in a row"
        if schedule.mode is LeaseMode.PRIMARY and schedule.lead_floor_ms > 0:
            assert beat.due_at_ms <= schedule.estimated_lease_end_ms
        deadline = schedule.attempt_deadline_ms
        assert deadline is None or deadline >= 1
        previous_zero = beat.delay_ms == 0
        sent = max(now, beat.due_at_ms) + setup
        if what == "ok":
            expires += grant
            beat = schedule.on_extend_success(
                sent_at_ms=sent, received_at_ms=sent + took, expires_at_ms=expires, remaining_ttl_ms=extra
            )
            assert beat.is_stop or beat.fresh_key
        else:
            beat = schedule.on_extend_failure(now_ms=sent + took, kind=FailureKind(what), retry_after_s=extra)
            assert beat.is_stop or not beat.fresh_key
        now = sent + took
