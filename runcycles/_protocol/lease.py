"""Heartbeat scheduling: when to extend a live reservation, with which key, and when to give up.

Pure and sans-I/O: nothing here sleeps, sends, or reads a clock. Every method takes the caller's monotonic
time in milliseconds; a `LeaseSchedule` turns the observed answers into `Beat` decisions.

Primary algorithm (NORMATIVE, whenever a response carries ``remaining_ttl_ms``)
-------------------------------------------------------------------------------
Implemented exactly as the protocol's extend section states, recomputed from each schema-valid 200 alone::

    rtt            = received_at - sent_at                      (per attempt; max_rtt seeded by the create)
    lead_floor     = floor(max(0, remaining_ttl_ms - rtt))
    attempt_budget = ceil(max(request_timeout_budget, 1000, 2 * max_rtt))    (None/unbounded -> +inf)
    safety_margin  = ceil(max(1000, 2 * max_rtt))
    retry_reserve  = 2 * attempt_budget + safety_margin
    next_delay     = floor(max(0, lead_floor - retry_reserve))  counted from response receipt

The beat is an absolute ``due_at_ms = received_at + next_delay``, so local setup time spent after the create
response arrived is deducted from the first delay. Arithmetic is overflow-safe (+inf, never wraparound).
Unreliable timing (negative or non-finite rtt) gives ``lead_floor = next_delay = 0``.

* Zero-delay guard: a success with ``next_delay = 0`` allows ONE immediate fresh extension; if that
  extension's success (including its same-key retries) also gives 0, the schedule stops ("lease is
  shorter than the retry-safety budget"). This schedule is slightly stricter than the spec: it never
  returns two zero-delay beats in a row, of any kind (a zero-window immediate retry right after an
  immediate fresh beat stops instead).
* Transient extend failure (TRANSPORT, SERVER_ERROR, RATE_LIMITED, AMBIGUOUS)::

      current_lead_estimate = max(0, lead_floor - elapsed since that response's receipt)
      retry_window          = current_lead_estimate - attempt_budget - safety_margin   (not clamped)
      retry_window < 0      -> stop
      non-429               -> same key after min(30000, current_lead_estimate / 4, retry_window)
      429                   -> same key after 1000 * Retry-After only if <= retry_window, else stop

  ``retry_window == 0`` allows one immediate retry; a further failure stops. Consecutive failures with
  neither elapsed time nor window decreasing stop ("no progress").
* PERMANENT (expired, finalized, max extensions, tenant closed, not found) and OTHER_4XX stop; a stop
  never rotates the key (there is no further request at all).

Tighter per-extend deadline (``adaptive_deadline=True``)
--------------------------------------------------------
``retry_reserve`` needs ``2 * attempt_budget + safety_margin`` of lead, so the default 7000 ms budget
(connect 2000 + read 5000) leaves nothing of a 10 s lease. With an adaptive deadline the schedule chooses,
after every success, the deadline the caller must enforce on the next extend attempt
(`LeaseSchedule.attempt_deadline_ms`, see `extend_deadline_ms`): a quarter of the lead left after the safety
margin, never above the configured budget and never below ``max(1000, 2 * max_rtt)``. That deadline *is*
the request timeout budget of the formulas, so the spec's inequality
``attempt_budget < (lead_floor - safety_margin) / 2`` holds whenever the floor allows it, and the beat lands
about halfway through the lead. On an additive server (expiry += ttl per extend) the cadence converges to
one extension per ttl: a 10 s lease around a 60 s call needs about 7 extensions.

Fallback (NON-NORMATIVE, responses without ``remaining_ttl_ms``)
----------------------------------------------------------------
A measured grant is the difference between successive returned ``expires_at_ms`` (same server frame). The
schedule keeps a sound lower bound on the lead::

    lead_min(now) = max(base_lead + sum(grants since base) - (now - base_at),
                        last_grant - (now - last_extend_sent_at))

``base`` is the create (``base_lead = 0``, ``base_at`` = the create's *send* time, which is more
conservative than its receipt) or the last primary-mode response (its ``lead_floor`` at its receipt). The
second term is sound in both clamp regimes because an extend is only accepted while the lease is live, so
the lease right after it is at least the grant.

* First beat. The spec allows firing at once (guarding against a silently tiny initial lease, at the cost
  of a wasted extension under maximum-lead clamping, and with a tight lease budget of 10 extensions an
  immediate extend is costly too). Nothing in a field-less create response bounds the initial lease, and
  ``expires_at_ms`` cannot be compared to the local clock. This schedule assumes the server granted the
  requested ``ttl_ms`` (its usual behaviour; the reference server only caps ttl above one hour) and fires
  at ``min(primary next_delay for lead = ttl - rtt, ttl / 2, 30 s)``: as soon as needed for a same-key
  retry to fit, never later than the common ttl/2, and immediately only when even the requested lease
  cannot hold the retry reserve. The residual risk is a server that silently caps the *initial* lease
  below that first delay; the first extension's measured grant exposes a grant cap from then on.
* After each extend: grant >= 0.9 * ttl -> normal regime, cadence ``max(1000, grant / 2)``; grant <= 0
  or ``0.75 * elapsed <= grant <= 1.25 * elapsed`` (elapsed since the previous success) -> maximum-lead
  clamp, hold ``min(ttl / 2, 30 s)`` and put a note on the beat that the extension budget will deplete;
  otherwise a per-extend grant cap, cadence ``max(1000, grant / 2)``.
* The skip rule (skip a beat while ``lead_min >= 1.5 * last_grant``) is folded into the delay: the beat is
  deferred to ``lead_min - max(1.5 * last_grant, retry_reserve)`` when that is later than the cadence, so
  no beat is scheduled only to be skipped and the deferral never eats into the retry reserve.
* Failures use the primary rules with ``current_lead_estimate = lead_min(now)``, except before the first
  measured grant, where the assumed initial lease ``ttl - (now - create sent)`` is used (over-beating is
  preferred to lapsing; the spec's stated limits of the fallback apply).

Modes switch per response: a response with ``remaining_ttl_ms`` is scheduled by the primary algorithm from
that response alone; one without it by the fallback, whose bookkeeping runs all the time.
"""

