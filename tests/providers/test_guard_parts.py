"""The parts of the provider guards: options, missing SDKs, the prompt estimate, caps, the stream meters, and the
helpers for hand-written code (``openai_actual`` with `with_cycles`, a meter keeping a stream handle current)."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest
from fake_providers import FakeAnthropic, FakeOpenAI, Script
from provider_support import Ledger

from runcycles import Caps, reserve_for_stream, with_cycles
from runcycles.integrations import _llm_usage
from runcycles.integrations.anthropic import MESSAGES as ANTHROPIC_MESSAGES
from runcycles.integrations.anthropic import AnthropicStreamMeter, anthropic_actual, guard_anthropic
from runcycles.integrations.openai import CHAT, RESPONSES, OpenAIStreamMeter, guard_openai, openai_actual
from runcycles.pricing import PriceTable, UnknownModelError

CHAT_REQUEST: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "héllo"}]}


# -- options and SDKs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("guard", "sdk"), [(guard_openai, "openai"), (guard_anthropic, "anthropic")])
def test_a_guard_without_its_sdk_names_the_extra(
    guard: Any, sdk: str, prices: PriceTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, sdk, None)
    with pytest.raises(ImportError, match=rf"pip install 'runcycles\[{sdk}\]'"):
        guard(object(), prices=prices)


@pytest.mark.parametrize("guard", [guard_openai, guard_anthropic])
def test_a_guard_refuses_other_objects(guard: Any, prices: PriceTable) -> None:
    with pytest.raises(TypeError, match="needs an"):
        guard(object(), prices=prices)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"estimate": 5}, TypeError, "estimate is not an option"),
        ({"actual": 5}, TypeError, "actual is not an option"),
        ({"dry_run": True}, TypeError, "dry_run is not an option"),
        ({"colour": "red"}, TypeError, "unknown option 'colour'"),
        ({"unit": "TOKENS"}, ValueError, "USD_MICROCENTS"),
        ({"ttl_ms": 5}, ValueError, "ttl_ms"),
        ({"prices": {"gpt-4o-mini": {"input": 1, "output": 1}}}, TypeError, "PriceTable"),
        ({"default_max_output_tokens": 0}, ValueError, "default_max_output_tokens"),
        ({"estimate_input_tokens": 12}, TypeError, "estimate_input_tokens"),
    ],
)
def test_bad_options_are_refused_when_guarding(
    prices: PriceTable, options: dict[str, Any], error: type[Exception], match: str
) -> None:
    arguments = {"prices": prices, **options}
    with pytest.raises(error, match=match):
        guard_openai(FakeOpenAI().client(), **arguments)


def test_the_cycles_client_must_match_the_provider_client(ledger: Ledger, prices: PriceTable) -> None:
    with ledger.sync_client() as cycles, pytest.raises(TypeError, match="needs client= to be an AsyncCyclesClient"):
        guard_openai(FakeOpenAI().async_client(), prices=prices, client=cycles)
    with pytest.raises(TypeError, match="needs client= to be a CyclesClient, got AsyncCyclesClient"):
        guard_anthropic(FakeAnthropic().client(), prices=prices, client=ledger.async_client())


def test_a_bad_prompt_estimate_is_refused_before_anything_is_sent(ledger: Ledger, prices: PriceTable) -> None:
    fake = FakeOpenAI()
    with ledger.sync_client() as cycles:
        oai = guard_openai(fake.client(), prices=prices, client=cycles, estimate_input_tokens=lambda request: -1)
        with pytest.raises(ValueError, match="estimate_input_tokens"):
            oai.chat.completions.create(model="gpt-4o-mini", messages=[])
    assert fake.requests == [] and ledger.reservations() == []


def test_callable_options_get_the_request(ledger: Ledger, prices: PriceTable) -> None:
    fake = FakeOpenAI()
    with ledger.sync_client() as cycles:
        oai = guard_openai(
            fake.client(), prices=prices, client=cycles,
            action_name=lambda **request: f"chat:{request['model']}", workflow=lambda **request: "triage",
        )
        oai.chat.completions.create(model="gpt-4o-mini", messages=[])
    row = ledger.only()
    assert row["action"]["name"] == "chat:gpt-4o-mini"
    assert row["subject"] == {"tenant": "acme", "workflow": "triage"}


# -- the prompt estimate ----------------------------------------------------------------------------------------


def test_the_default_estimate_is_the_utf8_bound() -> None:
    text, messages = CHAT.prompt_text(CHAT_REQUEST)
    assert (text, messages) == ("user\nhéllo", 1)
    assert _llm_usage.estimate_prompt_tokens(CHAT, CHAT_REQUEST, "gpt-4o-mini") == len("user\nhéllo".encode()) + 4 + 16


def test_the_estimate_reads_every_prompt_field() -> None:
    request = {"model": "m", "instructions": "abc", "input": [{"role": "user", "content": [{"text": "de"}]}],
               "tools": [{"type": "function", "name": "f"}], "temperature": 0.5}
    text, messages = RESPONSES.prompt_text(request)
    assert sorted(text.split("\n")) == sorted(["abc", "user", "de", "function", "f"])
    assert messages == 2


class _Encoding:
    def encode(self, text: str, disallowed_special: Any = ()) -> list[str]:
        return text.split()


def _fake_tiktoken(encoding_for_model: Any) -> types.ModuleType:
    module = types.ModuleType("tiktoken")
    module.encoding_for_model = encoding_for_model  # type: ignore[attr-defined]
    return module


def test_tiktoken_counts_openai_prompts_when_it_can_load_an_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_llm_usage, "_tiktoken", _llm_usage._TiktokenCache())
    monkeypatch.setitem(sys.modules, "tiktoken", _fake_tiktoken(lambda model: _Encoding()))
    assert _llm_usage.estimate_prompt_tokens(CHAT, CHAT_REQUEST, "gpt-4o-mini") == 2 + 4 + 16
    # Anthropic prompts never go through tiktoken.
    request = {"model": "claude", "messages": CHAT_REQUEST["messages"]}
    assert _llm_usage.estimate_prompt_tokens(ANTHROPIC_MESSAGES, request, "claude") == len("user\nhéllo".encode()) + 20


def test_tiktoken_that_cannot_load_its_encoding_falls_back_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def offline(model: str) -> Any:  # what tiktoken does without network: the download fails
        calls.append(model)
        raise ConnectionError("no network")

    monkeypatch.setattr(_llm_usage, "_tiktoken", _llm_usage._TiktokenCache())
    monkeypatch.setitem(sys.modules, "tiktoken", _fake_tiktoken(offline))
    bound = len("user\nhéllo".encode()) + 4 + 16
    assert _llm_usage.estimate_prompt_tokens(CHAT, CHAT_REQUEST, "gpt-4o-mini") == bound
    assert _llm_usage.estimate_prompt_tokens(CHAT, CHAT_REQUEST, "gpt-4o-mini") == bound
    assert calls == ["gpt-4o-mini"]


def test_without_tiktoken_the_bound_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_llm_usage, "_tiktoken", _llm_usage._TiktokenCache())
    monkeypatch.setitem(sys.modules, "tiktoken", None)
    assert _llm_usage.estimate_prompt_tokens(CHAT, CHAT_REQUEST, "gpt-4o-mini") == len("user\nhéllo".encode()) + 20


# -- caps -------------------------------------------------------------------------------------------------------


def test_no_caps_leave_the_request_alone() -> None:
    request = {"model": "m", "max_tokens": 10_000}
    assert _llm_usage.apply_caps(CHAT, request, None, "r") is request


def test_caps_remove_every_denied_tool_and_a_dangling_tool_choice() -> None:
    caps = Caps(tool_allowlist=("search",))
    request = {"model": "m", "tools": [{"type": "web_search"}], "tool_choice": "required"}
    capped = _llm_usage.apply_caps(RESPONSES, request, caps, "r")
    assert "tools" not in capped and "tool_choice" not in capped
    assert request["tools"] == [{"type": "web_search"}]  # the caller's request is not modified


@pytest.mark.parametrize(
    ("tool", "name"),
    [
        ({"type": "function", "function": {"name": "a"}}, "a"),
        ({"type": "function", "name": "b"}, "b"),
        ({"name": "c", "input_schema": {}}, "c"),
        ({"type": "custom", "custom": {"name": "d"}}, "d"),
        ({"type": "web_search_preview"}, "web_search_preview"),
        ({"type": "web_search_20250305", "name": "web_search"}, "web_search"),
    ],
)
def test_tool_names_of_every_shape(tool: dict[str, Any], name: str) -> None:
    assert _llm_usage.tool_name(tool) == name


def test_caps_keep_a_smaller_limit_and_a_lower_cap_lowers_every_field() -> None:
    caps = Caps(max_tokens=64)
    assert _llm_usage.apply_caps(CHAT, {"max_tokens": 12}, caps, "r") == {"max_tokens": 12}
    both = _llm_usage.apply_caps(CHAT, {"max_tokens": 100, "max_completion_tokens": 200}, caps, "r")
    assert both == {"max_tokens": 64, "max_completion_tokens": 64}


SEARCH = {"type": "function", "function": {"name": "search"}}
DELETE = {"type": "function", "function": {"name": "delete_everything"}}


@pytest.mark.parametrize(
    ("request_", "capped"),
    [
        ({"model": "m"}, {"model": "m", "max_completion_tokens": 64}),  # none set: the first field is set
        ({"tools": [SEARCH, DELETE], "tool_choice": DELETE, "max_tokens": 10},
         {"tools": [SEARCH], "max_tokens": 10}),  # a choice naming a removed tool goes with it
        ({"tools": [SEARCH, DELETE], "tool_choice": SEARCH, "max_tokens": 10},
         {"tools": [SEARCH], "tool_choice": SEARCH, "max_tokens": 10}),
        ({"tools": [SEARCH, DELETE], "tool_choice": "auto", "max_tokens": 10},
         {"tools": [SEARCH], "tool_choice": "auto", "max_tokens": 10}),
        ({"tools": [SEARCH], "tool_choice": "auto", "max_tokens": 10},
         {"tools": [SEARCH], "tool_choice": "auto", "max_tokens": 10}),  # nothing removed: left alone
        ({"tools": [DELETE], "max_tokens": 10}, {"max_tokens": 10}),
    ],
)
def test_caps_on_tools_and_limits(request_: dict[str, Any], capped: dict[str, Any]) -> None:
    caps = Caps(max_tokens=64, tool_allowlist=("search",))
    assert _llm_usage.apply_caps(CHAT, request_, caps, "r") == capped


# -- stream meters ----------------------------------------------------------------------------------------------


def test_openai_meter_on_chat_chunks(prices: PriceTable) -> None:
    fake = FakeOpenAI(Script(input_tokens=300, cached_tokens=100, output_tokens=9))
    meter = OpenAIStreamMeter(prices, "gpt-4o-mini", prompt_tokens=40)
    chunks = list(fake.chat_chunks({**CHAT_REQUEST, "stream_options": {"include_usage": True}}))
    for chunk in chunks[:4]:  # the role chunk, then three content deltas
        meter.observe(chunk)
    assert meter.deltas == 3 and meter.output_seen
    assert meter.cost == prices.cost("gpt-4o-mini", input_tokens=40, output_tokens=3)
    for chunk in chunks[4:]:
        meter.observe(chunk)
    assert meter.cost == prices.cost("gpt-4o-mini", input_tokens=200, cached_input_tokens=100, output_tokens=9)
    assert meter.usage.model == "gpt-4o-mini-2024-07-18"


def test_openai_meter_on_responses_events(prices: PriceTable) -> None:
    fake = FakeOpenAI(Script(input_tokens=300, cached_tokens=100, output_tokens=9))
    meter = OpenAIStreamMeter(prices, "gpt-4o-mini")
    for event in fake.response_events({"model": "gpt-4o-mini"}):
        meter.observe(event)
    assert meter.deltas == len(fake.script.deltas())
    assert meter.cost == prices.cost("gpt-4o-mini", input_tokens=200, cached_input_tokens=100, output_tokens=9)


def test_a_meter_survives_a_surprising_item(prices: PriceTable, caplog: pytest.LogCaptureFixture) -> None:
    meter = OpenAIStreamMeter(prices, "gpt-4o-mini")
    meter.observe({"choices": 5})
    assert meter.cost == 0
    assert "could not read usage" in caplog.text


def test_a_meter_for_an_unknown_model_fails_at_once(prices: PriceTable) -> None:
    with pytest.raises(UnknownModelError):
        AnthropicStreamMeter(prices, "claude-unknown")


def test_anthropic_meter_takes_the_prompt_from_message_start_and_updates_from_message_delta(
    prices: PriceTable,
) -> None:
    fake = FakeAnthropic(Script(input_tokens=30, cached_tokens=400, cache_write_tokens=50, output_tokens=9))
    events = [data for name, data in fake.stream_events("/v1/messages", {"model": "claude-sonnet-4-5"})]
    meter = AnthropicStreamMeter(prices, "claude-sonnet-4-5", prompt_tokens=999)
    for event in events[:3]:  # message_start, content_block_start, ping
        meter.observe(event)
    assert meter.cost == prices.cost(
        "claude-sonnet-4-5", input_tokens=30, cached_input_tokens=400, cache_write_tokens=50, output_tokens=1
    )
    for event in events[3:]:
        meter.observe(event)
    assert meter.cost == prices.cost(
        "claude-sonnet-4-5", input_tokens=30, cached_input_tokens=400, cache_write_tokens=50, output_tokens=9
    )
    # Newer API versions repeat (possibly updated) prompt counts in message_delta.
    meter.observe({"type": "message_delta", "delta": {}, "usage": {"output_tokens": 12, "input_tokens": 31}})
    assert meter.usage.input_tokens == 31 and meter.usage.output_tokens == 12 and meter.usage.cached_input_tokens == 400


# -- helpers for hand-written code ------------------------------------------------------------------------------


def test_openai_actual_prices_a_response_for_with_cycles(ledger: Ledger, prices: PriceTable) -> None:
    fake = FakeOpenAI(Script(input_tokens=1000, cached_tokens=500, output_tokens=20))
    provider = fake.client()
    with ledger.sync_client() as cycles:

        @with_cycles(estimate=100_000, actual=openai_actual(prices), client=cycles)
        def ask(question: str) -> Any:
            return provider.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user",
                                                                                       "content": question}])

        ask("hi")
    assert ledger.committed() == prices.cost("gpt-4o-mini", input_tokens=500, cached_input_tokens=500,
                                             output_tokens=20)


def test_anthropic_actual_prices_a_message(prices: PriceTable) -> None:
    message = FakeAnthropic(Script(input_tokens=10, cached_tokens=20, cache_write_tokens=30)).answer(
        "/v1/messages", {"model": "claude-sonnet-4-5"})
    assert anthropic_actual(prices)(message) == prices.cost(
        "claude-sonnet-4-5", input_tokens=10, cached_input_tokens=20, cache_write_tokens=30, output_tokens=9)
    with pytest.raises(ValueError, match="no usage"):
        anthropic_actual(prices)({"model": "claude-sonnet-4-5"})


def test_a_meter_keeps_a_stream_handle_current(ledger: Ledger, prices: PriceTable) -> None:
    fake = FakeAnthropic(Script(input_tokens=30, output_tokens=9))
    provider = fake.client()
    with ledger.sync_client() as cycles, reserve_for_stream(client=cycles, estimate=500_000) as handle:
        meter = AnthropicStreamMeter(prices, "claude-sonnet-4-5")
        for event in provider.messages.create(model="claude-sonnet-4-5", max_tokens=100, messages=[], stream=True):
            meter.observe(event)
            handle.actual = meter.cost
    assert ledger.committed() == prices.cost("claude-sonnet-4-5", input_tokens=30, output_tokens=9)
