"""Local fakes of the OpenAI and Anthropic HTTP APIs, for the examples and the tests: no network, no key.

Each fake answers through the SDK's own transport hook (``http_client=`` with an ``httpx2.MockTransport``, the
HTTP library the current SDKs are built on) with bodies shaped like the providers' documented wire formats:
JSON answers, and Server-Sent Events for streams (``data: [DONE]`` for OpenAI chat, typed ``event:`` lines for
the Responses API and Anthropic). The fake records every request body it receives, and its `Script` says what
to answer: the text, the usage to report, and failures to inject.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx2
import openai

__all__ = ["FakeAnthropic", "FakeOpenAI", "Script"]

CREATED = 1_700_000_000


@dataclass
class Script:
    """What a fake answers.

    ``text`` is sent as one delta per word; the usage numbers are reported as the provider would
    (``prompt_tokens`` / ``input_tokens`` include ``cached_tokens`` and ``cache_write_tokens`` for OpenAI; for
    Anthropic ``input_tokens`` excludes both). ``error_status`` answers every request with that
    HTTP error; ``error_after`` ends a stream with an error event after that many deltas.
    """

    text: str = "Budgets keep agents honest and invoices boring."
    input_tokens: int = 120
    output_tokens: int = 9
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0
    model_suffix: str | None = None
    error_status: int | None = None
    error_after: int | None = None

    def deltas(self) -> list[str]:
        words = self.text.split(" ")
        return [word if i == 0 else " " + word for i, word in enumerate(words)]


def _sse(events: Iterator[tuple[str | None, Any]]) -> bytes:
    out: list[str] = []
    for event, data in events:
        if event is not None:
            out.append(f"event: {event}\n")
        out.append(f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n")
    return "".join(out).encode()


class _Fake:
    base_url = "http://fake.local"
    default_suffix = ""

    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self.requests: list[dict[str, Any]] = []
        """The JSON body of every request received, in order."""
        self.paths: list[str] = []

    def model_of(self, body: dict[str, Any]) -> str:
        suffix = self.script.model_suffix if self.script.model_suffix is not None else self.default_suffix
        return f"{body.get('model', 'unknown')}{suffix}"

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        body: dict[str, Any] = json.loads(request.content or b"{}")
        self.requests.append(body)
        self.paths.append(request.url.path)
        if self.script.error_status is not None:
            return httpx2.Response(self.script.error_status, json=self.error_body())
        if body.get("stream"):
            content = _sse(self.stream_events(request.url.path, body))
            return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=content)
        return httpx2.Response(200, json=self.answer(request.url.path, body))

    def error_body(self) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def answer(self, path: str, body: dict[str, Any]) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def stream_events(self, path: str, body: dict[str, Any]) -> Iterator[tuple[str | None, Any]]:  # pragma: no cover
        raise NotImplementedError

    def http_client(self) -> httpx2.Client:
        """An ``httpx2.Client`` answering from this fake (``http_client=`` of a sync SDK client)."""
        return httpx2.Client(transport=httpx2.MockTransport(self.handle))

    def async_http_client(self) -> httpx2.AsyncClient:
        """An ``httpx2.AsyncClient`` answering from this fake (``http_client=`` of an async SDK client)."""
        return httpx2.AsyncClient(transport=httpx2.MockTransport(self.handle))


class FakeOpenAI(_Fake):
    """The OpenAI API's ``/chat/completions`` and ``/responses``, streamed and not."""

    default_suffix = "-2024-07-18"

    def client(self) -> openai.OpenAI:
        """An ``openai.OpenAI`` talking to this fake."""
        return openai.OpenAI(api_key="sk-fake", base_url=f"{self.base_url}/v1", http_client=self.http_client(),
                             max_retries=0)

    def async_client(self) -> openai.AsyncOpenAI:
        """An ``openai.AsyncOpenAI`` talking to this fake."""
        return openai.AsyncOpenAI(api_key="sk-fake", base_url=f"{self.base_url}/v1",
                                  http_client=self.async_http_client(), max_retries=0)

    def error_body(self) -> dict[str, Any]:
        return {"error": {"message": "The server had an error", "type": "server_error", "param": None, "code": None}}

    # -- chat completions

    def chat_usage(self) -> dict[str, Any]:
        s = self.script
        return {
            "prompt_tokens": s.input_tokens,
            "completion_tokens": s.output_tokens,
            "total_tokens": s.input_tokens + s.output_tokens,
            "prompt_tokens_details": {
                "cached_tokens": s.cached_tokens, "cache_write_tokens": s.cache_write_tokens, "audio_tokens": 0,
            },
            "completion_tokens_details": {
                "reasoning_tokens": s.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake1",
            "object": "chat.completion",
            "created": CREATED,
            "model": self.model_of(body),
            "system_fingerprint": "fp_fake",
            "service_tier": "default",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.script.text, "refusal": None, "annotations": []},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": self.chat_usage(),
        }

    def chat_chunks(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> dict[str, Any]:
            data: dict[str, Any] = {
                "id": "chatcmpl-fake1",
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": self.model_of(body),
                "system_fingerprint": "fp_fake",
                "service_tier": "default",
                "choices": choices,
            }
            if include_usage:
                data["usage"] = usage
            return data

        def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

        yield chunk([choice({"role": "assistant", "content": "", "refusal": None})])
        for text in self.script.deltas():
            yield chunk([choice({"content": text})])
        yield chunk([choice({}, "stop")])
        if include_usage:
            yield chunk([], self.chat_usage())

    # -- responses

    def responses_usage(self) -> dict[str, Any]:
        s = self.script
        return {
            "input_tokens": s.input_tokens,
            "input_tokens_details": {"cached_tokens": s.cached_tokens, "cache_write_tokens": s.cache_write_tokens},
            "output_tokens": s.output_tokens,
            "output_tokens_details": {"reasoning_tokens": s.reasoning_tokens},
            "total_tokens": s.input_tokens + s.output_tokens,
        }

    def message_item(self, status: str, text: str | None) -> dict[str, Any]:
        content = [] if text is None else [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
        return {"type": "message", "id": "msg_fake1", "status": status, "role": "assistant", "content": content}

    def response(self, body: dict[str, Any], *, done: bool) -> dict[str, Any]:
        return {
            "id": "resp_fake1",
            "object": "response",
            "created_at": CREATED,
            "status": "completed" if done else "in_progress",
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": self.model_of(body),
            "output": [self.message_item("completed", self.script.text)] if done else [],
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": body.get("tools", []),
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": self.responses_usage() if done else None,
            "user": None,
            "metadata": {},
        }

    def response_events(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        seq = iter(range(1_000_000))
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        where = {"item_id": "msg_fake1", "output_index": 0, "content_index": 0}
        yield {"type": "response.created", "sequence_number": next(seq), "response": self.response(body, done=False)}
        yield {"type": "response.in_progress", "sequence_number": next(seq),
               "response": self.response(body, done=False)}
        yield {"type": "response.output_item.added", "sequence_number": next(seq), "output_index": 0,
               "item": self.message_item("in_progress", None)}
        yield {"type": "response.content_part.added", "sequence_number": next(seq), **where, "part": part}
        for text in self.script.deltas():
            yield {"type": "response.output_text.delta", "sequence_number": next(seq), **where, "delta": text,
                   "logprobs": []}
        yield {"type": "response.output_text.done", "sequence_number": next(seq), **where,
               "text": self.script.text, "logprobs": []}
        yield {"type": "response.content_part.done", "sequence_number": next(seq), **where,
               "part": {**part, "text": self.script.text}}
        yield {"type": "response.output_item.done", "sequence_number": next(seq), "output_index": 0,
               "item": self.message_item("completed", self.script.text)}
        yield {"type": "response.completed", "sequence_number": next(seq), "response": self.response(body, done=True)}

    # -- dispatch

    def answer(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.response(body, done=True) if path.endswith("/responses") else self.chat_completion(body)

    def stream_events(self, path: str, body: dict[str, Any]) -> Iterator[tuple[str | None, Any]]:
        responses = path.endswith("/responses")
        items = self.response_events(body) if responses else self.chat_chunks(body)
        deltas = 0
        for item in items:
            is_delta = item.get("type") == "response.output_text.delta" or any(
                c.get("delta", {}).get("content") for c in item.get("choices", ())
            )
            if is_delta and self.script.error_after is not None and deltas >= self.script.error_after:
                error = self.error_body()
                if responses:
                    yield "error", {"type": "error", "sequence_number": 0, "code": "server_error",
                                    "message": error["error"]["message"], "param": None}
                else:
                    yield None, error
                return
            deltas += is_delta
            yield (item["type"] if responses else None), item
        if not responses:
            yield None, "[DONE]"


class FakeAnthropic(_Fake):
    """The Anthropic Messages API (``/v1/messages``), streamed and not."""

    default_suffix = "-20250929"

    def client(self) -> anthropic.Anthropic:
        """An ``anthropic.Anthropic`` talking to this fake."""
        return anthropic.Anthropic(api_key="sk-ant-fake", base_url=self.base_url, http_client=self.http_client(),
                                   max_retries=0)

    def async_client(self) -> anthropic.AsyncAnthropic:
        """An ``anthropic.AsyncAnthropic`` talking to this fake."""
        return anthropic.AsyncAnthropic(api_key="sk-ant-fake", base_url=self.base_url,
                                        http_client=self.async_http_client(), max_retries=0)

    def error_body(self) -> dict[str, Any]:
        return {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}

    def usage(self, *, output_tokens: int) -> dict[str, Any]:
        s = self.script
        return {
            "input_tokens": s.input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": s.cache_write_tokens,
            "cache_read_input_tokens": s.cached_tokens,
            "service_tier": "standard",
        }

    def message(self, body: dict[str, Any], *, done: bool) -> dict[str, Any]:
        return {
            "id": "msg_fake1",
            "type": "message",
            "role": "assistant",
            "model": self.model_of(body),
            "content": [{"type": "text", "text": self.script.text}] if done else [],
            "stop_reason": "end_turn" if done else None,
            "stop_sequence": None,
            "usage": self.usage(output_tokens=self.script.output_tokens if done else 1),
        }

    def answer(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.message(body, done=True)

    def stream_events(self, path: str, body: dict[str, Any]) -> Iterator[tuple[str | None, Any]]:
        yield "message_start", {"type": "message_start", "message": self.message(body, done=False)}
        yield "content_block_start", {"type": "content_block_start", "index": 0,
                                      "content_block": {"type": "text", "text": ""}}
        yield "ping", {"type": "ping"}
        for n, text in enumerate(self.script.deltas()):
            if self.script.error_after is not None and n >= self.script.error_after:
                yield "error", self.error_body()
                return
            yield "content_block_delta", {"type": "content_block_delta", "index": 0,
                                          "delta": {"type": "text_delta", "text": text}}
        yield "content_block_stop", {"type": "content_block_stop", "index": 0}
        yield "message_delta", {"type": "message_delta",
                                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                "usage": {"output_tokens": self.script.output_tokens}}
        yield "message_stop", {"type": "message_stop"}
