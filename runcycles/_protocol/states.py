"""The named states of the lifecycle, as str enums.

Each value is the string the code used before these were enums, so journal files, logs and comparisons such
as ``event.disposition == "retrying"`` keep working; ``str()`` and f-strings give the bare value on every
supported Python (like 3.11's ``enum.StrEnum``).
"""

from __future__ import annotations

import enum

__all__ = ["HeartbeatDisposition", "SettleMode", "SettlementState", "StrState"]


class StrState(str, enum.Enum):
    """A str enum whose ``str()`` is its value."""

    def __str__(self) -> str:
        return str(self.value)


class SettleMode(StrState):
    """How a pending spend is sent: as the reservation's commit, or (after it expired) as an event."""

    COMMIT = "commit"
    EVENT = "event"


class SettlementState(StrState):
    """How a settlement ended (or paused)."""

    SETTLED = "settled"
    """The spend is on the ledger."""
    REJECTED = "rejected"
    """The server understood and refused it: the spend is not on the ledger."""
    RETAINED = "retained"
    """Still unresolved: the journal keeps it for a later replay."""
    QUARANTINED = "quarantined"
    """Too old to resend safely: moved aside for an operator (replay only)."""


class HeartbeatDisposition(StrState):
    """What happens next after a heartbeat beat or failure."""

    RETRYING = "retrying"
    """The same idempotency key is retried."""
    STOPPED = "stopped"
    """No more extends for this reservation."""
    SCHEDULED = "scheduled"
    """The next beat, with a fresh key."""
