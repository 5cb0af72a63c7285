"""The static types of what `with_cycles(...)` returns: decorators that keep the guarded function's signature.

Only for type checkers: at run time `with_cycles` returns a plain function. With ``dry_run=True`` the
wrapper returns `DryRunResult` (awaitable for an ``async def``); with an ``actual=`` callable whose parameter
is annotated, the guarded function must return that type (so ``actual`` sees what the function returns).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, overload

if TYPE_CHECKING:
    from .models import DryRunResult

__all__ = ["CyclesDecorator", "DryRunDecorator", "TypedCyclesDecorator"]

P = ParamSpec("P")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class CyclesDecorator(Protocol):
    """Guards a function and returns it with the same signature."""

    def __call__(self, fn: F, /) -> F:
        """Guard ``fn``."""
        ...


class TypedCyclesDecorator(Protocol[T]):
    """Guards a function returning ``T`` (or an ``async def`` returning ``T``): the ``actual=`` callable's
    parameter type."""

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, T]], /) -> Callable[P, Coroutine[Any, Any, T]]: ...

    @overload
    def __call__(self, fn: Callable[P, T], /) -> Callable[P, T]: ...

    def __call__(self, fn: Callable[P, Any], /) -> Callable[P, Any]:
        """Guard ``fn``."""
        ...


class DryRunDecorator(Protocol):
    """Guards a function in dry-run mode: the wrapper returns a `DryRunResult` instead of calling it."""

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, Any]], /
    ) -> Callable[P, Coroutine[Any, Any, DryRunResult]]: ...

    @overload
    def __call__(self, fn: Callable[P, Any], /) -> Callable[P, DryRunResult]: ...

    def __call__(self, fn: Callable[P, Any], /) -> Callable[P, Any]:
        """Guard ``fn``."""
        ...
