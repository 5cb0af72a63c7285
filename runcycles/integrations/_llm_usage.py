"""What the provider guards share besides the call flow: usage, stream meters, prompt estimates and caps.

Provider modules describe their endpoints with an `Endpoint` (where the model, the max-tokens field, the prompt
and the usage live); everything else here is provider-neutral.
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs

from ..models import Caps, CyclesMetrics
from ..pricing import PriceTable, UnknownModelError
from ..validation import is_tool_allowed

__all__ = ["Endpoint", "StreamMeter", "Usage", "apply_caps", "char_upper_bound", "given"]

log = logging.getLogger("runcycles.integrations")

# Tokens a chat format adds per message (role, separators) and per request (priming); generous on purpose.
_PER_MESSAGE_OVERHEAD = 4
_PER_REQUEST_OVERHEAD = 16


def given(value: Any) -> bool:
    """Whether a request field is set (not ``None`` and not the SDKs' ``NOT_GIVEN`` / ``omit`` sentinels)."""
    return value is not None and type(value).__name__ not in ("NotGiven", "Omit")


def _field(obj: Any, name: str) -> Any:
    """``obj.name`` or ``obj[name]`` (SDK models and plain dicts alike), else ``None``."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@attrs.frozen
class Usage:
    """Token usage of one answer, split the way `PriceTable.cost` bills it.

    ``input_tokens`` excludes ``cached_input_tokens`` (read from the provider's cache) and
    ``cache_write_tokens`` (written to it); ``model`` is the model the provider reports (``model_version``).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    model: str | None = None

    @property
    def prompt_tokens(self) -> int:
        """Every prompt token, cached or not."""
        return self.input_tokens + self.cached_input_tokens + self.cache_write_tokens

    def cost(self, prices: PriceTable, requested_model: str) -> int:
        """The exact cost in microcents, priced as the reported model when the table knows it."""
        return prices.cost(
            pricing_model(prices, self.model, requested_model),
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cached_input_tokens=self.cached_input_tokens,
            cache_write_tokens=self.cache_write_tokens,
        )

    def metrics(self, latency_ms: float | None) -> CyclesMetrics:
        """The commit's metrics: tokens in and out, latency, the reported model."""
        return CyclesMetrics(
            tokens_input=self.prompt_tokens,
            tokens_output=self.output_tokens,
            latency_ms=None if latency_ms is None else max(0, int(latency_ms)),
            model_version=self.model[:128] if self.model else None,
        )


def pricing_model(prices: PriceTable, reported: str | None, requested: str) -> str:
    """The reported model when the table prices it (a dated name may have its own row), else the requested one."""
    if reported:
        try:
            prices.resolve(reported)
            return reported
        except UnknownModelError:
            pass
    return requested


class StreamMeter:
    """Keeps the cost of a streamed answer current as chunks or events go by.

    ``observe(item)`` each chunk or event; ``cost`` is the exact cost of the usage the provider reported, or —
    before it has — of ``prompt_tokens`` (the estimate) plus one output token per content delta received.
    Provider subclasses implement `_observe`.
    """

    def __init__(self, prices: PriceTable, model: str, *, prompt_tokens: int = 0) -> None:
        if not isinstance(prices, PriceTable):
            raise TypeError(f"prices must be a PriceTable, got {type(prices).__name__}")
        prices.resolve(model)  # unknown models fail here, not at the end of the stream
        self.prices = prices
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.deltas = 0
        """Content deltas seen (an output token each, until the provider reports usage)."""
        self.reported: Usage | None = None
        """The final usage the provider reported, once it has."""
        self.partial: Usage | None = None
        """Usage reported before the end (e.g. Anthropic's ``message_start``)."""
        self.model_version: str | None = None

    def observe(self, item: Any) -> None:
        """Account for one chunk (OpenAI chat), event (OpenAI Responses, Anthropic)."""
        try:
            self._observe(item)
        except Exception:  # a surprising chunk must never break the user's stream
            log.exception("could not read usage from a stream item of type %s", type(item).__name__)

    def _observe(self, item: Any) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def output_seen(self) -> bool:
        """Whether any output arrived (then the stream is committed, never released)."""
        return self.deltas > 0 or (self.reported is not None and self.reported.output_tokens > 0)

    @property
    def usage(self) -> Usage:
        """The reported usage, else the best known: reported prompt or the estimate, plus counted deltas."""
        if self.reported is not None:
            return self.reported
        if self.partial is not None:
            return attrs.evolve(self.partial, output_tokens=max(self.partial.output_tokens, self.deltas))
        return Usage(input_tokens=self.prompt_tokens, output_tokens=self.deltas, model=self.model_version)

    @property
    def cost(self) -> int:
        """Exact cost in ``USD_MICROCENTS`` of `usage`."""
        return self.usage.cost(self.prices, self.model)


@attrs.frozen
class Endpoint:
    """One guarded provider method: where its request keeps the prompt and limits, how to read its answers."""

    name: str
    prompt_fields: tuple[str, ...]
    """Request fields whose text is the prompt (messages, system, tools …)."""
    max_tokens_fields: tuple[str, ...]
    """Max-output fields, the one to set first when the request has none."""
    usage: Callable[[Any], Usage | None]
    meter: Callable[[PriceTable, str, int], StreamMeter]
    prepare_stream: Callable[[dict[str, Any]], dict[str, Any]] = lambda request: request
    tiktoken: bool = False
    """Whether ``tiktoken`` may count this provider's prompts."""

    def max_output_tokens(self, request: Mapping[str, Any]) -> int | None:
        """The smallest max-output field the request sets, if any."""
        values = [request[f] for f in self.max_tokens_fields if given(request.get(f)) and isinstance(request[f], int)]
        return min(values) if values else None

    def prompt_text(self, request: Mapping[str, Any]) -> tuple[str, int]:
        """The prompt's text (every string in the prompt fields) and its number of messages."""
        parts: list[str] = []
        messages = 0
        for name in self.prompt_fields:
            value = request.get(name)
            if not given(value):
                continue
            if isinstance(value, (list, tuple)):
                messages += len(value)
            parts.extend(_strings(value))
        return "\n".join(parts), max(messages, 1)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)
    elif hasattr(value, "model_dump"):
        yield from _strings(value.model_dump())
    elif isinstance(value, (int, float, bool)) or value is None:
        return
    else:
        yield json.dumps(value, default=str)


def char_upper_bound(text: str, messages: int) -> int:
    """The default prompt estimate: the prompt's UTF-8 bytes plus per-message and per-request overhead.

    A byte-level BPE token covers at least one byte, so for such tokenizers this bounds the token count from
    above (typically 3-4x the real count for English text).
    """
    return len(text.encode("utf-8")) + _PER_MESSAGE_OVERHEAD * messages + _PER_REQUEST_OVERHEAD


class _TiktokenCache:
    """``tiktoken`` encodings per model, loaded once; ``None`` when tiktoken is absent or cannot load one
    (it downloads encodings on first use, which fails without network)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._encodings: dict[str, Any] = {}

    def encoding(self, model: str) -> Any:
        with self._lock:
            if model in self._encodings:
                return self._encodings[model]
        encoding: Any = None
        try:
            tiktoken = importlib.import_module("tiktoken")
        except ImportError:
            tiktoken = None
        if tiktoken is not None:
            try:
                encoding = tiktoken.encoding_for_model(model)
            except Exception as exc:
                log.info("tiktoken cannot count tokens for %s (%s); using the character bound", model, exc)
        with self._lock:
            self._encodings[model] = encoding
        return encoding


_tiktoken = _TiktokenCache()


def estimate_prompt_tokens(endpoint: Endpoint, request: Mapping[str, Any], model: str) -> int:
    """The prompt-token estimate: ``tiktoken`` for OpenAI models when installed and loadable, else the
    character bound (`char_upper_bound`)."""
    text, messages = endpoint.prompt_text(request)
    if endpoint.tiktoken:
        encoding = _tiktoken.encoding(model)
        if encoding is not None:
            try:
                counted = len(encoding.encode(text, disallowed_special=()))
            except Exception:
                log.exception("tiktoken failed to encode the prompt; using the character bound")
            else:
                return counted + _PER_MESSAGE_OVERHEAD * messages + _PER_REQUEST_OVERHEAD
    return char_upper_bound(text, messages)


def tool_name(tool: Any) -> str | None:
    """A tool's name: ``name``, else the name inside its typed block (``{"type": "function", "function":
    {"name": ...}}``), else its ``type`` (built-in tools such as ``web_search``)."""
    name = _field(tool, "name")
    if isinstance(name, str):
        return name
    kind = _field(tool, "type")
    if isinstance(kind, str):
        inner = _field(_field(tool, kind), "name")
        return inner if isinstance(inner, str) else kind
    return None


def apply_caps(endpoint: Endpoint, request: dict[str, Any], caps: Caps | None, reservation_id: str) -> dict[str, Any]:
    """The request under ``caps``: max-output fields lowered to ``caps.max_tokens`` (never raised; set when the
    request has none), tools the caps do not allow removed (logged), a ``tool_choice`` naming one dropped too."""
    if caps is None:
        return request
    request = dict(request)
    if caps.max_tokens is not None:
        _lower_max_tokens(endpoint, request, caps.max_tokens, reservation_id)
    if given(request.get("tools")):
        _drop_tools(endpoint, request, caps, reservation_id)
    return request


def _lower_max_tokens(endpoint: Endpoint, request: dict[str, Any], max_tokens: int, reservation_id: str) -> None:
    """Lower the max-output fields the request sets to ``max_tokens`` (set the first one when it sets none)."""
    present = [f for f in endpoint.max_tokens_fields if given(request.get(f))]
    for field in present or [endpoint.max_tokens_fields[0]]:
        current = request.get(field)
        if not isinstance(current, int) or current > max_tokens:
            request[field] = max_tokens
            log.info("caps lowered %s to %d: reservation_id=%s", field, max_tokens, reservation_id)


def _drop_tools(endpoint: Endpoint, request: dict[str, Any], caps: Caps, reservation_id: str) -> None:
    """Remove the tools ``caps`` do not allow (logged) and a ``tool_choice`` naming one; none left: both fields go."""
    kept: list[Any] = []
    dropped: list[str] = []
    for tool in list(request.get("tools") or ()):
        name = tool_name(tool)
        if name is not None and not is_tool_allowed(caps, name):
            dropped.append(name)
        else:
            kept.append(tool)
    if not dropped:
        return
    log.warning(
        "caps removed tool(s) %s from the %s request: reservation_id=%s",
        ", ".join(dropped), endpoint.name, reservation_id,
    )
    if not kept:
        request.pop("tools")
        request.pop("tool_choice", None)
        return
    request["tools"] = kept
    choice = request.get("tool_choice")
    if given(choice) and tool_name(choice) in dropped:
        request.pop("tool_choice")


def int_field(obj: Any, name: str) -> int:
    """A non-negative int field of an SDK model or dict (0 when absent or null)."""
    return _int(_field(obj, name))


def field(obj: Any, name: str) -> Any:
    """``obj.name`` or ``obj[name]``, else ``None``."""
    return _field(obj, name)
