"""The string enums of the Cycles protocol schemas (v0.1.25 plus the v0.1.26 ones this client tolerates)."""

from __future__ import annotations

import enum

from .._error_codes import ErrorCode

__all__ = [
    "CommitOveragePolicy",
    "CommitStatus",
    "Decision",
    "ErrorCode",
    "EventStatus",
    "ExtendStatus",
    "ObserveMode",
    "ReleaseStatus",
    "ReservationStatus",
    "Unit",
]


class Unit(str, enum.Enum):
    """Budget units (``UnitEnum``)."""

    USD_MICROCENTS = "USD_MICROCENTS"
    TOKENS = "TOKENS"
    CREDITS = "CREDITS"
    RISK_POINTS = "RISK_POINTS"


class Decision(str, enum.Enum):
    """A budget decision (``DecisionEnum``)."""

    ALLOW = "ALLOW"
    ALLOW_WITH_CAPS = "ALLOW_WITH_CAPS"
    DENY = "DENY"


class CommitOveragePolicy(str, enum.Enum):
    """How the server handles a commit (or event) whose actual exceeds what is reserved or remaining."""

    REJECT = "REJECT"
    ALLOW_IF_AVAILABLE = "ALLOW_IF_AVAILABLE"
    ALLOW_WITH_OVERDRAFT = "ALLOW_WITH_OVERDRAFT"


class ReservationStatus(str, enum.Enum):
    """Reservation lifecycle state."""

    ACTIVE = "ACTIVE"
    COMMITTED = "COMMITTED"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"


class CommitStatus(str, enum.Enum):
    """``CommitResponse.status``."""

    COMMITTED = "COMMITTED"


class ReleaseStatus(str, enum.Enum):
    """``ReleaseResponse.status``."""

    RELEASED = "RELEASED"


class ExtendStatus(str, enum.Enum):
    """``ReservationExtendResponse.status``."""

    ACTIVE = "ACTIVE"


class EventStatus(str, enum.Enum):
    """``EventCreateResponse.status``."""

    APPLIED = "APPLIED"


class ObserveMode(str, enum.Enum):
    """v0.1.26 ``ObserveModeEnum``: per-request override of the tenant's observe mode."""

    DISABLED = "DISABLED"
    OBSERVE = "OBSERVE"
    ENFORCE = "ENFORCE"
