"""The settlement retry policy (runcycles._protocol.settlement): deterministic with seeded random sources."""

from __future__ import annotations

import random

import pytest
import tenacity

from runcycles._protocol.settlement import (
    MAX_RETRY_AFTER_MS,
    SettlementWait,
    backoff_ms,
    next_retry_delay_ms,
    retry_state,
    settlement_retrying,
    settlement_stop,
    settlement_wait,
    should_retry,
)

DEFAULTS = {"initial_ms": 500, "multiplier": 2.0, "max_ms": 30000}


def test_backoff_grows_and_caps() -> None:
    assert [backoff_ms(n, **DEFAULTS) for n in range(8)] == [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]


def test_backoff_is_overflow_safe() -> None:
    assert backoff_ms(100000, **DEFAULTS) == 30000
    assert backoff_ms(5000, initial_ms=500, multiplier=10.0, max_ms=30000) == 30000


def test_delay_without_jitter_is_exact() -> None:
    assert [next_retry_delay_ms(n, **DEFAULTS, jitter=0) for n in range(4)] == [500, 1000, 2000, 4000]


def test_jitter_adds_at_most_a_quarter_and_is_deterministic_with_a_seed() -> None:
    first = [next_retry_delay_ms(n, **DEFAULTS, rng=random.Random(7)) for n in range(10)]
    second = [next_retry_delay_ms(n, **DEFAULTS, rng=random.Random(7)) for n in range(10)]
    assert first == second
    for n, delay in enumerate(first):
        base = backoff_ms(n, **DEFAULTS)
        assert base <= delay <= base * 1.25
    # The jitter really varies (not a constant offset).
    rng = random.Random(3)
    assert len({next_retry_delay_ms(0, **DEFAULTS, rng=rng) for _ in range(20)}) > 5


def test_retry_after_is_a_floor() -> None:
    rng = random.Random(1)
    assert next_retry_delay_ms(0, **DEFAULTS, retry_after_ms=5000, rng=rng) == 5000
    # A Retry-After shorter than the backoff does not shorten it.
    assert next_retry_delay_ms(3, **DEFAULTS, retry_after_ms=100, jitter=0) == 4000
    # Zero or negative values are ignored.
    assert next_retry_delay_ms(0, **DEFAULTS, retry_after_ms=-5, jitter=0) == 500


def test_retry_after_is_clamped_to_one_hour() -> None:
    assert MAX_RETRY_AFTER_MS == 3_600_000
    assert next_retry_delay_ms(0, **DEFAULTS, retry_after_ms=10 * 3_600_000, jitter=0) == 3_600_000


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="multiplier"):
        next_retry_delay_ms(0, initial_ms=500, multiplier=0.5, max_ms=30000)
    with pytest.raises(ValueError, match="attempt"):
        backoff_ms(-1, **DEFAULTS)
    with pytest.raises(ValueError, match="max_attempts"):
        settlement_stop(-1)


def test_should_retry_counts_retries() -> None:
    assert [should_retry(n, max_attempts=2) for n in range(4)] == [True, True, False, False]
    assert not should_retry(0, max_attempts=5, enabled=False)
    assert not should_retry(0, max_attempts=0)


def test_tenacity_wait_uses_attempt_number_as_the_retry_count() -> None:
    wait = settlement_wait(**DEFAULTS, jitter=0)
    assert isinstance(wait, tenacity.wait.wait_base)
    policy = tenacity.Retrying(wait=wait)
    assert [wait(retry_state(policy, n)) for n in (1, 2, 3, 10)] == [0.5, 1.0, 2.0, 30.0]


def test_tenacity_wait_jitter_matches_the_function_with_the_same_seed() -> None:
    wait = SettlementWait(**DEFAULTS, rng=random.Random(11))
    policy = tenacity.Retrying(wait=wait)
    rng = random.Random(11)
    for attempts_made in range(1, 6):
        expected = next_retry_delay_ms(attempts_made - 1, **DEFAULTS, rng=rng)
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
