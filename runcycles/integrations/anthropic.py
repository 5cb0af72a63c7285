"""Anthropic clients guarded by Cycles budgets: ``guard_anthropic(anthropic.Anthropic(...), prices=..., client=...)``.

Needs the ``anthropic`` extra (``pip install 'runcycles[anthropic]'``). Guarded: ``messages.create`` (streamed or
not) and ``messages.stream(...)``. Usage comes from the answer, or in a stream from ``message_start`` (the
prompt) and ``message_delta`` (cumulative output); ``input_tokens`` exclude ``cache_creation_input_tokens``
(billed at ``cache_write``) and ``cache_read_input_tokens`` (billed at ``cached_input``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, overload

from ..pricing import PriceTable
from ._checks import require_price_table
from ._llm_guard import DEFAULT_MAX_OUTPUT_TOKENS, Call, LLMGuard, import_sdk, is_async_provider
from ._llm_usage import Endpoint, StreamMeter, Usage, field, int_field

if TYPE_CHECKING:
    from anthropic import Anthropic, AsyncAnthropic

__all__ = ["AnthropicStreamMeter", "anthropic_actual", "guard_anthropic"]


def _usage(usage: Any, model: Any) -> Usage:
    return Usage(
        input_tokens=int_field(usage, "input_tokens"),
        output_tokens=int_field(usage, "output_tokens"),
        cached_input_tokens=int_field(usage, "cache_read_input_tokens"),
        cache_write_tokens=int_field(usage, "cache_creation_input_tokens"),
        model=model if isinstance(model, str) else None,
    )


def usage_of(message: Any) -> Usage | None:
    """The `Usage` of an Anthropic ``Message`` (``None`` if it has none)."""
    usage = field(message, "usage")
    return None if usage is None else _usage(usage, field(message, "model"))


class AnthropicStreamMeter(StreamMeter):
    """Keeps a streamed Anthropic answer's cost current: ``observe`` each raw stream event, read ``cost``.

    ``message_start`` reports the prompt's usage, ``message_delta`` the cumulative output (and, on newer API
    versions, updated prompt counts); before ``message_delta`` the output is one token per content delta (or the
    count ``message_start`` gave, if larger).
    """

    def _observe(self, item: Any) -> None:
        kind = field(item, "type")
        if kind == "message_start":
            message = field(item, "message")
            self.model_version = field(message, "model")
            self.partial = usage_of(message)
        elif kind == "content_block_delta":
            self.deltas += 1
        elif kind == "message_delta":
            delta_usage = field(item, "usage")
            if delta_usage is None:
                return
            base = self.partial or Usage(input_tokens=self.prompt_tokens, model=self.model_version)
            updates = {
                name: int_field(delta_usage, wire)
                for name, wire in (
                    ("input_tokens", "input_tokens"),
                    ("cached_input_tokens", "cache_read_input_tokens"),
                    ("cache_write_tokens", "cache_creation_input_tokens"),
                    ("output_tokens", "output_tokens"),
                )
                if field(delta_usage, wire) is not None
            }
            self.reported = Usage(
                input_tokens=updates.get("input_tokens", base.input_tokens),
                cached_input_tokens=updates.get("cached_input_tokens", base.cached_input_tokens),
                cache_write_tokens=updates.get("cache_write_tokens", base.cache_write_tokens),
                output_tokens=updates.get("output_tokens", base.output_tokens),
                model=base.model,
            )


def anthropic_actual(prices: PriceTable) -> Callable[[Any], int]:
    """An ``actual=`` for `with_cycles` around a function returning an Anthropic ``Message``: the exact cost of
    its usage, priced as the model it reports."""
    require_price_table(prices)

    def actual(message: Any) -> int:
        usage = usage_of(message)
        model = field(message, "model")
        if usage is None or not isinstance(model, str):
            raise ValueError("the Anthropic message carries no usage or model to price")
        return usage.cost(prices, model)

    return actual


def _meter(prices: PriceTable, model: str, prompt_tokens: int) -> StreamMeter:
    return AnthropicStreamMeter(prices, model, prompt_tokens=prompt_tokens)


MESSAGES = Endpoint(
    name="anthropic.messages.create",
    prompt_fields=("system", "messages", "tools"),
    max_tokens_fields=("max_tokens",),
    usage=usage_of,
    meter=_meter,
)


def _raw_stream(message_stream: Any) -> Any:
    # The SDK's MessageStream wraps the raw event stream that messages.create(stream=True) returns.
    return message_stream._raw_stream


def _guard_stream_sync(guard: LLMGuard, sdk: Any, original: Callable[..., Any]) -> Callable[..., Any]:
    def stream(**kwargs: Any) -> Any:
        def api_request() -> Any:
            call: Call = guard.begin_sync(MESSAGES, kwargs, streaming=True)
            try:
                raw = _raw_stream(original(**call.request).__enter__())
            except BaseException:
                call.release_sync()
                raise
            return call.track_sync(raw)

        return sdk.lib.streaming.MessageStreamManager(api_request, output_format=kwargs.get("output_format", sdk.omit))

    return stream


def _guard_stream_async(guard: LLMGuard, sdk: Any, original: Callable[..., Any]) -> Callable[..., Any]:
    def stream(**kwargs: Any) -> Any:
        async def api_request() -> Any:
            call: Call = await guard.begin_async(MESSAGES, kwargs, streaming=True)
            try:
                raw = _raw_stream(await original(**call.request).__aenter__())
            except BaseException:
                await call.release_async()
                raise
            return call.track_async(raw)

        return sdk.lib.streaming.AsyncMessageStreamManager(
            api_request(), output_format=kwargs.get("output_format", sdk.omit)
        )

    return stream


@overload
def guard_anthropic(
    provider: AsyncAnthropic,
    /,
    *,
    prices: PriceTable,
    estimate_input_tokens: Callable[[dict[str, Any]], int] | None = ...,
    default_max_output_tokens: int = ...,
    **options: Any,
) -> AsyncAnthropic: ...


@overload
def guard_anthropic(
    provider: Anthropic,
    /,
    *,
    prices: PriceTable,
    estimate_input_tokens: Callable[[dict[str, Any]], int] | None = ...,
    default_max_output_tokens: int = ...,
    **options: Any,
) -> Anthropic: ...


def guard_anthropic(
    provider: Anthropic | AsyncAnthropic,
    /,
    *,
    prices: PriceTable,
    estimate_input_tokens: Callable[[dict[str, Any]], int] | None = None,
    default_max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
    **options: Any,
) -> Anthropic | AsyncAnthropic:
    """A copy of ``provider`` (``anthropic.Anthropic`` or ``anthropic.AsyncAnthropic``) whose ``messages.create``
    and ``messages.stream`` reserve before the call and commit the exact cost of the reported usage.

    Options as for `guard_openai` (``max_tokens`` is required by the Messages API, so the reservation always
    uses the request's own limit).
    """
    sdk = import_sdk("anthropic")
    importlib.import_module("anthropic.lib.streaming")
    is_async = is_async_provider(
        provider, sdk.AsyncAnthropic, sdk.Anthropic,
        "guard_anthropic needs an anthropic.Anthropic or anthropic.AsyncAnthropic client",
    )
    guard = LLMGuard(
        prices,
        estimate_input_tokens=estimate_input_tokens,
        default_max_output_tokens=default_max_output_tokens,
        options=options,
        is_async=is_async,
    )
    guarded: Anthropic | AsyncAnthropic = provider.with_options()
    messages: Any = guarded.messages
    if is_async:
        messages.create = guard.wrap_async(MESSAGES, messages.create)
        messages.stream = _guard_stream_async(guard, sdk, messages.stream)
    else:
        messages.create = guard.wrap_sync(MESSAGES, messages.create)
        messages.stream = _guard_stream_sync(guard, sdk, messages.stream)
    return guarded
