"""Background settlement retry policy (placeholder until the full module lands)."""

from __future__ import annotations

import random

__all__ = ["next_retry_delay_ms"]

_MAX_RETRY_AFTER_MS = 3_600_000


def next_retry_delay_ms(
    attempt: int,
    *,
    initial_ms: int,
    multiplier: float,
    max_ms: int,
    retry_after_ms: int | None = None,
    rng: random.Random | None = None,
) -> int:
    """``min(initial * multiplier**attempt, max)`` plus up to 25 % jitter, floored by Retry-After (<= 1 h)."""
    base = min(initial_ms * multiplier**attempt, max_ms)
    jitter = (rng or random).uniform(0, base * 0.25)
    delay = int(base + jitter)
    if retry_after_ms is not None:
        delay = max(delay, min(retry_after_ms, _MAX_RETRY_AFTER_MS))
    return delay
