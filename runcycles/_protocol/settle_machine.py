"""The settlement decisions as a pure machine: one classified answer in, one decision out.

`settle_steps` (in `runcycles.lifecycle`) is the effect loop around it: it sends, classifies, asks
`SettleMachine` what the answer means, and performs the decision's effects (journal, detach, sleep). Nothing
here performs I/O or reads a clock; the only impurity is the jitter's random source, which is injected
(`RetryPolicy.rng`).

The decisions (``mode`` is the settlement's `SettleMode`; "unknown" is transient, ambiguous, rate limited
or retain)::

    success                          -> SETTLED
    expired,   commit mode           -> SWITCH_TO_EVENT   (same key; journaled before the event leaves)
    finalized, commit mode           -> VERIFY_FINALIZED  (read the reservation, then `on_verified`)
    terminal; expired or finalized in event mode
                                     -> REJECTED          (the spend is not on the ledger)
    unknown, retries left            -> RETRY             (after the backoff, never sooner than Retry-After;
                                                           the first retry detaches to the background)
    unknown, retries exhausted or disabled
                                     -> RETAIN            (the journal keeps it for replay)

    verified COMMITTED               -> SETTLED
    verified RELEASED / EXPIRED / 410 -> SWITCH_TO_EVENT
    not verifiable                   -> as an ambiguous answer (RETRY or RETAIN)
"""

from __future__ import annotations

import enum
import random
from typing import TYPE_CHECKING

import attrs
import tenacity

from ..response import CyclesResponse
from .outcomes import Outcome, OutcomeKind
from .settlement import clamp_retry_after, retry_state, settlement_retrying
from .states import SettleMode

if TYPE_CHECKING:
    from ..config import CyclesConfig

__all__ = ["AttemptState", "Next", "RetryPolicy", "SettleDecision", "SettleMachine", "Verdict", "verdict_of"]

_UNVERIFIABLE = "finalized, not verifiable"


class Next(enum.Enum):
    """What the effect loop does next."""

    SETTLED = "settled"
    SWITCH_TO_EVENT = "switch_to_event"
    VERIFY_FINALIZED = "verify_finalized"
    REJECTED = "rejected"
    RETAIN = "retain"
    RETRY = "retry"


class Verdict(enum.Enum):
    """What reading a reservation after a RESERVATION_FINALIZED commit found."""

    COMMITTED = "committed"
    NOT_COMMITTED = "not_committed"
    UNKNOWN = "unknown"


def verdict_of(response: CyclesResponse) -> Verdict:
    """Was the finalized reservation committed (settled) or released/expired (spend not on the ledger)?"""
    status = response.get_body_attribute("status")
    if response.status == 200 and status == "COMMITTED":
        return Verdict.COMMITTED
    if response.status == 410 or (response.status == 200 and status in ("RELEASED", "EXPIRED")):
        return Verdict.NOT_COMMITTED
    return Verdict.UNKNOWN


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """The background settlement retry settings (from `CyclesConfig`), and the jitter's random source."""

    enabled: bool = True
    max_attempts: int = 5
    initial_ms: int = 500
    multiplier: float = 2.0
    max_ms: int = 30000
    rng: random.Random | None = attrs.field(default=None, eq=False, repr=False)
    """The jitter's random source (``None``: the ``random`` module); a seeded one makes delays deterministic."""

    @classmethod
    def from_config(cls, config: CyclesConfig) -> RetryPolicy:
        """The policy the config describes."""
        return cls(
            enabled=config.retry_enabled,
            max_attempts=config.retry_max_attempts,
            initial_ms=config.retry_initial_delay_ms,
            multiplier=config.retry_multiplier,
            max_ms=config.retry_max_delay_ms,
        )

    def retrying(self) -> tenacity.Retrying:
        """The tenacity wait/stop pair of this policy (queried, never left to sleep)."""
        return settlement_retrying(
            max_attempts=self.max_attempts,
            initial_ms=self.initial_ms,
            multiplier=self.multiplier,
            max_ms=self.max_ms,
            rng=self.rng,
        )


