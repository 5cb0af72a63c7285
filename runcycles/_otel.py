"""Observability of the lifecycle: OpenTelemetry spans and counters, and one DEBUG line per step.

Everything hangs on one hook, `traced`: a decorator on the lifecycle's step-generator functions (reserve,
release, settle, heartbeat). When OpenTelemetry is importable (or DEBUG logging is on for
``runcycles.lifecycle``) it wraps the generator the function returns in `_Traced`, which watches the effects
passing through to whichever driver runs it (sync, async, or the background worker after a ``Detach``):

- each ``Send`` gets one CLIENT span (``cycles.reserve``, ``cycles.commit``, ...), a child of the span that was
  current when the step was *created* (carried along, so a settlement retried on the worker thread still nests
  under the caller's span), and the request gets that span's ``traceparent`` unless it already has one;
- the counters ``cycles.reservations``, ``cycles.denials``, ``cycles.settlement.retries`` and the up-down
  counter ``cycles.journal.backlog`` are updated from the answers;
- one DEBUG log line per request, with the reservation id.

Without OpenTelemetry installed the import is attempted once, "not available" is cached, and the decorator
returns the generator unchanged (no wrapper at all unless DEBUG logging is on).

`current_traceparent` and `gen_ai_span` are for the guarded provider clients: the first gives the W3C
``traceparent`` of the current span, the second a span with OpenTelemetry's GenAI attributes.

This module holds the loaded state (`_load`, `configure`), the hook and the GenAI spans; building the
instruments, the no-SDK check and the traceparent format are in `runcycles._otel_api`, the `_Traced` wrapper
(`Traced`) in `runcycles._otel_steps`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import Any, ParamSpec, TypeVar

from ._otel_api import Instruments as _Instruments
from ._otel_api import build
from ._otel_api import format_traceparent as _format_traceparent
from ._otel_api import with_header as _with_header
from ._otel_steps import Traced as _Traced
from ._otel_steps import reset_backlog
from ._protocol.effects import Send

__all__ = ["GenAiSpan", "configure", "current_traceparent", "gen_ai_span", "traced"]

log = logging.getLogger("runcycles.lifecycle")

P = ParamSpec("P")
T = TypeVar("T")


# --------------------------------------------------------------------------- loading (once)


_UNSET: Any = object()
_state: Any = _UNSET  # _Instruments, or None when OpenTelemetry is not importable
_providers: dict[str, Any] = {}
_lock = threading.Lock()


def _load() -> _Instruments | None:
    global _state
    state = _state
    if state is not _UNSET:
        return state  # type: ignore[no-any-return]
    with _lock:
        if _state is _UNSET:
            _state = build(_providers.get("tracer_provider"), _providers.get("meter_provider"))
        return _state  # type: ignore[no-any-return]


def configure(*, tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Use these providers instead of the global ones (``None``: the global one); for tests and embedders.

    OpenTelemetry's global providers can be set once per process; this lets each test bring its own.
    """
    global _state
    with _lock:
        _providers.clear()
        if tracer_provider is not None:
            _providers["tracer_provider"] = tracer_provider
        if meter_provider is not None:
            _providers["meter_provider"] = meter_provider
        _state = _UNSET
    reset_backlog()


def available() -> bool:
    """Whether OpenTelemetry is importable (checked once)."""
    return _load() is not None


# --------------------------------------------------------------------------- traceparent


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, or ``None`` (no valid span, or no OpenTelemetry)."""
    state = _load()
    if state is None:
        return None
    return _format_traceparent(state.trace.get_current_span().get_span_context())


# --------------------------------------------------------------------------- the step wrapper


def traced(fn: Callable[P, Generator[Any, Any, T]]) -> Callable[P, Generator[Any, Any, T]]:
    """Wrap the steps ``fn`` returns in the observing generator (or not at all when nothing observes)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Generator[Any, Any, T]:
        steps = fn(*args, **kwargs)
        state = _load()
        debug = log.isEnabledFor(logging.DEBUG)
        if state is None:
            return _Traced(None, None).run(steps) if debug else steps
        current = state.trace.get_current_span()
        if not debug and state.idle():
            # No SDK: no span is recorded and no counter counts; requests only carry the caller's context.
            traceparent = _format_traceparent(current.get_span_context())
            return steps if traceparent is None else _with_traceparent(steps, traceparent)
        return _Traced(state, state.trace.set_span_in_context(current)).run(steps)

    return wrapper


def _with_traceparent(steps: Generator[Any, Any, T], traceparent: str) -> Generator[Any, Any, T]:
    """``steps`` with ``traceparent`` on every request that has none (drivers only ever ``send``)."""
    answer: Any = None
    try:
        while True:
            try:
                effect = steps.send(answer)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            if type(effect) is Send and "traceparent" not in effect.request.headers:
                effect = _with_header(effect, "traceparent", traceparent)
            answer = yield effect
    finally:
        steps.close()


# --------------------------------------------------------------------------- GenAI spans (provider clients)


class GenAiSpan:
    """The handle `gen_ai_span` yields: record what the provider answered (a no-op without OpenTelemetry)."""

    def __init__(self, span: Any) -> None:
        self._span = span

    @property
    def recording(self) -> bool:
        """Whether attributes set here go anywhere."""
        return self._span is not None and bool(self._span.is_recording())

    def record_response(
        self,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        response_model: str | None = None,
        response_id: str | None = None,
        finish_reasons: list[str] | None = None,
    ) -> None:
        """``gen_ai.usage.input_tokens`` / ``output_tokens``, ``gen_ai.response.model`` / ``id`` /
        ``finish_reasons`` (each only when given)."""
        if self._span is None:
            return
        attributes: dict[str, Any] = {}
        if input_tokens is not None:
            attributes["gen_ai.usage.input_tokens"] = int(input_tokens)
        if output_tokens is not None:
            attributes["gen_ai.usage.output_tokens"] = int(output_tokens)
        if response_model:
            attributes["gen_ai.response.model"] = response_model
        if response_id:
            attributes["gen_ai.response.id"] = response_id
        if finish_reasons:
            attributes["gen_ai.response.finish_reasons"] = list(finish_reasons)
        self._span.set_attributes(attributes)

    def set_attribute(self, name: str, value: Any) -> None:
        """Any other attribute (e.g. ``gen_ai.request.max_tokens``)."""
        if self._span is not None:
            self._span.set_attribute(name, value)


@contextlib.contextmanager
def gen_ai_span(
    *, system: str, request_model: str | None, operation: str = "chat", attributes: Mapping[str, Any] | None = None
) -> Iterator[GenAiSpan]:
    """A CLIENT span for one model call, current inside the block, named ``"{operation} {request_model}"``.

    Attributes follow OpenTelemetry's GenAI conventions: ``gen_ai.operation.name``, ``gen_ai.system`` and its
    newer name ``gen_ai.provider.name`` (both set), ``gen_ai.request.model``; usage is added with
    `GenAiSpan.record_response`. An exception leaving the block is recorded with ``error.type``. Without
    OpenTelemetry the handle does nothing.
    """
    state = _load()
    if state is None:
        yield GenAiSpan(None)
        return
    initial: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.system": system,
        "gen_ai.provider.name": system,
    }
    if request_model:
        initial["gen_ai.request.model"] = request_model
    if attributes:
        initial.update(attributes)
    name = f"{operation} {request_model}" if request_model else operation
    with state.tracer.start_as_current_span(
        name, kind=state.trace.SpanKind.CLIENT, attributes=initial, record_exception=True, set_status_on_exception=True
    ) as span:
        try:
            yield GenAiSpan(span)
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__qualname__)
            raise
