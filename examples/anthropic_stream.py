"""A streamed Anthropic answer paid from a Cycles budget, with prompt caching billed at its own prices.

``guard_anthropic`` keeps ``messages.stream(...)`` the SDK's own helper; usage comes from ``message_start`` and
``message_delta``, and ``input_tokens`` exclude the cache reads and writes, each billed at its price.

    python examples/anthropic_stream.py
"""

from __future__ import annotations

import anyio
from fake_providers import FakeAnthropic, Script

from runcycles import AsyncCyclesClient, CyclesConfig
from runcycles.integrations.anthropic import guard_anthropic
from runcycles.local import LocalCyclesServer
from runcycles.pricing import ModelPrice, PriceTable

PRICES = PriceTable(
    {"claude-sonnet-4-5": ModelPrice(input="3", output="15", cached_input="0.30", cache_write="3.75")}
)


async def main() -> None:
    server = LocalCyclesServer()
    server.create_tenant("acme")
    api_key = server.create_api_key("acme")
    server.create_budget("tenant:acme", "USD_MICROCENTS", allocated=100_000_000)
    config = CyclesConfig(base_url="http://cycles.local", api_key=api_key, tenant="acme", journal_enabled=False)
    fake = FakeAnthropic(Script(input_tokens=25, cached_tokens=4000, cache_write_tokens=800, output_tokens=9))

    async with AsyncCyclesClient(config, transport=server.async_transport()) as cycles:
        client = guard_anthropic(fake.async_client(), prices=PRICES, client=cycles, agent="writer")
        async with client.messages.stream(
            model="claude-sonnet-4-5",
            max_tokens=1024,
            system="You are terse.",
            messages=[{"role": "user", "content": "One line on budgets, please."}],
        ) as stream:
            print("answer: ", end="")
            async for text in stream.text_stream:
                print(text, end="", flush=True)
            print()
            message = await stream.get_final_message()
        usage = message.usage
        print(f"usage: {usage.input_tokens} input, {usage.cache_read_input_tokens} cache-read, "
              f"{usage.cache_creation_input_tokens} cache-write, {usage.output_tokens} output tokens")

    spent = server.get_budget("tenant:acme", "USD_MICROCENTS")["spent"]
    print(f"budget spent: {spent} microcents")
    assert spent == PRICES.cost(
        message.model,
        input_tokens=usage.input_tokens,
        cached_input_tokens=usage.cache_read_input_tokens or 0,
        cache_write_tokens=usage.cache_creation_input_tokens or 0,
        output_tokens=usage.output_tokens,
    )
    server.close()


if __name__ == "__main__":
    anyio.run(main)
