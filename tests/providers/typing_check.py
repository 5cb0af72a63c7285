"""Checked by mypy --strict (tests/providers/test_examples.py), never run: guarded clients keep the SDK's types."""

from __future__ import annotations

import anthropic
import openai
from typing_extensions import assert_type

from runcycles import AsyncCyclesClient, CyclesClient
from runcycles.integrations.anthropic import guard_anthropic
from runcycles.integrations.openai import guard_openai
from runcycles.pricing import PriceTable


async def check(prices: PriceTable, cycles: CyclesClient, acycles: AsyncCyclesClient) -> None:
    sync_oai = guard_openai(openai.OpenAI(api_key="k"), prices=prices, client=cycles)
    assert_type(sync_oai, openai.OpenAI)
    async_oai = guard_openai(openai.AsyncOpenAI(api_key="k"), prices=prices, client=acycles, tenant="acme")
    assert_type(async_oai, openai.AsyncOpenAI)
    stream = await async_oai.chat.completions.create(model="m", messages=[], stream=True)
    assert_type(stream, openai.AsyncStream[openai.types.chat.ChatCompletionChunk])
    claude = guard_anthropic(anthropic.Anthropic(api_key="k"), prices=prices, client=cycles)
    assert_type(claude, anthropic.Anthropic)
    aclaude = guard_anthropic(anthropic.AsyncAnthropic(api_key="k"), prices=prices, client=acycles)
    assert_type(aclaude, anthropic.AsyncAnthropic)
