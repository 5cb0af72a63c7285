"""The background settlement retry policy: how long to wait before retrying an unsettled spend, and when to stop.

Pure: nothing here sleeps. The decisions that use this policy are `_protocol.settle_machine`'s; the retry loop
is a generator in `runcycles.lifecycle` that yields its own sleep effect.

Backoff for retry number ``attempt`` (0-based: the first retry is attempt 0)::

    base  = min(initial_ms * multiplier ** attempt, max_ms)      (overflow-safe: huge growth is max_ms)
    delay = floor(base + uniform(0, jitter * base))              (jitter 0.25 by default)
    delay = max(delay, min(retry_after_ms, 1 hour))              when the server sent Retry-After

Use of tenacity: the policy is expressed as tenacity's own policy objects, so it can also drive a plain
``tenacity.Retrying`` (e.g. in tooling), without tenacity's sleeping loop in the library itself:
`SettlementWait` is a ``tenacity.wait.wait_base`` (a callable of a ``RetryCallState`` returning seconds)
computing the backoff above from ``attempt_number`` (tenacity's 1-based count of attempts made: after the
first failed attempt it is 1, i.e. retry number 0), and `settlement_stop` is ``stop_after_attempt`` counting
the first attempt plus ``max_attempts`` retries. `settlement_retrying` bundles both into a
``tenacity.Retrying`` whose ``wait`` / ``stop`` a driver may query with `retry_state`. The Retry-After floor
is not part of the tenacity objects (it is a property of one answer, not of the attempt count); the
settlement machine applies it, clamped by `clamp_retry_after`. The random source of the jitter is injected
(``rng``) so tests are deterministic.
"""

from __future__ import annotations

import math
import random

import tenacity

__all__ = [
    "MAX_RETRY_AFTER_MS",
    "SettlementWait",
    "backoff_ms",
    "clamp_retry_after",
    "retry_state",
    "settlement_retrying",
    "settlement_stop",
    "settlement_wait",
]

MAX_RETRY_AFTER_MS = 3_600_000
"""A server's Retry-After is honoured up to one hour; longer values are clamped to it."""

DEFAULT_JITTER = 0.25


def _check(initial_ms: float, multiplier: float, max_ms: float, jitter: float) -> None:
    if initial_ms < 0:
        raise ValueError("initial_ms must be non-negative")
    if multiplier < 1:
        raise ValueError("multiplier must be at least 1")
    if max_ms < 0:
        raise ValueError("max_ms must be non-negative")
    if not 0 <= jitter <= 1:
        raise ValueError("jitter must be between 0 and 1")


def backoff_ms(attempt: int, *, initial_ms: float, multiplier: float, max_ms: float) -> float:
    """``min(initial_ms * multiplier ** attempt, max_ms)`` without jitter; overflow gives ``max_ms``."""
    if attempt < 0:
        raise ValueError("attempt must be non-negative")
    try:
        grown = initial_ms * multiplier**attempt
    except OverflowError:
        return float(max_ms)
    if not math.isfinite(grown):
        return float(max_ms)
    return float(min(grown, max_ms))


def _jittered(base: float, jitter: float, rng: random.Random | None) -> float:
    if base <= 0 or jitter <= 0:
        return base
    source = rng if rng is not None else random
    return base + source.uniform(0.0, jitter * base)


def clamp_retry_after(retry_after_ms: int | None) -> int | None:
    """A server's Retry-After in milliseconds, clamped to `MAX_RETRY_AFTER_MS` (``None`` when absent or negative).

    The one place the clamp lives: the settlement machine and the replay's read both use it.
    """
    if retry_after_ms is None or retry_after_ms < 0:
        return None
    return min(int(retry_after_ms), MAX_RETRY_AFTER_MS)


class SettlementWait(tenacity.wait.wait_base):
    """tenacity wait strategy: the settlement backoff with jitter, in seconds (tenacity's unit)."""

    def __init__(
        self,
        *,
        initial_ms: int,
        multiplier: float,
        max_ms: int,
        jitter: float = DEFAULT_JITTER,
        rng: random.Random | None = None,
    ) -> None:
        _check(initial_ms, multiplier, max_ms, jitter)
        self.initial_ms = initial_ms
        self.multiplier = multiplier
        self.max_ms = max_ms
        self.jitter = jitter
        self.rng = rng

    def delay_ms(self, attempt: int) -> int:
        """The delay before retry number ``attempt`` (0-based), in milliseconds."""
        base = backoff_ms(attempt, initial_ms=self.initial_ms, multiplier=self.multiplier, max_ms=self.max_ms)
        return math.floor(_jittered(base, self.jitter, self.rng))

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        """Seconds to wait after attempt ``retry_state.attempt_number`` failed."""
        return self.delay_ms(max(0, retry_state.attempt_number - 1)) / 1000.0


def settlement_wait(
    *,
    initial_ms: int,
    multiplier: float,
    max_ms: int,
    jitter: float = DEFAULT_JITTER,
    rng: random.Random | None = None,
) -> tenacity.wait.wait_base:
    """The settlement backoff as a tenacity wait strategy (see `SettlementWait`)."""
    return SettlementWait(initial_ms=initial_ms, multiplier=multiplier, max_ms=max_ms, jitter=jitter, rng=rng)


def settlement_stop(max_attempts: int) -> tenacity.stop.stop_base:
    """Stop after the first attempt plus ``max_attempts`` retries (``max_attempts`` 0: never retry)."""
    if max_attempts < 0:
        raise ValueError("max_attempts must be non-negative")
    return tenacity.stop_after_attempt(max_attempts + 1)


def settlement_retrying(
    *,
    max_attempts: int,
    initial_ms: int,
    multiplier: float,
    max_ms: int,
    jitter: float = DEFAULT_JITTER,
    rng: random.Random | None = None,
) -> tenacity.Retrying:
    """A ``tenacity.Retrying`` carrying the settlement wait and stop (query it, do not let it sleep)."""
    return tenacity.Retrying(
        wait=settlement_wait(initial_ms=initial_ms, multiplier=multiplier, max_ms=max_ms, jitter=jitter, rng=rng),
        stop=settlement_stop(max_attempts),
        reraise=True,
    )


def retry_state(policy: tenacity.Retrying, attempts_made: int) -> tenacity.RetryCallState:
    """A ``RetryCallState`` after ``attempts_made`` attempts, for ``policy.wait(state)`` / ``policy.stop(state)``."""
    state = tenacity.RetryCallState(policy, fn=None, args=(), kwargs={})
    state.attempt_number = attempts_made
    return state
