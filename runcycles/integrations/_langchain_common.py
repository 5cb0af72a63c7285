"""What the LangChain middleware and callback handlers share: usage read from messages and LLM results, the
model name and the pre-call estimate."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

try:
    from langchain_core.messages import AIMessage, BaseMessage
    from langchain_core.outputs import ChatGeneration, LLMResult
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "runcycles.integrations.langchain needs the 'langchain' extra: pip install 'runcycles[langchain]'"
    ) from exc

from ..pricing import PriceTable
from ._llm_usage import Usage, char_upper_bound

__all__ = ["estimate_cost", "model_name_of", "usage_of_message", "usage_of_result"]


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _from_usage_metadata(meta: Mapping[str, Any], model: str | None) -> Usage:
    details = meta.get("input_token_details") or {}
    cached = _int(details.get("cache_read"))
    written = _int(details.get("cache_creation"))
    # LangChain's input_tokens include the cached and cache-written ones; PriceTable wants them apart.
    plain = max(0, _int(meta.get("input_tokens")) - cached - written)
    return Usage(
        input_tokens=plain, output_tokens=_int(meta.get("output_tokens")), cached_input_tokens=cached,
        cache_write_tokens=written, model=model,
    )


def _reported_model(message: BaseMessage) -> str | None:
    meta = getattr(message, "response_metadata", None) or {}
    name = meta.get("model_name") or meta.get("model")
    return name if isinstance(name, str) and name else None


def usage_of_message(message: Any) -> Usage | None:
    """The usage an `AIMessage` reports in ``usage_metadata`` (``None`` when it reports none)."""
    meta = getattr(message, "usage_metadata", None)
    if not isinstance(message, AIMessage) or not meta:
        return None
    return _from_usage_metadata(meta, _reported_model(message))


def sum_usage(usages: Iterable[Usage | None]) -> Usage | None:
    """The sum of the usages given (``None`` when none was reported); the model is the first reported."""
    total: Usage | None = None
    for usage in usages:
        if usage is None:
            continue
        if total is None:
            total = usage
            continue
        total = Usage(
            input_tokens=total.input_tokens + usage.input_tokens,
            output_tokens=total.output_tokens + usage.output_tokens,
            cached_input_tokens=total.cached_input_tokens + usage.cached_input_tokens,
            cache_write_tokens=total.cache_write_tokens + usage.cache_write_tokens,
            model=total.model or usage.model,
        )
    return total


def usage_of_result(result: LLMResult) -> Usage | None:
    """Usage of an `LLMResult`: the generations' ``usage_metadata`` (chat models), else ``llm_output``'s
    ``token_usage``/``usage`` (OpenAI-style ``prompt_tokens``/``completion_tokens`` or ``input``/``output``)."""
    from_messages = sum_usage(
        usage_of_message(generation.message)
        for generations in result.generations
        for generation in generations
        if isinstance(generation, ChatGeneration)
    )
    if from_messages is not None:
        return from_messages
    return _usage_of_llm_output(result.llm_output or {})


def _usage_of_llm_output(output: Mapping[str, Any]) -> Usage | None:
    raw = output.get("token_usage") or output.get("usage")
    if not isinstance(raw, Mapping):
        return None
    model = output.get("model_name") or output.get("model")
    model = model if isinstance(model, str) and model else None
    if "input_tokens" in raw or "output_tokens" in raw:
        return _from_usage_metadata(raw, model)
    return _from_openai_token_usage(raw, model)


def _from_openai_token_usage(raw: Mapping[str, Any], model: str | None) -> Usage:
    """OpenAI-style ``prompt_tokens`` (cached ones included) and ``completion_tokens``."""
    details = raw.get("prompt_tokens_details") or {}
    cached = _int(details.get("cached_tokens")) if isinstance(details, Mapping) else 0
    return Usage(
        input_tokens=max(0, _int(raw.get("prompt_tokens")) - cached),
        output_tokens=_int(raw.get("completion_tokens")),
        cached_input_tokens=cached,
        model=model,
    )


def model_name_of(model: Any) -> str | None:
    """A chat model's model name (``model_name``, ``model`` or ``model_id``), if it has one."""
    for attribute in ("model_name", "model", "model_id"):
        value = getattr(model, attribute, None)
        if isinstance(value, str) and value:
            return value
    return None


def _text(message: Any) -> str:
    if isinstance(message, BaseMessage):
        content = message.content
        calls = getattr(message, "tool_calls", None)
        text = content if isinstance(content, str) else json.dumps(content, default=str)
        return text + (json.dumps(calls, default=str) if calls else "")
    return str(message)


def estimate_cost(
    prices: PriceTable,
    model: str,
    messages: Sequence[Any],
    *,
    tools: Sequence[Any] = (),
    max_output_tokens: int,
) -> int:
    """The reservation for one model call: a byte-level upper bound of the prompt (messages and tool schemas)
    plus ``max_output_tokens``, priced by ``prices``."""
    parts = [_text(message) for message in messages]
    for tool in tools:
        if isinstance(tool, Mapping):
            parts.append(json.dumps(tool, default=str))
        else:
            parts.append(f"{getattr(tool, 'name', '')} {getattr(tool, 'description', '')} {getattr(tool, 'args', '')}")
    prompt = char_upper_bound("".join(parts), len(messages))
    return prices.estimate(model, input_tokens=prompt, max_output_tokens=max_output_tokens)
