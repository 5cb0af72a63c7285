"""The fakes speak the providers' wire formats: every body validates against the SDKs' own response types, with
no field the type does not define."""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from fake_providers import FakeAnthropic, FakeOpenAI, Script
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
SCRIPT = Script(cached_tokens=10, reasoning_tokens=2, cache_write_tokens=5)


def no_extra(model: Any, path: str = "") -> None:
    """Fail on any field the SDK type does not declare (the SDK models accept and keep unknown ones)."""
    if isinstance(model, pydantic.BaseModel):
        assert not model.model_extra, f"{path}: undeclared fields {sorted(model.model_extra)}"
        for name in type(model).model_fields:
            no_extra(getattr(model, name), f"{path}.{name}")
    elif isinstance(model, (list, tuple)):
        for i, item in enumerate(model):
            no_extra(item, f"{path}[{i}]")


def validate(kind: Any, body: Any) -> Any:
    model = pydantic.TypeAdapter(kind).validate_python(body)
    no_extra(model)
    return model


def test_openai_chat_bodies_are_valid() -> None:
    fake = FakeOpenAI(SCRIPT)
    completion = validate(ChatCompletion, fake.chat_completion(CHAT))
    assert completion.usage.prompt_tokens_details.cached_tokens == 10
    streamed = {**CHAT, "stream_options": {"include_usage": True}}
    chunks = [validate(ChatCompletionChunk, c) for c in fake.chat_chunks(streamed)]
    assert chunks[-1].usage.completion_tokens == SCRIPT.output_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_openai_chat_stream_without_include_usage_has_no_usage_field() -> None:
    chunks = list(FakeOpenAI(SCRIPT).chat_chunks(CHAT))
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_openai_responses_bodies_are_valid() -> None:
    fake = FakeOpenAI(SCRIPT)
    body = {"model": "gpt-4o-mini", "input": "hi"}
    response = validate(Response, fake.response(body, done=True))
    assert response.output_text == SCRIPT.text
    events = [validate(ResponseStreamEvent, e) for e in fake.response_events(body)]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].response.usage.input_tokens_details.cached_tokens == 10


def test_openai_error_event_is_valid() -> None:
    fake = FakeOpenAI(Script(error_after=1))
    events = list(fake.stream_events("/v1/responses", {"model": "gpt-4o-mini", "stream": True}))
    name, data = events[-1]
    assert name == "error"
    validate(ResponseStreamEvent, data)


def test_anthropic_bodies_are_valid() -> None:
    fake = FakeAnthropic(SCRIPT)
    body = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": []}
    message = validate(Message, fake.answer("/v1/messages", body))
    assert message.usage.cache_read_input_tokens == 10
    events = list(fake.stream_events("/v1/messages", body))
    assert ("ping", {"type": "ping"}) in events  # the SDK skips pings; they are not in its event union
    for name, data in events:
        if name != "ping":
            event = validate(RawMessageStreamEvent, data)
            assert event.type == name


@pytest.mark.parametrize("fake", [FakeOpenAI(), FakeAnthropic()])
def test_streams_are_server_sent_events(fake: Any) -> None:
    path = "/v1/chat/completions" if isinstance(fake, FakeOpenAI) else "/v1/messages"
    client = fake.http_client()
    response = client.post(f"http://fake.local{path}", json={"model": "m", "stream": True})
    assert response.headers["content-type"] == "text/event-stream"
    blocks = response.text.strip().split("\n\n")
    for block in blocks:
        data = [line for line in block.split("\n") if line.startswith("data: ")]
        assert len(data) == 1
        payload = data[0][len("data: "):]
        if payload != "[DONE]":
            json.loads(payload)
    assert fake.requests == [{"model": "m", "stream": True}]
