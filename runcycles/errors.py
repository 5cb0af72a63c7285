"""The exception hierarchy and the mapping from a response to an exception."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import ErrorCode
    from .response import CyclesResponse

__all__ = [
    "BudgetExceededError",
    "CyclesError",
    "CyclesProtocolError",
    "CyclesTransportError",
    "DebtOutstandingError",
    "OverdraftLimitExceededError",
    "ReservationExpiredError",
    "ReservationFinalizedError",
    "ResponseFormatError",
    "TenantClosedError",
]


class CyclesError(Exception):
    """Base class of every error raised by runcycles."""


class ResponseFormatError(CyclesError, ValueError):
    """A server response could not be read as the schema it claims to be.

    Raised by every ``*_from_wire`` reader for a missing required field or a wrongly typed value;
    the lifecycle treats such a response as an ambiguous outcome, never as a success.
    """
