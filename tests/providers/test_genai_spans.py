"""The GenAI span of a guarded provider call: one CLIENT span ``chat {model}`` with OpenTelemetry's ``gen_ai.*``
attributes, the Cycles spans under it, and the ``traceparent`` the embedded server received in its trace.

Spans go to the SDK's in-memory exporter through test-owned providers (``_otel.configure``), as in
tests/test_otel.py; sync and async clients, the async ones on asyncio and trio.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from fake_providers import FakeAnthropic, FakeOpenAI, Script
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from provider_support import Ledger, aclose_client, consume, resolve

from runcycles import BudgetExceededError, _otel
from runcycles.integrations.anthropic import guard_anthropic
from runcycles.integrations.openai import guard_openai
from runcycles.pricing import PriceTable

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

MESSAGES = [{"role": "user", "content": "Why budgets?"}]


class Spans:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("test")

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        [span] = self.named(name)
        return span


@pytest.fixture
def spans() -> Iterator[Spans]:
    s = Spans()
    _otel.configure(tracer_provider=s.provider)
    yield s
    _otel.configure()
    s.provider.shutdown()


def traceparent_of(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    assert ctx is not None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def server_log(ledger: Ledger, flavour: str) -> list[Any]:
    transport = ledger.async_transport if flavour == "async" else ledger.sync_transport
    return list(transport.log)


def assert_cycles_spans_under(spans: Spans, gen_ai: ReadableSpan, ledger: Ledger, flavour: str) -> None:
    """``cycles.reserve`` and ``cycles.commit`` are children of the GenAI span, and the server got their
    traceparents (the GenAI span's trace)."""
    reserve, commit = spans.one("cycles.reserve"), spans.one("cycles.commit")
    assert gen_ai.context is not None
    for child in (reserve, commit):
        assert child.parent is not None and child.parent.span_id == gen_ai.context.span_id
        assert child.context is not None and child.context.trace_id == gen_ai.context.trace_id
    received = {e.operation: e.headers.get("traceparent") for e in server_log(ledger, flavour)}
    assert received["create"] == traceparent_of(reserve)
    assert received["commit"] == traceparent_of(commit)
    assert f"{gen_ai.context.trace_id:032x}" in received["create"]


def gen_ai_attributes(span: ReadableSpan, system: str, model: str) -> dict[str, Any]:
    attributes = dict(span.attributes or {})
    assert span.kind.name == "CLIENT"
    assert span.name == f"chat {model}"
    for name, value in {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": system,
        "gen_ai.provider.name": system,
        "gen_ai.request.model": model,
    }.items():
        assert attributes[name] == value, name
    return attributes


async def test_openai_chat_is_one_gen_ai_span_holding_the_cycles_spans(
    ledger: Ledger, prices: PriceTable, flavour: str, spans: Spans
) -> None:
    fake = FakeOpenAI(Script(input_tokens=1200, output_tokens=350, cached_tokens=200))
    cycles = ledger.client(flavour)
    ledger.set_caps({"max_tokens": 120})
    provider = fake.async_client() if flavour == "async" else fake.client()
    oai = guard_openai(provider, prices=prices, client=cycles)
    with spans.tracer.start_as_current_span("handle-request") as caller:
        reply = await resolve(oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=300))
    await aclose_client(cycles)

    span = spans.one("chat gpt-4o-mini")
    attributes = gen_ai_attributes(span, "openai", "gpt-4o-mini")
    assert attributes["gen_ai.request.max_tokens"] == fake.requests[0]["max_tokens"] == 120  # after the caps
    assert attributes["gen_ai.usage.input_tokens"] == 1200
    assert attributes["gen_ai.usage.output_tokens"] == 350
    assert attributes["gen_ai.response.model"] == reply.model == "gpt-4o-mini-2024-07-18"
    assert attributes["gen_ai.response.id"] == reply.id
    assert "error.type" not in attributes
    assert span.parent is not None and span.parent.span_id == caller.get_span_context().span_id
    assert_cycles_spans_under(spans, span, ledger, flavour)


