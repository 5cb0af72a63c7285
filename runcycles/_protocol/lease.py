"""Heartbeat scheduling (placeholder implementation of the normative algorithm; pure, no clock of its own)."""

from __future__ import annotations

import enum
import math

import attrs

__all__ = ["Beat", "FailureKind", "LeaseSchedule"]


class FailureKind(enum.Enum):
    """Why an extend attempt failed."""

    TRANSPORT = "transport"
    SERVER_ERROR = "server_error"
    RATE_LIMITED = "rate_limited"
    AMBIGUOUS = "ambiguous"
    PERMANENT = "permanent"
    OTHER_4XX = "other_4xx"


@attrs.frozen(kw_only=True)
class Beat:
    """The next step: extend at ``due_at_ms`` (with a fresh key or the same one), or stop."""

    due_at_ms: float = 0.0
    fresh_key: bool = True
    stop: bool = False
    reason: str | None = None

    @property
    def is_stop(self) -> bool:
        """True when the heartbeat must stop."""
        return self.stop


class LeaseSchedule:
    """One live reservation's schedule."""

    def __init__(
        self,
        *,
        requested_ttl_ms: int,
        request_timeout_budget_ms: float | None,
        clock_ms: float,
        adaptive_deadline: bool = False,
    ) -> None:
        self.requested_ttl_ms = requested_ttl_ms
        self.timeout_budget = math.inf if request_timeout_budget_ms is None else float(request_timeout_budget_ms)
        self.adaptive = adaptive_deadline
        self.max_rtt = 0.0
        self.lead_floor = 0.0
        self.established_at = clock_ms
        self.zero_streak = 0
        self.last_failure: tuple[float, float] | None = None
        self.attempt_deadline_ms: float = self.timeout_budget

    def _budget(self) -> float:
        budget = self.timeout_budget
        if self.adaptive and self.lead_floor > 0:
            margin = max(1000.0, 2 * self.max_rtt)
            budget = min(budget, max(1000.0, 2 * self.max_rtt, math.floor((self.lead_floor - margin) / 4)))
        return max(budget, 1000.0, 2 * self.max_rtt)

    def _success(self, sent: float, received: float, remaining: int | None) -> Beat:
        rtt = max(0.0, received - sent)
        self.max_rtt = max(self.max_rtt, rtt)
        self.last_failure = None
        lead = self.requested_ttl_ms / 2 if remaining is None else remaining
        self.lead_floor = max(0.0, math.floor(lead - rtt))
        self.established_at = received
        budget = math.ceil(self._budget())
        self.attempt_deadline_ms = budget
        margin = math.ceil(max(1000.0, 2 * self.max_rtt))
        delay = max(0.0, math.floor(self.lead_floor - (2 * budget + margin)))
        if delay == 0:
            self.zero_streak += 1
            if self.zero_streak > 1:
                return Beat(stop=True, reason="lease is shorter than the retry-safety budget")
        else:
            self.zero_streak = 0
        return Beat(due_at_ms=received + delay, fresh_key=True)

    def on_create_success(
        self, *, sent_at_ms: float, received_at_ms: float, expires_at_ms: int | None, remaining_ttl_ms: int | None
    ) -> Beat:
        """Schedule the first beat from the create response."""
        return self._success(sent_at_ms, received_at_ms, remaining_ttl_ms)

    def on_extend_success(
        self, *, sent_at_ms: float, received_at_ms: float, expires_at_ms: int | None, remaining_ttl_ms: int | None
    ) -> Beat:
        """Schedule the next beat from an extend response."""
        return self._success(sent_at_ms, received_at_ms, remaining_ttl_ms)

    def on_extend_failure(self, *, now_ms: float, kind: FailureKind, retry_after_s: int | None) -> Beat:
        """Retry with the same key within the window, or stop."""
        if kind in (FailureKind.PERMANENT, FailureKind.OTHER_4XX):
            return Beat(stop=True, reason=f"extend rejected ({kind.value})")
        elapsed = max(0.0, now_ms - self.established_at)
        lead = max(0.0, math.floor(self.lead_floor - elapsed))
        budget = math.ceil(self._budget())
        margin = math.ceil(max(1000.0, 2 * self.max_rtt))
        window = lead - budget - margin
        if window < 0:
            return Beat(stop=True, reason="no safe retry window left before the lease ends")
        if self.last_failure is not None:
            last_now, last_window = self.last_failure
            if (now_ms <= last_now and window >= last_window) or (window == 0 and last_window == 0):
                return Beat(stop=True, reason="no progress between failed extend attempts")
        self.last_failure = (now_ms, window)
        if kind is FailureKind.RATE_LIMITED:
            if retry_after_s is None or retry_after_s * 1000 > window:
                return Beat(stop=True, reason="rate limited beyond the safe retry window")
            delay = float(retry_after_s * 1000)
        else:
            delay = math.floor(min(30000.0, lead / 4, window))
        return Beat(due_at_ms=now_ms + delay, fresh_key=False)
