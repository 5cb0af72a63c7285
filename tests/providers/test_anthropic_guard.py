"""guard_anthropic with the real anthropic SDK against a fake Messages API and the embedded Cycles server.

Sync (``Anthropic`` + ``CyclesClient``) and async (``AsyncAnthropic`` + ``AsyncCyclesClient`` on asyncio and
trio); ``messages.create`` streamed or not, and the ``messages.stream(...)`` helper.
"""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from anthropic.lib.streaming import AsyncMessageStream, MessageStream
from anthropic.types import Message
from fake_providers import FakeAnthropic, Script
from provider_support import Ledger, aclose_client, close, collect_garbage, consume, flush, resolve

from runcycles import BudgetExceededError
from runcycles.integrations.anthropic import guard_anthropic
from runcycles.pricing import PriceTable

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

MODEL = "claude-sonnet-4-5"
MESSAGES = [{"role": "user", "content": "Why budgets?"}]
TOOLS = [
    {"name": "search", "description": "Search", "input_schema": {"type": "object", "properties": {}}},
    {"name": "delete_everything", "description": "No", "input_schema": {"type": "object", "properties": {}}},
]
PROMPT_ESTIMATE = 50


def guarded(fake: FakeAnthropic, flavour: str, cycles: Any, prices: PriceTable, **options: Any) -> Any:
    provider = fake.async_client() if flavour == "async" else fake.client()
    return guard_anthropic(provider, prices=prices, client=cycles, **options)


def cost_of(prices: PriceTable, script: Script, output_tokens: int | None = None) -> int:
    # Anthropic's input_tokens already exclude cache reads and cache writes.
    return prices.cost(
        MODEL,
        input_tokens=script.input_tokens,
        cached_input_tokens=script.cached_tokens,
        cache_write_tokens=script.cache_write_tokens,
        output_tokens=script.output_tokens if output_tokens is None else output_tokens,
    )


CACHED = Script(input_tokens=40, output_tokens=9, cached_tokens=3000, cache_write_tokens=500)


async def test_create_commits_the_exact_cost_with_cache_reads_and_writes(
    ledger: Ledger, prices: PriceTable, flavour: str
) -> None:
    fake = FakeAnthropic(CACHED)
    cycles = ledger.client(flavour)
    claude = guarded(fake, flavour, cycles, prices)
    message = await resolve(claude.messages.create(model=MODEL, max_tokens=300, messages=MESSAGES))
    await aclose_client(cycles)

    assert isinstance(message, Message)
    assert fake.paths == ["/v1/messages"]
    assert ledger.committed() == cost_of(prices, CACHED) == ledger.spent()
    metrics = ledger.commits()[0]["metrics"]
    assert (metrics["tokens_input"], metrics["tokens_output"]) == (3540, 9)
    assert metrics["model_version"] == "claude-sonnet-4-5-20250929"


async def test_create_with_stream_true_is_the_sdk_stream_and_commits_message_delta_usage(
    ledger: Ledger, prices: PriceTable, flavour: str
) -> None:
    fake = FakeAnthropic(CACHED)
    cycles = ledger.client(flavour)
    claude = guarded(fake, flavour, cycles, prices)
    stream = await resolve(claude.messages.create(model=MODEL, max_tokens=300, messages=MESSAGES, stream=True))
    assert isinstance(stream, anthropic.AsyncStream if flavour == "async" else anthropic.Stream)
    events = await consume(stream)
    await aclose_client(cycles)

    assert [e.type for e in events][:2] == ["message_start", "content_block_start"]
    assert events[-2].type == "message_delta"
    assert ledger.committed() == cost_of(prices, CACHED) == ledger.spent()


async def test_the_stream_helper_commits_the_exact_cost(ledger: Ledger, prices: PriceTable, flavour: str) -> None:
    fake = FakeAnthropic(CACHED)
    cycles = ledger.client(flavour)
    claude = guarded(fake, flavour, cycles, prices)
    manager = claude.messages.stream(model=MODEL, max_tokens=300, messages=MESSAGES)
    if flavour == "async":
        async with manager as stream:
            assert isinstance(stream, AsyncMessageStream)
            text = "".join([t async for t in stream.text_stream])
            final = await stream.get_final_message()
    else:
        with manager as stream:
            assert isinstance(stream, MessageStream)
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
    await aclose_client(cycles)

    assert text == fake.script.text
    assert final.usage.output_tokens == 9
    assert fake.requests[0]["stream"] is True
    assert ledger.committed() == cost_of(prices, CACHED) == ledger.spent()
    assert len(ledger.commits()) == 1


async def test_a_denial_raises_and_the_provider_receives_nothing(prices: PriceTable, flavour: str) -> None:
    fake = FakeAnthropic()
    with Ledger.open(allocated=10) as ledger:
        cycles = ledger.client(flavour)
        claude = guarded(fake, flavour, cycles, prices)
        with pytest.raises(BudgetExceededError):
            await resolve(claude.messages.create(model=MODEL, max_tokens=300, messages=MESSAGES))
        manager = claude.messages.stream(model=MODEL, max_tokens=300, messages=MESSAGES)
        with pytest.raises(BudgetExceededError):
            if flavour == "async":
                async with manager:
                    pass
            else:
                with manager:
                    pass
        await aclose_client(cycles)
        assert ledger.reservations() == []
    assert fake.requests == []


