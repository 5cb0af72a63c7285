"""guard_openai with the real openai SDK against a fake OpenAI API and the embedded Cycles server.

Every test runs with the sync clients (``OpenAI`` + ``CyclesClient``) and the async ones (``AsyncOpenAI`` +
``AsyncCyclesClient``, on asyncio and trio); the committed amount is read back from the ledger.
"""

from __future__ import annotations

import logging
from typing import Any

import openai
import pytest
from fake_providers import FakeOpenAI, Script
from openai.types.chat import ChatCompletion
from openai.types.responses import Response
from provider_support import Ledger, aclose_client, close, collect_garbage, consume, flush, resolve

from runcycles import BudgetExceededError
from runcycles.integrations.openai import guard_openai
from runcycles.pricing import PriceTable, UnknownModelError

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why budgets?"}]
TOOLS = [
    {"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {}}}},
    {"type": "function", "function": {"name": "delete_everything", "parameters": {"type": "object", "properties": {}}}},
]
RESPONSE_TOOLS = [
    {"type": "function", "name": "search", "parameters": {"type": "object", "properties": {}}, "strict": False},
    {"type": "function", "name": "delete_everything", "parameters": {"type": "object", "properties": {}},
     "strict": False},
]
PROMPT_ESTIMATE = 50


def guarded(fake: FakeOpenAI, flavour: str, cycles: Any, prices: PriceTable, **options: Any) -> Any:
    provider = fake.async_client() if flavour == "async" else fake.client()
    return guard_openai(provider, prices=prices, client=cycles, **options)


def stream_type(flavour: str) -> type:
    return openai.AsyncStream if flavour == "async" else openai.Stream


async def test_chat_commits_the_exact_cost_of_the_reported_usage(
    ledger: Ledger, prices: PriceTable, flavour: str
) -> None:
    # prompt_tokens include the cached ones; reasoning tokens are inside completion_tokens.
    fake = FakeOpenAI(Script(input_tokens=1200, output_tokens=350, cached_tokens=200, reasoning_tokens=100))
    cycles = ledger.client(flavour)
    oai = guarded(fake, flavour, cycles, prices)
    reply = await resolve(oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=300))
    await aclose_client(cycles)

    assert isinstance(reply, ChatCompletion)
    assert reply.choices[0].message.content == fake.script.text
    expected = prices.cost("gpt-4o-mini", input_tokens=1000, cached_input_tokens=200, output_tokens=350)
    assert ledger.committed() == expected == ledger.spent()
    [commit] = ledger.commits()
    assert commit["actual"]["amount"] == expected
    metrics = commit["metrics"]
    assert (metrics["tokens_input"], metrics["tokens_output"]) == (1200, 350)
    assert metrics["model_version"] == "gpt-4o-mini-2024-07-18"
    assert metrics["latency_ms"] >= 0
    row = ledger.only()
    assert row["action"] == {"kind": "llm.completion", "name": "gpt-4o-mini"}
    prompt = len(b"Be brief.\nsystem\nWhy budgets?\nuser") + 4 * 2 + 16  # the character bound
    assert row["reserved"]["amount"] == prices.estimate("gpt-4o-mini", input_tokens=prompt, max_output_tokens=300)


async def test_chat_stream_is_the_sdk_stream_and_commits_the_usage_of_its_last_chunk(
    ledger: Ledger, prices: PriceTable, flavour: str
) -> None:
    fake = FakeOpenAI(Script(input_tokens=800, output_tokens=9, cached_tokens=512))
    cycles = ledger.client(flavour)
    oai = guarded(fake, flavour, cycles, prices)
    stream = await resolve(oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert isinstance(stream, stream_type(flavour))
    chunks = await consume(stream)
    await aclose_client(cycles)

    assert fake.requests[0]["stream_options"] == {"include_usage": True}
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == fake.script.text
    expected = prices.cost("gpt-4o-mini", input_tokens=288, cached_input_tokens=512, output_tokens=9)
    assert ledger.committed() == expected == ledger.spent()
    assert len(ledger.commits()) == 1


async def test_a_caller_who_turns_usage_off_is_billed_the_prompt_estimate_and_the_deltas(
    ledger: Ledger, prices: PriceTable, flavour: str
) -> None:
    fake = FakeOpenAI(Script(text="one two three four"))
    cycles = ledger.client(flavour)
    oai = guarded(fake, flavour, cycles, prices, estimate_input_tokens=lambda request: PROMPT_ESTIMATE)
    stream = await resolve(oai.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": False}
    ))
    await consume(stream)
    await aclose_client(cycles)

    assert fake.requests[0]["stream_options"] == {"include_usage": False}
    assert ledger.committed() == prices.cost("gpt-4o-mini", input_tokens=PROMPT_ESTIMATE, output_tokens=4)