async def test_openai_chat_stream_span_ends_when_the_stream_settles(
    ledger: Ledger, prices: PriceTable, flavour: str, spans: Spans
) -> None:
    fake = FakeOpenAI(Script(input_tokens=800, output_tokens=9, cached_tokens=512))
    cycles = ledger.client(flavour)
    provider = fake.async_client() if flavour == "async" else fake.client()
    oai = guard_openai(provider, prices=prices, client=cycles)
    with spans.tracer.start_as_current_span("handle-request") as caller:
        stream = await resolve(oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert spans.named("chat gpt-4o-mini") == []  # still open: the stream has not settled
    chunks = await consume(stream)
    await aclose_client(cycles)

    span = spans.one("chat gpt-4o-mini")
    attributes = gen_ai_attributes(span, "openai", "gpt-4o-mini")
    usage = chunks[-1].usage
    assert attributes["gen_ai.usage.input_tokens"] == usage.prompt_tokens == 800
    assert attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens == 9
    assert attributes["gen_ai.response.model"] == chunks[-1].model
    assert span.parent is not None and span.parent.span_id == caller.get_span_context().span_id
    assert_cycles_spans_under(spans, span, ledger, flavour)


async def test_anthropic_create_is_one_gen_ai_span_holding_the_cycles_spans(
    ledger: Ledger, prices: PriceTable, flavour: str, spans: Spans
) -> None:
    fake = FakeAnthropic(Script(input_tokens=40, output_tokens=9))
    cycles = ledger.client(flavour)
    provider = fake.async_client() if flavour == "async" else fake.client()
    claude = guard_anthropic(provider, prices=prices, client=cycles)
    message = await resolve(claude.messages.create(model="claude-sonnet-4-5", max_tokens=300, messages=MESSAGES))
    await aclose_client(cycles)

    span = spans.one("chat claude-sonnet-4-5")
    attributes = gen_ai_attributes(span, "anthropic", "claude-sonnet-4-5")
    assert attributes["gen_ai.request.max_tokens"] == 300
    assert attributes["gen_ai.usage.input_tokens"] == message.usage.input_tokens == 40
    assert attributes["gen_ai.usage.output_tokens"] == message.usage.output_tokens == 9
    assert attributes["gen_ai.response.model"] == message.model
    assert span.parent is None  # no caller span: the GenAI span is the root of the call's trace
    assert_cycles_spans_under(spans, span, ledger, flavour)


async def test_a_denied_call_ends_its_span_with_the_error(prices: PriceTable, flavour: str, spans: Spans) -> None:
    fake = FakeOpenAI()
    with Ledger.open(allocated=1) as ledger:
        cycles = ledger.client(flavour)
        provider = fake.async_client() if flavour == "async" else fake.client()
        oai = guard_openai(provider, prices=prices, client=cycles)
        with pytest.raises(BudgetExceededError):
            await resolve(oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
        await aclose_client(cycles)

    span = spans.one("chat gpt-4o-mini")
    assert dict(span.attributes or {})["error.type"] == "BudgetExceededError"
    assert span.status.status_code.name == "ERROR"
    assert fake.requests == []


async def test_a_stream_failing_after_output_ends_its_span_with_the_error_and_the_commit_under_it(
    ledger: Ledger, prices: PriceTable, flavour: str, spans: Spans
) -> None:
    fake = FakeOpenAI(Script(error_after=2))
    cycles = ledger.client(flavour)
    provider = fake.async_client() if flavour == "async" else fake.client()
    oai = guard_openai(provider, prices=prices, client=cycles, estimate_input_tokens=lambda request: 50)
    stream = await resolve(oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    with pytest.raises(openai.APIError):
        await consume(stream)
    await aclose_client(cycles)

    span = spans.one("chat gpt-4o-mini")
    attributes = dict(span.attributes or {})
    assert attributes["error.type"] == "APIError"
    assert span.status.status_code.name == "ERROR"
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (50, 2)
    assert_cycles_spans_under(spans, span, ledger, flavour)



async def test_without_opentelemetry_no_span_is_made_and_calls_and_streams_still_settle(
    ledger: Ledger, prices: PriceTable, flavour: str, spans: Spans, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cached "OpenTelemetry is not importable" (the anthropic SDK imports opentelemetry itself, so the
    # import cannot be blocked in a subprocess here; tests/test_otel.py checks the real absence).
    monkeypatch.setattr(_otel, "_state", None)
    fake = FakeOpenAI(Script(input_tokens=100, output_tokens=9))
    cycles = ledger.client(flavour)
    provider = fake.async_client() if flavour == "async" else fake.client()
    oai = guard_openai(provider, prices=prices, client=cycles)
    with spans.tracer.start_as_current_span("handle-request"):
        await resolve(oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
        stream = await resolve(oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
        await consume(stream)
    await aclose_client(cycles)

    assert [s.name for s in spans.exporter.get_finished_spans()] == ["handle-request"]
    assert [r["status"] for r in ledger.reservations()] == ["COMMITTED", "COMMITTED"]
    assert all("traceparent" not in e.headers for e in server_log(ledger, flavour))