@pytest.mark.parametrize("helper", [False, True])
async def test_caps_lower_max_tokens_and_drop_denied_tools(
    ledger: Ledger, prices: PriceTable, flavour: str, helper: bool
) -> None:
    ledger.set_caps({"max_tokens": 64, "tool_allowlist": ["search"]})
    fake = FakeAnthropic()
    cycles = ledger.client(flavour)
    claude = guarded(fake, flavour, cycles, prices)
    request = {"model": MODEL, "max_tokens": 1024, "messages": MESSAGES, "tools": TOOLS,
               "tool_choice": {"type": "tool", "name": "delete_everything"}}
    if not helper:
        await resolve(claude.messages.create(**request))
    elif flavour == "async":
        async with claude.messages.stream(**request) as stream:
            await stream.until_done()
    else:
        with claude.messages.stream(**request) as stream:
            stream.until_done()
    await aclose_client(cycles)

    [sent] = fake.requests
    assert sent["max_tokens"] == 64
    assert [t["name"] for t in sent["tools"]] == ["search"]
    assert "tool_choice" not in sent
    assert ledger.only()["status"] == "COMMITTED"


@pytest.mark.parametrize("ending", ["close", "garbage"])
async def test_an_abandoned_stream_commits_the_reported_prompt_and_the_deltas_once(
    ledger: Ledger, prices: PriceTable, flavour: str, ending: str
) -> None:
    script = Script(text="a b c d e f g h", input_tokens=70, cached_tokens=10, output_tokens=8)
    fake = FakeAnthropic(script)
    cycles = ledger.client(flavour)
    claude = guarded(fake, flavour, cycles, prices, estimate_input_tokens=lambda request: PROMPT_ESTIMATE)
    stream = await resolve(claude.messages.create(model=MODEL, max_tokens=300, messages=MESSAGES, stream=True))
    deltas = 0
    if flavour == "async":
        async for event in stream:
            deltas += event.type == "content_block_delta"
            if deltas == 3:
                break
    else:
        for event in stream:
            deltas += event.type == "content_block_delta"
            if deltas == 3:
                break
    if ending == "close":
        await close(stream)
    del stream
    await collect_garbage()
    assert await flush(cycles) == 0
    await aclose_client(cycles)

    # message_start reported the prompt, so that (not the estimate) is billed, with 3 output tokens.
    assert ledger.committed() == cost_of(prices, script, output_tokens=3) == ledger.spent()
    assert len(ledger.commits()) == 1 and ledger.releases() == 0


async def test_an_abandoned_stream_helper_commits_once(ledger: Ledger, prices: PriceTable, flavour: str) -> None:
    script = Script(text="a b c d e f g h", input_tokens=70, output_tokens=8)
    fake = FakeAnthropic(script)
    cycles = ledger.client(flavour)
    claude = guarded(fake, flavour, cycles, prices)
    manager = claude.messages.stream(model=MODEL, max_tokens=300, messages=MESSAGES)
    if flavour == "async":
        async with manager as stream:
            async for text in stream.text_stream:
                if text.strip() == "c":
                    break
    else:
        with manager as stream:
            for text in stream.text_stream:
                if text.strip() == "c":
                    break
    await aclose_client(cycles)
    assert ledger.committed() == cost_of(prices, script, output_tokens=3)
    assert len(ledger.commits()) == 1


async def test_a_provider_error_before_output_releases(ledger: Ledger, prices: PriceTable, flavour: str) -> None:
    fake = FakeAnthropic(Script(error_status=529))
    cycles = ledger.client(flavour)
    claude = guarded(fake, flavour, cycles, prices)
    with pytest.raises(anthropic.APIStatusError):
        await resolve(claude.messages.create(model=MODEL, max_tokens=300, messages=MESSAGES))
    await aclose_client(cycles)
    assert ledger.only()["status"] == "RELEASED"
    assert ledger.spent() == 0


@pytest.mark.parametrize(("error_after", "status"), [(0, "RELEASED"), (2, "COMMITTED")])
async def test_a_stream_error_releases_before_output_and_commits_after(
    ledger: Ledger, prices: PriceTable, flavour: str, error_after: int, status: str
) -> None:
    script = Script(input_tokens=70, error_after=error_after)
    fake = FakeAnthropic(script)
    cycles = ledger.client(flavour)
    claude = guarded(fake, flavour, cycles, prices)
    stream = await resolve(claude.messages.create(model=MODEL, max_tokens=300, messages=MESSAGES, stream=True))
    with pytest.raises(anthropic.APIStatusError):
        await consume(stream)
    await aclose_client(cycles)
    row = ledger.only()
    assert row["status"] == status
    if status == "COMMITTED":
        assert row["committed"]["amount"] == cost_of(prices, script, output_tokens=2)
    else:
        assert ledger.spent() == 0