async def test_responses_api_commits_the_exact_cost(ledger: Ledger, prices: PriceTable, flavour: str) -> None:
    fake = FakeOpenAI(Script(input_tokens=2000, output_tokens=700, cached_tokens=1024, reasoning_tokens=300))
    cycles = ledger.client(flavour)
    oai = guarded(fake, flavour, cycles, prices)
    reply = await resolve(oai.responses.create(model="gpt-4o-mini", input="Why budgets?", instructions="Be brief."))
    await aclose_client(cycles)

    assert isinstance(reply, Response)
    assert reply.output_text == fake.script.text
    assert fake.paths == ["/v1/responses"]
    expected = prices.cost("gpt-4o-mini", input_tokens=976, cached_input_tokens=1024, output_tokens=700)
    assert ledger.committed() == expected
    metrics = ledger.commits()[0]["metrics"]
    assert (metrics["tokens_input"], metrics["tokens_output"]) == (2000, 700)


async def test_responses_api_stream_commits_the_usage_of_response_completed(
    ledger: Ledger, prices: PriceTable, flavour: str
) -> None:
    fake = FakeOpenAI(Script(input_tokens=640, output_tokens=9, cached_tokens=128))
    cycles = ledger.client(flavour)
    oai = guarded(fake, flavour, cycles, prices)
    stream = await resolve(oai.responses.create(model="gpt-4o-mini", input="Why budgets?", stream=True))
    assert isinstance(stream, stream_type(flavour))
    events = await consume(stream)
    await aclose_client(cycles)

    assert events[-1].type == "response.completed"
    assert "stream_options" not in fake.requests[0]
    expected = prices.cost("gpt-4o-mini", input_tokens=512, cached_input_tokens=128, output_tokens=9)
    assert ledger.committed() == expected == ledger.spent()


async def test_a_denial_raises_and_the_provider_receives_nothing(prices: PriceTable, flavour: str) -> None:
    fake = FakeOpenAI()
    with Ledger.open(allocated=10) as ledger:
        cycles = ledger.client(flavour)
        oai = guarded(fake, flavour, cycles, prices)
        with pytest.raises(BudgetExceededError):
            await resolve(oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
        with pytest.raises(BudgetExceededError):
            await resolve(oai.responses.create(model="gpt-4o-mini", input="hi", stream=True))
        await aclose_client(cycles)
        assert ledger.spent() == 0
    assert fake.requests == []


async def test_an_unknown_model_raises_before_anything_is_reserved_or_sent(
    ledger: Ledger, prices: PriceTable, flavour: str
) -> None:
    fake = FakeOpenAI()
    cycles = ledger.client(flavour)
    oai = guarded(fake, flavour, cycles, prices)
    with pytest.raises(UnknownModelError, match="gpt-5-giant"):
        await resolve(oai.chat.completions.create(model="gpt-5-giant", messages=MESSAGES))
    await aclose_client(cycles)
    assert fake.requests == [] and ledger.reservations() == []


@pytest.mark.parametrize(
    ("limit", "field", "sent"),
    [({"max_tokens": 300}, "max_tokens", 64), ({}, "max_completion_tokens", 64),
     ({"max_completion_tokens": 1000}, "max_completion_tokens", 64), ({"max_tokens": 10}, "max_tokens", 10)],
)
async def test_caps_lower_the_max_tokens_field_and_drop_denied_tools(
    ledger: Ledger, prices: PriceTable, flavour: str, limit: dict[str, int], field: str, sent: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger.set_caps({"max_tokens": 64, "tool_denylist": ["delete_everything"]})
    fake = FakeOpenAI()
    cycles = ledger.client(flavour)
    oai = guarded(fake, flavour, cycles, prices)
    with caplog.at_level(logging.WARNING, logger="runcycles.integrations"):
        await resolve(oai.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "delete_everything"}}, **limit,
        ))
    await aclose_client(cycles)

    [request] = fake.requests
    assert request[field] == sent
    assert [t["function"]["name"] for t in request["tools"]] == ["search"]
    assert "tool_choice" not in request
    assert "delete_everything" in caplog.text
    assert ledger.only()["status"] == "COMMITTED"