@attrs.frozen(kw_only=True)
class AttemptState:
    """Where one settlement run stands: its mode, the retries it made, whether it runs in the background."""

    mode: SettleMode = attrs.field(default=SettleMode.COMMIT, converter=SettleMode)
    retries: int = 0
    detached: bool = False

    @classmethod
    def first(cls, mode: SettleMode | str = SettleMode.COMMIT) -> AttemptState:
        """A settlement's first attempt, inline in the caller."""
        return cls(mode=mode)

    @classmethod
    def resumed(cls, mode: SettleMode | str) -> AttemptState:
        """A journaled record resumed by a replay: already on the background worker, its retries counted anew."""
        return cls(mode=mode, detached=True)


@attrs.frozen(kw_only=True)
class SettleDecision:
    """The machine's answer: what to do next, and the attempt state after it."""

    next: Next
    state: AttemptState
    outcome: Outcome
    """The answer decided on (for an unverifiable finalized commit: recast as ambiguous)."""
    delay_ms: int = 0
    """`Next.RETRY`: wait this long before the next attempt."""
    hold_ms: int | None = None
    """`Next.RETRY`: the server asked not to be called for this long (persist it as an absolute not-before)."""
    detach: bool = False
    """`Next.RETRY`: hand the rest to the background worker first."""

    def retry_at(self, now_ms: float) -> float:
        """The monotonic time of the next attempt, from ``now_ms``."""
        return now_ms + self.delay_ms


class SettleMachine:
    """The settlement decisions under one `RetryPolicy` (pure apart from the policy's random source)."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self._policy_retrying: tenacity.Retrying | None = None  # built on the first unknown outcome only

    @property
    def _retrying(self) -> tenacity.Retrying:
        if self._policy_retrying is None:
            self._policy_retrying = self.policy.retrying()
        return self._policy_retrying

    def on_outcome(self, outcome: Outcome, state: AttemptState) -> SettleDecision:
        """The decision for the answer to one commit (or event) attempt."""
        if outcome.is_success:
            return SettleDecision(next=Next.SETTLED, state=state, outcome=outcome)
        if state.mode is SettleMode.COMMIT:
            if outcome.kind is OutcomeKind.EXPIRED:
                return self._switch(outcome, state)
            if outcome.kind is OutcomeKind.FINALIZED:
                return SettleDecision(next=Next.VERIFY_FINALIZED, state=state, outcome=outcome)
        if outcome.kind in (OutcomeKind.TERMINAL, OutcomeKind.FINALIZED, OutcomeKind.EXPIRED):
            return SettleDecision(next=Next.REJECTED, state=state, outcome=outcome)
        return self._unknown(outcome, state)

    def on_verified(self, verdict: Verdict, outcome: Outcome, state: AttemptState) -> SettleDecision:
        """The decision once a finalized commit's reservation was read (``outcome``: the finalized answer)."""
        if verdict is Verdict.COMMITTED:
            return SettleDecision(next=Next.SETTLED, state=state, outcome=outcome)
        if verdict is Verdict.NOT_COMMITTED:
            return self._switch(outcome, state)
        return self._unknown(attrs.evolve(outcome, kind=OutcomeKind.AMBIGUOUS, problem=_UNVERIFIABLE), state)

    @staticmethod
    def _switch(outcome: Outcome, state: AttemptState) -> SettleDecision:
        switched = attrs.evolve(state, mode=SettleMode.EVENT)
        return SettleDecision(next=Next.SWITCH_TO_EVENT, state=switched, outcome=outcome)

    def _unknown(self, outcome: Outcome, state: AttemptState) -> SettleDecision:
        """Unknown outcome: keep the spend and try again with the same key and body, or retain it."""
        call_state = retry_state(self._retrying, state.retries + 1)
        if not self.policy.enabled or self._retrying.stop(call_state):
            return SettleDecision(next=Next.RETAIN, state=state, outcome=outcome)
        delay = int(self._retrying.wait(call_state) * 1000)
        retry_after = clamp_retry_after(outcome.retry_after_ms)
        if retry_after is not None:
            delay = max(delay, retry_after)
        hold = retry_after if outcome.kind is OutcomeKind.RATE_LIMITED else None
        return SettleDecision(
            next=Next.RETRY,
            state=attrs.evolve(state, retries=state.retries + 1, detached=True),
            outcome=outcome,
            delay_ms=delay,
            hold_ms=hold,
            detach=not state.detached,
        )
