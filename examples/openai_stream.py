"""A streamed OpenAI chat answer paid from a Cycles budget, with the budget's caps applied to the request.

The guarded stream is the SDK's own ``openai.AsyncStream``; it asks for usage in its last chunk and commits its
exact cost when the stream ends (or is closed, or dropped). The budget here carries caps (``max_tokens=64``,
no ``delete_files`` tool), so the request the provider receives is lowered to match.

    python examples/openai_stream.py
"""

from __future__ import annotations

import anyio
import openai
from fake_providers import FakeOpenAI

from runcycles import AsyncCyclesClient, CyclesConfig
from runcycles.integrations.openai import guard_openai
from runcycles.local import LocalCyclesServer
from runcycles.pricing import ModelPrice, PriceTable

PRICES = PriceTable({"gpt-4o-mini": ModelPrice(input="0.15", output="0.60", cached_input="0.075")})


async def main() -> None:
    server = LocalCyclesServer()
    server.create_tenant("acme")
    api_key = server.create_api_key("acme")
    server.create_budget("tenant:acme", "USD_MICROCENTS", allocated=100_000_000,
                         caps={"max_tokens": 64, "tool_denylist": ["delete_files"]})
    config = CyclesConfig(base_url="http://cycles.local", api_key=api_key, tenant="acme", journal_enabled=False)
    fake = FakeOpenAI()

    async with AsyncCyclesClient(config, transport=server.async_transport()) as cycles:
        client = guard_openai(fake.async_client(), prices=PRICES, client=cycles, action_tags=["example"])
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Say something about budgets."}],
            max_tokens=500,
            tools=[
                {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}},
                {"type": "function", "function": {"name": "delete_files", "parameters": {"type": "object"}}},
            ],
            stream=True,
        )
        assert isinstance(stream, openai.AsyncStream)
        print("answer: ", end="")
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                print(chunk.choices[0].delta.content, end="", flush=True)
            if chunk.usage is not None:
                usage = chunk.usage
        print()
        sent = fake.requests[-1]
        print(f"the provider received max_tokens={sent['max_tokens']}, "
              f"tools={[tool['function']['name'] for tool in sent['tools']]}")
        print(f"usage: {usage.prompt_tokens} prompt, {usage.completion_tokens} completion tokens")

    spent = server.get_budget("tenant:acme", "USD_MICROCENTS")["spent"]
    print(f"budget spent: {spent} microcents")
    assert spent == PRICES.cost("gpt-4o-mini", input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens)
    server.close()


if __name__ == "__main__":
    anyio.run(main)
