"""The GenAI span of one guarded provider call (OpenTelemetry's ``gen_ai.*`` conventions).

A `CallSpan` is started when the guarded method is called, as a child of the caller's current span, and is
made current only around the guard's own work (reserving, the provider call, settling), so the Cycles
``cycles.reserve`` / ``cycles.commit`` spans nest under it. A non-streamed call ends it when the method
returns or raises; a stream ends it when the stream settles (it cannot stay current while the caller
iterates). Without OpenTelemetry every method is a cheap no-op.
"""

from __future__ import annotations

import contextlib
from typing import Any

from .. import _otel
from ._llm_usage import Usage

__all__ = ["CallSpan"]


class CallSpan:
    """The CLIENT span ``"chat {model}"`` of one guarded call, with its GenAI attributes."""

    __slots__ = ("_ended", "_span", "_state")

    def __init__(self, endpoint_name: str, model: Any) -> None:
        state = _otel._load()
        self._state: Any = state
        self._span: Any = None
        self._ended = False
        if state is None:
            return
        system = endpoint_name.split(".", 1)[0]
        attributes = {"gen_ai.operation.name": "chat", "gen_ai.system": system, "gen_ai.provider.name": system}
        named = isinstance(model, str) and bool(model)
        if named:
            attributes["gen_ai.request.model"] = model
        self._span = state.tracer.start_span(
            f"chat {model}" if named else "chat", kind=state.trace.SpanKind.CLIENT, attributes=attributes
        )

    def current(self) -> contextlib.AbstractContextManager[Any]:
        """Make the span current inside the block (the block must not suspend across the caller's code)."""
        if self._span is None:
            return contextlib.nullcontext()
        return self._state.trace.use_span(self._span, end_on_exit=False)  # type: ignore[no-any-return]

    def request(self, max_tokens: int | None) -> None:
        """``gen_ai.request.max_tokens`` of the request as sent (after the budget's caps)."""
        if self._span is not None and max_tokens is not None:
            self._span.set_attribute("gen_ai.request.max_tokens", max_tokens)

    def end(self, usage: Usage | None = None, *, response: Any = None, error: BaseException | None = None) -> None:
        """Record the usage, the response's model and id (or the error) and end the span (once)."""
        span = self._span
        if span is None or self._ended:
            return
        self._ended = True
        try:
            if span.is_recording():
                self._describe(span, usage, response, error)
        finally:
            span.end()

    def _describe(self, span: Any, usage: Usage | None, response: Any, error: BaseException | None) -> None:
        handle = _otel.GenAiSpan(span)
        response_model = getattr(response, "model", None)
        response_id = getattr(response, "id", None)
        handle.record_response(
            input_tokens=usage.prompt_tokens if usage is not None else None,
            output_tokens=usage.output_tokens if usage is not None else None,
            response_model=response_model if isinstance(response_model, str) else (usage.model if usage else None),
            response_id=response_id if isinstance(response_id, str) else None,
        )
        if error is not None:
            span.set_attribute("error.type", type(error).__qualname__)
            span.record_exception(error)
            state = self._state
            span.set_status(state.trace.Status(state.trace.StatusCode.ERROR, str(error) or None))
