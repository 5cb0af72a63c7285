"""The settlement retry policy (runcycles._protocol.settlement): deterministic with seeded random sources."""

from __future__ import annotations

import random

import pytest
import tenacity

from runcycles._protocol.settle_machine import RetryPolicy
from runcycles._protocol.settlement import (
    MAX_RETRY_AFTER_MS,
    SettlementWait,
    backoff_ms,
    clamp_retry_after,
    retry_state,
    settlement_retrying,
    settlement_stop,
    settlement_wait,
)

DEFAULTS = {"initial_ms": 500, "multiplier": 2.0, "max_ms": 30000}


def test_backoff_grows_and_caps() -> None:
    assert [backoff_ms(n, **DEFAULTS) for n in range(8)] == [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]


def test_backoff_is_overflow_safe() -> None:
    assert backoff_ms(100000, **DEFAULTS) == 30000
    assert backoff_ms(5000, initial_ms=500, multiplier=10.0, max_ms=30000) == 30000


def test_delay_without_jitter_is_exact() -> None:
    assert [SettlementWait(**DEFAULTS, jitter=0).delay_ms(n) for n in range(4)] == [500, 1000, 2000, 4000]


def test_jitter_adds_at_most_a_quarter_and_is_deterministic_with_a_seed() -> None:
    first = [SettlementWait(**DEFAULTS, rng=random.Random(7)).delay_ms(n) for n in range(10)]
    second = [SettlementWait(**DEFAULTS, rng=random.Random(7)).delay_ms(n) for n in range(10)]
    assert first == second
    for n, delay in enumerate(first):
        base = backoff_ms(n, **DEFAULTS)
        assert base <= delay <= base * 1.25
    # The jitter really varies (not a constant offset).
    wait = SettlementWait(**DEFAULTS, rng=random.Random(3))
    assert len({wait.delay_ms(0) for _ in range(20)}) > 5


def test_retry_after_clamp_keeps_sane_values_and_drops_negative_ones() -> None:
    assert clamp_retry_after(5000) == 5000
    assert clamp_retry_after(0) == 0
    assert clamp_retry_after(None) is None
    assert clamp_retry_after(-5) is None


def test_retry_after_is_clamped_to_one_hour() -> None:
    assert MAX_RETRY_AFTER_MS == 3_600_000
    assert clamp_retry_after(10 * 3_600_000) == 3_600_000


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="multiplier"):
        SettlementWait(initial_ms=500, multiplier=0.5, max_ms=30000)
    with pytest.raises(ValueError, match="attempt"):
        backoff_ms(-1, **DEFAULTS)
    with pytest.raises(ValueError, match="max_attempts"):
        settlement_stop(-1)


def test_the_policy_retries_max_attempts_times_with_its_seeded_jitter() -> None:
    policy = RetryPolicy(max_attempts=2, initial_ms=500, multiplier=2.0, max_ms=30000, rng=random.Random(5))
    retrying = policy.retrying()
    assert [retrying.stop(retry_state(retrying, n)) for n in range(1, 4)] == [False, False, True]
    again = RetryPolicy(max_attempts=2, initial_ms=500, multiplier=2.0, max_ms=30000, rng=random.Random(5)).retrying()
    assert [retrying.wait(retry_state(retrying, n)) for n in (1, 2)] == [
        again.wait(retry_state(again, n)) for n in (1, 2)
    ]
    never = RetryPolicy(max_attempts=0).retrying()
    assert never.stop(retry_state(never, 1))


def test_tenacity_wait_uses_attempt_number_as_the_retry_count() -> None:
    wait = settlement_wait(**DEFAULTS, jitter=0)
    assert isinstance(wait, tenacity.wait.wait_base)
    policy = tenacity.Retrying(wait=wait)
    assert [wait(retry_state(policy, n)) for n in (1, 2, 3, 10)] == [0.5, 1.0, 2.0, 30.0]


def test_tenacity_wait_jitter_matches_the_function_with_the_same_seed() -> None:
    wait = SettlementWait(**DEFAULTS, rng=random.Random(11))
    policy = tenacity.Retrying(wait=wait)
    same = SettlementWait(**DEFAULTS, rng=random.Random(11))
    for attempts_made in range(1, 6):
        expected = same.delay_ms(attempts_made - 1)
        assert wait(retry_state(policy, attempts_made)) == expected / 1000


def test_tenacity_stop_allows_the_first_attempt_plus_max_attempts_retries() -> None:
    policy = settlement_retrying(max_attempts=2, **DEFAULTS)
    assert [policy.stop(retry_state(policy, n)) for n in (1, 2, 3)] == [False, False, True]
    never = settlement_retrying(max_attempts=0, **DEFAULTS)
    assert never.stop(retry_state(never, 1))


def test_the_policy_drives_a_real_tenacity_loop_without_sleeping() -> None:
    slept: list[float] = []
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("no answer")
        return "settled"

    policy = settlement_retrying(max_attempts=5, **DEFAULTS, jitter=0).copy(sleep=slept.append)
    assert policy(flaky) == "settled"
    assert slept == [0.5, 1.0]


def test_the_tenacity_policy_gives_up_after_max_attempts_retries() -> None:
    slept: list[float] = []
    calls: list[int] = []

    def always_down() -> None:
        calls.append(1)
        raise ConnectionError("down")

    policy = settlement_retrying(max_attempts=1, **DEFAULTS, jitter=0).copy(sleep=slept.append)
    with pytest.raises(ConnectionError):
        policy(always_down)
    assert len(calls) == 2 and slept == [0.5]