from __future__ import annotations

import math

# The value types live in .beats; re-exported here so callers import the schedule and its vocabulary together.
from .beats import Beat, BeatKind, FailureKind, LeaseMode, Regime

__all__ = [
    "Beat",
    "BeatKind",
    "FailureKind",
    "LeaseMode",
    "LeaseSchedule",
    "Regime",
    "extend_deadline_ms",
]

_MIN_BUDGET_MS = 1000
_MAX_RETRY_DELAY_MS = 30000
_HELD_CADENCE_CAP_MS = 30000
_MIN_CADENCE_MS = 1000
# Adaptive deadline when neither a configured budget nor a finite lead bounds it.
_UNBOUNDED_DEADLINE_MS = 30000

STOP_SHORT_LEASE = "lease is shorter than the retry-safety budget"


_STOP_PERMANENT = "the reservation can no longer be extended (permanent error)"
_STOP_REJECTED = "extend rejected by the server; not retried with a new key"

_TRANSIENT = frozenset(
    {FailureKind.TRANSPORT, FailureKind.SERVER_ERROR, FailureKind.RATE_LIMITED, FailureKind.AMBIGUOUS}
)


def _ceil(value: float) -> float:
    return value if not math.isfinite(value) else math.ceil(value)


def _floor(value: float) -> float:
    return value if not math.isfinite(value) else math.floor(value)


def _safety_margin(max_rtt_ms: float) -> float:
    return _ceil(max(float(_MIN_BUDGET_MS), 2.0 * max_rtt_ms))


def _rate_limited_delay(retry_after_s: int | None, window: float) -> tuple[int, str | None]:
    """The same-key retry delay after a 429 (Retry-After, in seconds), or why there is none."""
    if retry_after_s is None or isinstance(retry_after_s, bool) or retry_after_s < 0:
        return 0, "rate limited without a usable Retry-After; the lease cannot be safely renewed"
    retry_after_ms = 1000 * retry_after_s
    if retry_after_ms > window:
        return 0, "rate limited beyond the safe retry window; the lease cannot be safely renewed"
    return int(retry_after_ms), None


