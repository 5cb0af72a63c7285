"""`CyclesContext`: what guarded code can read (caps, lease) and write (metrics, commit metadata)."""

from __future__ import annotations

import contextvars
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import attrs

from ._worded import int_range
from .validation import MAX_INT64

if TYPE_CHECKING:
    from .models import Amount, Balance, Caps, CyclesMetrics, Decision

__all__ = ["CyclesContext", "get_cycles_context", "require_cycles_context"]


@attrs.define(kw_only=True, eq=False)
class CyclesContext:
    """The live reservation around the current guarded call.

    Read-only by convention: ``reservation_id``, ``estimate``, ``decision``, ``caps``, ``affected_scopes``,
    ``scope_path``, ``reserved``, ``balances``; ``expires_at_ms`` is kept current by the heartbeat.
    Writable: ``metrics`` and ``commit_metadata``, both sent with the commit, and ``actual``: spend known so
    far (an ``int >= 0``, checked on assignment). When the guarded function raises after setting ``actual``,
    that amount is committed (spend that happened is never lost) and the exception still propagates; when it
    returns, an ``actual=`` option of the decorator takes precedence over it, and it over the estimate.
    """

    reservation_id: str
    estimate: int
    decision: Decision | str
    caps: Caps | None = None
    expires_at_ms: int | None = None
    affected_scopes: list[str] = attrs.field(factory=list)
    scope_path: str | None = None
    reserved: Amount | None = None
    balances: list[Balance] = attrs.field(factory=list)
    metrics: CyclesMetrics | None = None
    commit_metadata: dict[str, Any] | None = None
    actual: int | None = attrs.field(default=None, validator=int_range("actual", 0, MAX_INT64, optional=True))

    def has_caps(self) -> bool:
        """True when the server attached caps (``ALLOW_WITH_CAPS``)."""
        return self.caps is not None


_CURRENT: contextvars.ContextVar[CyclesContext | None] = contextvars.ContextVar("runcycles_context", default=None)


def get_cycles_context() -> CyclesContext | None:
    """The context of the innermost guarded call running in this task or thread, else ``None``."""
    return _CURRENT.get()


def require_cycles_context() -> CyclesContext:
    """The context of the innermost guarded call; raises ``RuntimeError`` outside one.

    The ``mypy --strict``-friendly form of `get_cycles_context` for code that only runs guarded::

        caps = require_cycles_context().caps
    """
    context = _CURRENT.get()
    if context is None:
        raise RuntimeError("require_cycles_context() called outside a guarded call (with_cycles / reserve_for_stream)")
    return context


def bind(context: CyclesContext) -> AbstractContextManager[CyclesContext]:
    """Make ``context`` current for the duration; the previous one (if any) is restored afterwards."""
    return _Bound(context)


class _Bound:
    """What `bind` returns: a plain context manager (a generator-based one costs about 1 µs more per call)."""

    __slots__ = ("_context", "_previous", "_token")

    def __init__(self, context: CyclesContext) -> None:
        self._context = context

    def __enter__(self) -> CyclesContext:
        self._previous = _CURRENT.get()
        self._token = _CURRENT.set(self._context)
        return self._context

    def __exit__(self, *exc_info: object) -> None:
        try:
            _CURRENT.reset(self._token)
        except ValueError:  # exited in another context (callback-style enter/exit): restore by value
            _CURRENT.set(self._previous)
