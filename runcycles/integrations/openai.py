"""OpenAI clients guarded by Cycles budgets: ``guard_openai(openai.AsyncOpenAI(...), prices=..., client=...)``.

Needs the ``openai`` extra (``pip install 'runcycles[openai]'``). Guarded: ``chat.completions.create`` and
``responses.create``, streamed and not, and their non-streaming ``parse`` variants. Not guarded: the ``.stream()``
helpers and ``with_raw_response`` / ``with_streaming_response`` (use ``create(stream=True)``).

Usage semantics: a chat answer's ``prompt_tokens`` include ``prompt_tokens_details.cached_tokens`` (billed at the
cached price) and ``cache_write_tokens`` when reported (billed at the cache-write price, else the input price);
reasoning tokens are part of the completion (output) tokens; the Responses API reports ``input_tokens`` (with
``input_tokens_details``) and ``output_tokens`` the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, overload

from ..pricing import PriceTable
from ._checks import require_price_table
from ._llm_guard import DEFAULT_MAX_OUTPUT_TOKENS, LLMGuard, import_sdk, is_async_provider
from ._llm_usage import Endpoint, StreamMeter, Usage, field, given, int_field

if TYPE_CHECKING:
    from openai import AsyncOpenAI, OpenAI

__all__ = ["OpenAIStreamMeter", "guard_openai", "openai_actual"]


def usage_of(response: Any) -> Usage | None:
    """The `Usage` of a chat completion, a chat chunk, or a Responses API response (``None`` if it has none)."""
    usage = field(response, "usage")
    if usage is None:
        return None
    model = field(response, "model")
    model = model if isinstance(model, str) else None
    if field(usage, "prompt_tokens") is not None:  # chat completions
        prompt = int_field(usage, "prompt_tokens")
        details = field(usage, "prompt_tokens_details")
        output = int_field(usage, "completion_tokens")
    else:  # Responses API
        prompt = int_field(usage, "input_tokens")
        details = field(usage, "input_tokens_details")
        output = int_field(usage, "output_tokens")
    # The prompt count includes the tokens read from and written to the cache.
    cached = min(prompt, int_field(details, "cached_tokens"))
    written = min(prompt - cached, int_field(details, "cache_write_tokens"))
    return Usage(
        input_tokens=prompt - cached - written,
        cached_input_tokens=cached,
        cache_write_tokens=written,
        output_tokens=output,
        model=model,
    )


class OpenAIStreamMeter(StreamMeter):
    """Keeps a streamed OpenAI answer's cost current: ``observe`` each chat chunk or Responses event, read ``cost``.

    Chat streams report usage in their last chunk (with ``stream_options={"include_usage": True}``); Responses
    streams in ``response.completed`` (or ``response.incomplete`` / ``response.failed``). Until then the cost is
    ``prompt_tokens`` plus one output token per content delta.
    """

    def _observe(self, item: Any) -> None:
        self._note_model(item)
        kind = field(item, "type")
        if isinstance(kind, str) and kind.startswith("response."):
            self._observe_event(kind, item)
        else:
            self._observe_chunk(item)

    def _note_model(self, item: Any) -> None:
        model = field(item, "model")
        if isinstance(model, str):
            self.model_version = model

    def _observe_event(self, kind: str, event: Any) -> None:
        """A Responses API event: the response (with its usage once complete) or a delta."""
        response = field(event, "response")
        if response is not None:
            self._note_model(response)
            usage = usage_of(response)
            if usage is not None:
                self.reported = usage
        elif kind.endswith(".delta"):
            self.deltas += 1

    def _observe_chunk(self, chunk: Any) -> None:
        """A chat completion chunk: usage (the last chunk) or content deltas."""
        usage = usage_of(chunk)
        if usage is not None:
            self.reported = usage
        for choice in field(chunk, "choices") or ():
            if _has_output(field(choice, "delta")):
                self.deltas += 1


def _has_output(delta: Any) -> bool:
    return delta is not None and bool(
        field(delta, "content") or field(delta, "refusal") or field(delta, "tool_calls")
    )


def openai_actual(prices: PriceTable) -> Callable[[Any], int]:
    """An ``actual=`` for `with_cycles` around a function returning a chat completion or a Responses API
    response: the exact cost of its usage, priced as the model it reports."""
    require_price_table(prices)

    def actual(response: Any) -> int:
        usage = usage_of(response)
        model = field(response, "model")
        if usage is None or not isinstance(model, str):
            raise ValueError("the OpenAI response carries no usage or model to price")
        return usage.cost(prices, model)

    return actual


def _include_usage(request: dict[str, Any]) -> dict[str, Any]:
    options = request.get("stream_options")
    if not given(options):
        request["stream_options"] = {"include_usage": True}
    elif isinstance(options, dict) and "include_usage" not in options:
        request["stream_options"] = {**options, "include_usage": True}
    return request


def _meter(prices: PriceTable, model: str, prompt_tokens: int) -> StreamMeter:
    return OpenAIStreamMeter(prices, model, prompt_tokens=prompt_tokens)


CHAT = Endpoint(
    name="openai.chat.completions.create",
    prompt_fields=("messages", "tools", "functions"),
    max_tokens_fields=("max_completion_tokens", "max_tokens"),
    usage=usage_of,
    meter=_meter,
    prepare_stream=_include_usage,
    tiktoken=True,
)
RESPONSES = Endpoint(
    name="openai.responses.create",
    prompt_fields=("instructions", "input", "tools"),
    max_tokens_fields=("max_output_tokens",),
    usage=usage_of,
    meter=_meter,
    tiktoken=True,
)


@overload
def guard_openai(
    provider: AsyncOpenAI,
    /,
    *,
    prices: PriceTable,
    estimate_input_tokens: Callable[[dict[str, Any]], int] | None = ...,
    default_max_output_tokens: int = ...,
    **options: Any,
) -> AsyncOpenAI: ...


@overload
def guard_openai(
    provider: OpenAI,
    /,
    *,
    prices: PriceTable,
    estimate_input_tokens: Callable[[dict[str, Any]], int] | None = ...,
    default_max_output_tokens: int = ...,
    **options: Any,
) -> OpenAI: ...


def guard_openai(
    provider: OpenAI | AsyncOpenAI,
    /,
    *,
    prices: PriceTable,
    estimate_input_tokens: Callable[[dict[str, Any]], int] | None = None,
    default_max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
    **options: Any,
) -> OpenAI | AsyncOpenAI:
    """A copy of ``provider`` (``openai.OpenAI`` or ``openai.AsyncOpenAI``) whose ``chat.completions.create`` /
    ``parse`` and ``responses.create`` / ``parse`` reserve before the call and commit the exact cost of the
    reported usage. The original client stays unguarded.

    ``options`` are the `with_cycles` options (``client=`` the Cycles client — a `CyclesClient` for ``OpenAI``, an
    `AsyncCyclesClient` for ``AsyncOpenAI`` — subject fields, ``action_kind`` (default ``"llm.completion"``),
    ``action_name`` (default: the request's model), ``ttl_ms``, ``overage_policy`` …; each may also be a callable
    of the request's keyword arguments). ``estimate_input_tokens(request) -> int`` replaces the prompt estimate;
    ``default_max_output_tokens`` is reserved for requests that set no max-tokens field.
    """
    openai = import_sdk("openai")
    is_async = is_async_provider(
        provider, openai.AsyncOpenAI, openai.OpenAI, "guard_openai needs an openai.OpenAI or openai.AsyncOpenAI client"
    )
    guard = LLMGuard(
        prices,
        estimate_input_tokens=estimate_input_tokens,
        default_max_output_tokens=default_max_output_tokens,
        options=options,
        is_async=is_async,
    )
    wrap = guard.wrap_async if is_async else guard.wrap_sync
    guarded: OpenAI | AsyncOpenAI = provider.with_options()
    completions: Any = guarded.chat.completions
    completions.create = wrap(CHAT, completions.create)
    completions.parse = wrap(CHAT, completions.parse)
    responses: Any = guarded.responses
    responses.create = wrap(RESPONSES, responses.create)
    responses.parse = wrap(RESPONSES, responses.parse)
    return guarded