def extend_deadline_ms(lead_ms: float, configured_budget_ms: float | None, max_rtt_ms: float) -> int:
    """A per-extend-attempt deadline that lets a lease of ``lead_ms`` hold the protocol's retry reserve.

    ``floor((lead - safety_margin) / 4)``, at most ``configured_budget_ms`` (``None`` or non-finite:
    unbounded) and at least ``max(1000, 2 * max_rtt)`` (the formulas never use a smaller budget anyway,
    unless the configured budget itself is smaller, which is then kept). With it, ``2 * budget +
    safety_margin`` is about half the lead, so the next beat lands about halfway through it. A lead of 0 or
    less gives the floor; an unbounded lead gives the configured budget (30 s if that is unbounded too).
    """
    rtt = max_rtt_ms if math.isfinite(max_rtt_ms) and max_rtt_ms > 0 else 0.0
    floor_ms = math.ceil(max(float(_MIN_BUDGET_MS), 2.0 * rtt))
    configured: float = math.inf
    if configured_budget_ms is not None and configured_budget_ms > 0:
        configured = configured_budget_ms
    target: float
    if math.isnan(lead_ms) or lead_ms <= 0:
        target = floor_ms
    elif math.isinf(lead_ms):
        target = _UNBOUNDED_DEADLINE_MS if math.isinf(configured) else configured
    else:
        target = max(floor_ms, math.floor((math.floor(lead_ms) - floor_ms) / 4))
    return max(1, math.ceil(min(target, configured)))