async def test_caps_on_the_responses_api(ledger: Ledger, prices: PriceTable, flavour: str) -> None:
    ledger.set_caps({"max_tokens": 64, "tool_allowlist": ["search"]})
    fake = FakeOpenAI()
    cycles = ledger.client(flavour)
    oai = guarded(fake, flavour, cycles, prices)
    await resolve(oai.responses.create(model="gpt-4o-mini", input="hi", tools=RESPONSE_TOOLS, max_output_tokens=500))
    await aclose_client(cycles)
    [request] = fake.requests
    assert request["max_output_tokens"] == 64
    assert [t["name"] for t in request["tools"]] == ["search"]


async def take_deltas(stream: Any, wanted: int) -> int:
    """Iterate until ``wanted`` chunks carried content, then break (the stream is left open)."""
    seen = 0
    if hasattr(stream, "__aiter__"):
        async for chunk in stream:
            seen += bool(chunk.choices and chunk.choices[0].delta.content)
            if seen == wanted:
                break
    else:
        for chunk in stream:
            seen += bool(chunk.choices and chunk.choices[0].delta.content)
            if seen == wanted:
                break
    return seen


@pytest.mark.parametrize("ending", ["close", "garbage"])
async def test_an_abandoned_stream_commits_the_prompt_estimate_and_the_deltas_once(
    ledger: Ledger, prices: PriceTable, flavour: str, ending: str
) -> None:
    fake = FakeOpenAI(Script(text="a b c d e f g h", output_tokens=8))
    cycles = ledger.client(flavour)
    oai = guarded(fake, flavour, cycles, prices, estimate_input_tokens=lambda request: PROMPT_ESTIMATE)
    stream = await resolve(oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert await take_deltas(stream, 3) == 3
    if ending == "close":
        await close(stream)
        await close(stream)  # a second close settles nothing more
    del stream
    await collect_garbage()
    assert await flush(cycles) == 0
    await aclose_client(cycles)

    expected = prices.cost("gpt-4o-mini", input_tokens=PROMPT_ESTIMATE, output_tokens=3)
    assert ledger.committed() == expected == ledger.spent()
    assert len(ledger.commits()) == 1 and ledger.releases() == 0


async def test_a_provider_error_before_output_releases(ledger: Ledger, prices: PriceTable, flavour: str) -> None:
    fake = FakeOpenAI(Script(error_status=500))
    cycles = ledger.client(flavour)
    oai = guarded(fake, flavour, cycles, prices)
    with pytest.raises(openai.InternalServerError):
        await resolve(oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
    with pytest.raises(openai.InternalServerError):
        await resolve(oai.responses.create(model="gpt-4o-mini", input="hi", stream=True))
    await aclose_client(cycles)
    assert [r["status"] for r in ledger.reservations()] == ["RELEASED", "RELEASED"]
    assert ledger.spent() == 0 and ledger.commits() == []


async def test_a_failing_settlement_is_logged_and_never_raised(
    ledger: Ledger, prices: PriceTable, flavour: str, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from runcycles.streaming import AsyncStreamReservation, StreamReservation

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("ledger down")

    async def broken_async(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("ledger down")

    for name in ("commit", "release"):
        monkeypatch.setattr(StreamReservation, name, broken)
        monkeypatch.setattr(AsyncStreamReservation, name, broken_async)
    fake = FakeOpenAI(Script(input_tokens=10, output_tokens=3))
    cycles = ledger.client(flavour)
    oai = guarded(fake, flavour, cycles, prices)
    with caplog.at_level(logging.ERROR, logger="runcycles.integrations"):
        reply = await resolve(oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
        assert reply.choices[0].message.content == fake.script.text
        stream = await resolve(oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
        assert await consume(stream)
        fake.script = Script(error_status=500)
        with pytest.raises(openai.InternalServerError):
            await resolve(oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
    messages = [record.getMessage().split(":")[0] for record in caplog.records]
    assert messages == [
        "commit after a provider call failed", "stream commit failed", "release after a provider error failed",
    ]
    assert [str(record.exc_info[1]) for record in caplog.records if record.exc_info] == ["ledger down"] * 3
    await aclose_client(cycles)


async def test_a_stream_failing_before_output_releases(ledger: Ledger, prices: PriceTable, flavour: str) -> None:
    fake = FakeOpenAI(Script(error_after=0))
    cycles = ledger.client(flavour)
    oai = guarded(fake, flavour, cycles, prices)
    stream = await resolve(oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    with pytest.raises(openai.APIError):
        await consume(stream)
    await aclose_client(cycles)
    assert ledger.only()["status"] == "RELEASED"
    assert ledger.spent() == 0


async def test_a_stream_failing_after_output_commits_what_was_used(
    ledger: Ledger, prices: PriceTable, flavour: str
) -> None:
    fake = FakeOpenAI(Script(error_after=2))
    cycles = ledger.client(flavour)
    oai = guarded(fake, flavour, cycles, prices, estimate_input_tokens=lambda request: PROMPT_ESTIMATE)
    stream = await resolve(oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    with pytest.raises(openai.APIError):
        await consume(stream)
    await aclose_client(cycles)
    assert ledger.committed() == prices.cost("gpt-4o-mini", input_tokens=PROMPT_ESTIMATE, output_tokens=2)


async def test_a_responses_stream_ending_in_an_error_event_commits_what_was_used(
    ledger: Ledger, prices: PriceTable, flavour: str
) -> None:
    # The Responses API reports a failure as an `error` event, which the SDK yields rather than raises.
    fake = FakeOpenAI(Script(error_after=2))
    cycles = ledger.client(flavour)
    oai = guarded(fake, flavour, cycles, prices, estimate_input_tokens=lambda request: PROMPT_ESTIMATE)
    stream = await resolve(oai.responses.create(model="gpt-4o-mini", input="hi", stream=True))
    events = await consume(stream)
    await aclose_client(cycles)
    assert events[-1].type == "error"
    assert ledger.committed() == prices.cost("gpt-4o-mini", input_tokens=PROMPT_ESTIMATE, output_tokens=2)


async def test_the_guarded_client_is_a_copy_and_the_original_stays_unguarded(
    ledger: Ledger, prices: PriceTable, flavour: str
) -> None:
    fake = FakeOpenAI()
    cycles = ledger.client(flavour)
    provider = fake.async_client() if flavour == "async" else fake.client()
    oai = guard_openai(provider, prices=prices, client=cycles, tenant="acme", action_tags=["chat"])
    assert type(oai) is type(provider) and oai is not provider
    await resolve(provider.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
    assert ledger.reservations() == []
    await resolve(oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
    await aclose_client(cycles)
    assert len(fake.requests) == 2
    assert ledger.only()["status"] == "COMMITTED"


async def test_cache_writes_reported_by_openai_are_billed_at_the_cache_write_price(
    ledger: Ledger, flavour: str
) -> None:
    prices = PriceTable({"gpt-4o-mini": {"input": "0.15", "output": "0.60", "cached_input": "0.075",
                                         "cache_write": "0.1875"}})
    fake = FakeOpenAI(Script(input_tokens=1000, output_tokens=10, cached_tokens=200, cache_write_tokens=300))
    cycles = ledger.client(flavour)
    oai = guarded(fake, flavour, cycles, prices)
    await resolve(oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
    await aclose_client(cycles)
    expected = prices.cost("gpt-4o-mini", input_tokens=500, cached_input_tokens=200, cache_write_tokens=300,
                           output_tokens=10)
    assert ledger.committed() == expected
    assert ledger.commits()[0]["metrics"]["tokens_input"] == 1000


async def test_parse_is_guarded_too(ledger: Ledger, prices: PriceTable, flavour: str) -> None:
    fake = FakeOpenAI(Script(input_tokens=100, output_tokens=9))
    cycles = ledger.client(flavour)
    oai = guarded(fake, flavour, cycles, prices)
    parsed = await resolve(oai.chat.completions.parse(model="gpt-4o-mini", messages=MESSAGES))
    await resolve(oai.responses.parse(model="gpt-4o-mini", input="hi"))
    await aclose_client(cycles)
    assert parsed.choices[0].message.content == fake.script.text
    expected = prices.cost("gpt-4o-mini", input_tokens=100, output_tokens=9)
    assert [r["committed"]["amount"] for r in ledger.reservations()] == [expected, expected]


async def test_leaving_the_streams_with_block_settles_it(ledger: Ledger, prices: PriceTable, flavour: str) -> None:
    fake = FakeOpenAI(Script(text="a b c d e f g h"))
    cycles = ledger.client(flavour)
    oai = guarded(fake, flavour, cycles, prices, estimate_input_tokens=lambda request: PROMPT_ESTIMATE)
    stream = await resolve(oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    if flavour == "async":
        async with stream:
            await take_deltas(stream, 3)
    else:
        with stream:
            await take_deltas(stream, 3)
    assert len(ledger.commits()) == 1  # settled on leaving the block, before any flush or collection
    await aclose_client(cycles)
    assert ledger.committed() == prices.cost("gpt-4o-mini", input_tokens=PROMPT_ESTIMATE, output_tokens=3)
