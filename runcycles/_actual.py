"""Which amount settles a guarded call: the actual, the spend the guarded code recorded, or the estimate.

With the estimate fallback off and no known actual, nothing is settled and `MissingActualError` is raised
(the recovery profile's CR-BOUNDARY-001).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .errors import MissingActualError
from .models import Action
from .validation import validate_amount

__all__ = ["OUTSIZED_FACTOR", "resolve_actual", "warn_if_outsized"]

log = logging.getLogger("runcycles.lifecycle")


def resolve_actual(
    actual: int | Callable[[Any], int] | None,
    result: Any,
    estimate: int,
    *,
    reservation_id: str | None,
    recorded: int | None = None,
    use_estimate: bool = True,
) -> tuple[int, bool]:
    """The amount to commit and whether it is the estimate standing in for it.

    Sources in order: ``actual`` (an int, or a callable of ``result``), then ``recorded`` (spend the guarded code
    recorded itself: ``CyclesContext.actual`` / ``stream.actual``), then the estimate. A failing or invalid
    ``actual`` callable falls through to the next source (logged at ERROR). With ``use_estimate=False`` the
    estimate never stands in: `MissingActualError` is raised instead (and logged), and nothing is to be settled.
    """
    failure: Exception | None = None
    if actual is not None:
        try:
            value = actual(result) if callable(actual) else actual
            return validate_amount("actual", value), False
        except Exception as exc:
            failure = exc
            log.error(
                "actual evaluation failed after the guarded work completed: reservation_id=%s error=%r",
                reservation_id,
                exc,
            )
    if recorded is not None:
        return recorded, False
    if use_estimate:
        if failure is not None:
            log.error("committing the estimate instead of the failed actual: reservation_id=%s", reservation_id)
        return estimate, True
    log.error(
        "actual spend unknown and use_estimate_if_actual_not_provided=False: nothing committed or released; "
        "the reservation expires on its own: reservation_id=%s",
        reservation_id,
    )
    missing = MissingActualError(
        f"actual spend unknown for reservation {reservation_id} (use_estimate_if_actual_not_provided=False): "
        "nothing was committed; the reservation expires on its own",
        reservation_id=reservation_id or "",
        result=result,
    )
    if failure is not None:
        raise missing from failure
    raise missing


OUTSIZED_FACTOR = 100
_OUTSIZED_KEYS_MAX = 10_000  # bounded memory with dynamic action names; beyond it nothing more is warned
_outsized_warned: set[tuple[str, str]] = set()
_outsized_lock = threading.Lock()


def warn_if_outsized(actual: int, estimate: int, *, action: Action, reservation_id: str | None) -> None:
    """Log a WARNING, once per action kind and name, when ``actual`` exceeds ``OUTSIZED_FACTOR`` times the
    estimate (usually a unit mistake, e.g. dollars-as-cents: $1 is 100,000,000 ``USD_MICROCENTS``)."""
    if actual <= OUTSIZED_FACTOR * estimate:
        return
    key = (action.kind, action.name)
    with _outsized_lock:
        if key in _outsized_warned or len(_outsized_warned) >= _OUTSIZED_KEYS_MAX:
            return
        _outsized_warned.add(key)
    log.warning(
        "actual %d is more than %dx the estimate %d for action %s/%s (reservation_id=%s): is the unit right? "
        "($1 = 100,000,000 USD_MICROCENTS); logged once per action",
        actual, OUTSIZED_FACTOR, estimate, action.kind, action.name, reservation_id,
    )