class LeaseSchedule:
    """The heartbeat schedule of one live reservation (mutable, not thread-safe: callers serialize).

    Feed it every outcome in order: `on_create_success` once, then `on_extend_success` /
    `on_extend_failure` for each extend attempt; each returns the next `Beat`. Before sending an extend,
    the caller enforces `attempt_deadline_ms` (``None``: no deadline of the schedule's own). After a stop,
    every call returns that stop again.
    """

    def __init__(
        self,
        *,
        requested_ttl_ms: int,
        request_timeout_budget_ms: float | None,
        clock_ms: float,
        adaptive_deadline: bool = False,
    ) -> None:
        if requested_ttl_ms <= 0:
            raise ValueError("requested_ttl_ms must be positive")
        self._ttl = requested_ttl_ms
        budget = request_timeout_budget_ms
        self._configured: float = math.inf if budget is None or not budget > 0 else float(budget)
        self._adaptive = adaptive_deadline
        self._deadline: float = self._configured
        self._max_rtt = 0.0
        self._mode: LeaseMode | None = None
        self._regime = Regime.UNKNOWN
        # Primary state: the lead floor of the last schema-valid field-bearing response, and its receipt.
        self._lead_floor = 0
        self._established_at = clock_ms
        # Fallback bookkeeping (kept in both modes).
        self._create_sent_at = clock_ms
        self._base_lead = 0.0
        self._base_at = clock_ms
        self._grants = 0
        self._last_expires: int | None = None
        self._last_grant: int | None = None
        self._last_extend_sent_at: float | None = None
        self._last_success_at: float | None = None
        # Guards.
        self._zero_success = False
        self._last_beat_zero = False
        self._last_failure: tuple[float, float] | None = None
        self._beat: Beat | None = None

    # -- observations --------------------------------------------------------------------------------

    def on_create_success(
        self,
        *,
        sent_at_ms: float,
        received_at_ms: float,
        expires_at_ms: int | None,
        remaining_ttl_ms: int | None,
    ) -> Beat:
        """Schedule the first beat from the schema-valid create response."""
        if self._beat is not None and self._beat.is_stop:
            return self._beat
        self._create_sent_at = sent_at_ms
        self._base_lead, self._base_at, self._grants = 0.0, sent_at_ms, 0
        return self._on_success(sent_at_ms, received_at_ms, expires_at_ms, remaining_ttl_ms, is_create=True)

    def on_extend_success(
        self,
        *,
        sent_at_ms: float,
        received_at_ms: float,
        expires_at_ms: int | None,
        remaining_ttl_ms: int | None,
    ) -> Beat:
        """Schedule the next beat from a schema-valid 200 extend response (also a same-key replay)."""
        if self._beat is not None and self._beat.is_stop:
            return self._beat
        return self._on_success(sent_at_ms, received_at_ms, expires_at_ms, remaining_ttl_ms, is_create=False)

    def on_extend_failure(self, *, now_ms: float, kind: FailureKind, retry_after_s: int | None = None) -> Beat:
        """Decide after an extend attempt that did not succeed: same-key retry or stop."""
        if self._beat is not None and self._beat.is_stop:
            return self._beat
        if kind not in _TRANSIENT:
            return self._stop(_STOP_PERMANENT if kind is FailureKind.PERMANENT else _STOP_REJECTED)
        estimate = self.current_lead_estimate(now_ms)
        window = estimate - self.attempt_budget_ms - self.safety_margin_ms
        refusal = self._retry_refusal(now_ms, window)
        if refusal is not None:
            return self._stop(refusal)
        self._last_failure = (now_ms, window)
        if kind is FailureKind.RATE_LIMITED:
            delay, refusal = _rate_limited_delay(retry_after_s, window)
        else:
            delay = int(_floor(min(float(_MAX_RETRY_DELAY_MS), estimate / 4, window)))
        if refusal is None and delay == 0 and self._last_beat_zero:
            refusal = "no time left for a retry after an immediate extension failed"
        if refusal is not None:
            return self._stop(refusal)
        return self._extend(now_ms, delay, fresh_key=False)

    # -- derived values ------------------------------------------------------------------------------

    @property
    def mode(self) -> LeaseMode | None:
        """The algorithm of the latest success (``None`` before the create)."""
        return self._mode

    @property
    def regime(self) -> Regime:
        """The fallback's regime guess (``UNKNOWN`` until a grant was measured)."""
        return self._regime

    @property
    def max_rtt_ms(self) -> float:
        """The largest rtt observed so far (create included)."""
        return self._max_rtt

    @property
    def lead_floor_ms(self) -> int:
        """The primary lead floor of the last field-bearing success, at its receipt."""
        return self._lead_floor

    @property
    def attempt_deadline_ms(self) -> int | None:
        """The deadline the caller must enforce for the next extend attempt (``None``: unbounded)."""
        return None if math.isinf(self._deadline) else math.ceil(self._deadline)

    @property
    def attempt_budget_ms(self) -> float:
        """``ceil(max(request_timeout_budget, 1000, 2 * max_rtt))`` (+inf when unbounded)."""
        return _ceil(max(self._deadline, float(_MIN_BUDGET_MS), 2.0 * self._max_rtt))

    @property
    def safety_margin_ms(self) -> float:
        """``ceil(max(1000, 2 * max_rtt))``."""
        return _safety_margin(self._max_rtt)

    @property
    def retry_reserve_ms(self) -> float:
        """``2 * attempt_budget + safety_margin`` (+inf when unbounded)."""
        return 2 * self.attempt_budget_ms + self.safety_margin_ms

    @property
    def due_at_ms(self) -> float | None:
        """When the current beat is due (``None`` before the create or after a stop)."""
        beat = self._beat
        return beat.due_at_ms if beat is not None and beat.is_extend else None

    @property
    def last_beat(self) -> Beat | None:
        """The latest decision."""
        return self._beat

    @property
    def estimated_lease_end_ms(self) -> float:
        """Monotonic time the lease is conservatively estimated to end (primary: receipt + lead floor)."""
        if self._mode is LeaseMode.PRIMARY:
            return self._established_at + self._lead_floor
        at = self._last_success_at if self._last_success_at is not None else self._create_sent_at
        return at + self.current_lead_estimate(at)

    def lead_min_ms(self, now_ms: float) -> float:
        """The fallback's sound lower bound on the lead at ``now_ms`` (may be negative)."""
        chained = self._base_lead + self._grants - (now_ms - self._base_at)
        if self._last_grant is not None and self._last_extend_sent_at is not None:
            chained = max(chained, self._last_grant - (now_ms - self._last_extend_sent_at))
        return chained if math.isfinite(chained) else 0.0

    def current_lead_estimate(self, now_ms: float) -> float:
        """The lead left at ``now_ms`` as the failure rules see it, rounded down, never negative."""
        if self._mode is LeaseMode.PRIMARY:
            elapsed = now_ms - self._established_at
            if not math.isfinite(elapsed) or elapsed < 0:
                return 0  # unreliable timing is never zero elapsed time
            return max(0, math.floor(self._lead_floor - elapsed))
        lead = self.lead_min_ms(now_ms)
        if self._last_grant is None:
            lead = max(lead, self._ttl - (now_ms - self._create_sent_at))
        return max(0, math.floor(lead)) if math.isfinite(lead) else 0

    # -- internals -----------------------------------------------------------------------------------

    def _on_success(
        self,
        sent_at: float,
        received_at: float,
        expires_at: int | None,
        remaining: int | None,
        *,
        is_create: bool,
    ) -> Beat:
        rtt = received_at - sent_at
        timing_ok = math.isfinite(rtt) and rtt >= 0
        if timing_ok:
            self._max_rtt = max(self._max_rtt, rtt)
        self._last_failure = None
        grant = None if is_create else self._record_extend(sent_at, expires_at)
        elapsed_since_previous = None if self._last_success_at is None else received_at - self._last_success_at
        if expires_at is not None:
            self._last_expires = expires_at
        self._last_success_at = received_at
        note: str | None = None
        if remaining is not None:
            delay = self._primary_delay(remaining, rtt, received_at, timing_ok=timing_ok)
        else:
            self._mode = LeaseMode.FALLBACK
            self._update_deadline(self.current_lead_estimate(received_at))
            if is_create:
                delay = self._fallback_first_delay(rtt)
            else:
                delay, note = self._fallback_delay(grant, elapsed_since_previous, received_at)
            if not timing_ok:
                delay = 0
        if delay == 0:
            if self._zero_success or self._last_beat_zero:
                return self._stop(STOP_SHORT_LEASE)
            self._zero_success = True
        else:
            self._zero_success = False
        return self._extend(received_at, int(delay), fresh_key=True, note=note)

    def _retry_refusal(self, now_ms: float, window: float) -> str | None:
        """Why a failed extend gets no same-key retry at all (``None``: it may get one)."""
        if not window >= 0:
            return "no safe retry window left before the lease ends"
        previous = self._last_failure
        if previous is None:
            return None
        previous_now, previous_window = previous
        if previous_window == 0:
            return "the immediate retry allowed by a zero retry window failed too"
        if not (now_ms > previous_now or window < previous_window):
            return "no progress between consecutive failed extend attempts"
        return None

    def _record_extend(self, sent_at: float, expires_at: int | None) -> int | None:
        """Fallback bookkeeping of one extend success; its measured grant (``None``: not measurable)."""
        grant: int | None = None
        if expires_at is not None and self._last_expires is not None:
            grant = expires_at - self._last_expires
            self._grants += grant
            self._last_grant = grant
        self._last_extend_sent_at = sent_at
        return grant

    def _primary_delay(self, remaining: int, rtt: float, received_at: float, *, timing_ok: bool) -> float:
        """The normative next delay from a ``remaining_ttl_ms`` response alone (re-basing the fallback on it)."""
        self._mode = LeaseMode.PRIMARY
        lead_floor = max(0, math.floor(remaining - rtt)) if timing_ok else 0
        self._lead_floor, self._established_at = lead_floor, received_at
        self._base_lead, self._base_at, self._grants = float(lead_floor), received_at, 0
        self._update_deadline(lead_floor)
        return _floor(max(0.0, lead_floor - self.retry_reserve_ms)) if timing_ok else 0

    def _held_cadence(self) -> int:
        return max(_MIN_CADENCE_MS, min(self._ttl // 2, _HELD_CADENCE_CAP_MS))

    def _fallback_first_delay(self, rtt: float) -> float:
        assumed = max(0.0, self._ttl - rtt)
        safe = _floor(max(0.0, assumed - self.retry_reserve_ms))
        return min(safe, float(min(self._ttl // 2, _HELD_CADENCE_CAP_MS)))

    def _fallback_delay(self, grant: int | None, elapsed: float | None, received_at: float) -> tuple[float, str | None]:
        note: str | None = None
        cadence: float
        if grant is None:
            cadence = self._held_cadence()
        elif grant >= 0.9 * self._ttl:
            self._regime = Regime.NORMAL
            cadence = max(_MIN_CADENCE_MS, grant // 2)
        elif grant <= 0 or (elapsed is not None and 0.75 * elapsed <= grant <= 1.25 * elapsed):
            self._regime = Regime.MAX_LEAD
            cadence = self._held_cadence()
            note = (
                "the server appears to clamp extensions to a maximum lead; every beat spends one of the "
                "reservation's extensions and MAX_EXTENSIONS_EXCEEDED will end the heartbeat"
            )
        else:
            self._regime = Regime.GRANT_CAPPED
            cadence = max(_MIN_CADENCE_MS, grant // 2)
        keep = max(1.5 * grant if grant is not None and grant > 0 else 0.0, self.retry_reserve_ms)
        deferred = _floor(self.lead_min_ms(received_at) - keep)
        return max(cadence, deferred), note

    def _update_deadline(self, lead: float) -> None:
        if self._adaptive:
            configured = None if math.isinf(self._configured) else self._configured
            self._deadline = float(extend_deadline_ms(lead, configured, self._max_rtt))
        else:
            self._deadline = self._configured

    def _extend(self, at_ms: float, delay: int, *, fresh_key: bool, note: str | None = None) -> Beat:
        self._last_beat_zero = delay == 0
        self._beat = Beat.extend(at_ms=at_ms, delay_ms=delay, fresh_key=fresh_key, note=note)
        return self._beat

    def _stop(self, reason: str) -> Beat:
        self._beat = Beat.stop(reason)
        return self._beat
