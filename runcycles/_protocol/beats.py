"""The vocabulary of the lease schedule: what failed (`FailureKind`), what to do next (`Beat`), and which
algorithm or clamp regime produced it (`LeaseMode`, `Regime`). Pure values; the decisions are in
:mod:`runcycles._protocol.lease`."""

from __future__ import annotations

import enum
import math

import attrs

from .states import HeartbeatDisposition

__all__ = ["Beat", "BeatKind", "FailureKind", "LeaseMode", "Regime"]


class FailureKind(enum.Enum):
    """Why an extend attempt did not produce a schema-valid 200."""

    TRANSPORT = "transport"  # timeout, connection error
    SERVER_ERROR = "server_error"  # 5xx
    RATE_LIMITED = "rate_limited"  # 429, with Retry-After delta-seconds or None
    AMBIGUOUS = "ambiguous"  # a 2xx that is not a schema-valid 200 extend response
    PERMANENT = "permanent"  # expired, finalized, max extensions, tenant closed, not found, bare 404/410
    OTHER_4XX = "other_4xx"  # any other client error: stop, never rotate the key


class BeatKind(enum.Enum):
    """What a `Beat` asks the caller to do."""

    EXTEND = "extend"
    STOP = "stop"


class LeaseMode(enum.Enum):
    """Which algorithm scheduled the latest beat."""

    PRIMARY = "primary"  # the response carried remaining_ttl_ms
    FALLBACK = "fallback"  # it did not


class Regime(enum.Enum):
    """The fallback's guess of how the server clamps extensions."""

    UNKNOWN = "unknown"
    NORMAL = "normal"
    GRANT_CAPPED = "grant_capped"
    MAX_LEAD = "max_lead"


@attrs.frozen(kw_only=True)
class Beat:
    """One scheduling decision.

    ``EXTEND``: send an extend at monotonic ``due_at_ms`` (``delay_ms`` after the response receipt or the
    failure time it was computed from), with a new idempotency key if ``fresh_key`` else the key of the
    failed/ambiguous attempt. ``STOP``: send nothing more; ``reason`` says why (for the log and the
    failure report). ``note`` carries advisory text that should be surfaced without stopping.
    """

    kind: BeatKind
    delay_ms: int = 0
    due_at_ms: float = 0.0
    fresh_key: bool = True
    reason: str | None = None
    note: str | None = None

    @classmethod
    def extend(cls, *, at_ms: float, delay_ms: int, fresh_key: bool, note: str | None = None) -> Beat:
        """An extension ``delay_ms`` after ``at_ms``."""
        return cls(kind=BeatKind.EXTEND, delay_ms=delay_ms, due_at_ms=at_ms + delay_ms, fresh_key=fresh_key, note=note)

    @classmethod
    def stop(cls, reason: str) -> Beat:
        """A stop with its reason."""
        return cls(kind=BeatKind.STOP, fresh_key=False, reason=reason)

    @property
    def is_stop(self) -> bool:
        """True when the heartbeat must stop."""
        return self.kind is BeatKind.STOP

    @property
    def is_extend(self) -> bool:
        """True when an extend is due at ``due_at_ms``."""
        return self.kind is BeatKind.EXTEND

    @property
    def disposition(self) -> HeartbeatDisposition:
        """``"stopped"``, ``"retrying"`` (same key) or ``"scheduled"`` (fresh key), for logs and reports."""
        if self.is_stop:
            return HeartbeatDisposition.STOPPED
        return HeartbeatDisposition.SCHEDULED if self.fresh_key else HeartbeatDisposition.RETRYING

    def delay_from(self, now_ms: float) -> int:
        """Milliseconds from ``now_ms`` until the beat is due (0 if overdue), rounded down."""
        remaining = self.due_at_ms - now_ms
        if not math.isfinite(remaining) or remaining <= 0:
            return 0
        return math.floor(remaining)
