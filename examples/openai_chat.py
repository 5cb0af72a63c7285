"""An OpenAI client whose every chat call is paid from a Cycles budget, in one line: ``guard_openai(...)``.

Runs with no network and no key: the Cycles server is the embedded one (in this process, in memory) and OpenAI is
a local fake behind the SDK's own ``http_client=`` hook. With a real key, pass ``openai.OpenAI()`` instead.

    python examples/openai_chat.py
"""

from __future__ import annotations

from fake_providers import FakeOpenAI, Script

from runcycles import CyclesClient, CyclesConfig
from runcycles.integrations.openai import guard_openai
from runcycles.local import LocalCyclesServer
from runcycles.pricing import ModelPrice, PriceTable

# USD per 1M tokens. No prices ship with runcycles: copy them from your provider's pricing page.
PRICES = PriceTable({"gpt-4o-mini": ModelPrice(input="0.15", output="0.60", cached_input="0.075")})
DOLLAR = 100_000_000  # USD_MICROCENTS


def main() -> None:
    server = LocalCyclesServer()
    server.create_tenant("acme")
    api_key = server.create_api_key("acme")
    server.create_budget("tenant:acme", "USD_MICROCENTS", allocated=1 * DOLLAR)
    config = CyclesConfig(base_url="http://cycles.local", api_key=api_key, tenant="acme", journal_enabled=False)
    fake = FakeOpenAI(Script(input_tokens=1200, cached_tokens=1024, output_tokens=350))

    with CyclesClient(config, transport=server.transport()) as cycles:
        client = guard_openai(fake.client(), prices=PRICES, client=cycles)  # still an openai.OpenAI
        reply = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Why should agents have budgets?"}],
            max_tokens=300,
        )
        print("answer:", reply.choices[0].message.content)
        assert reply.usage is not None
        print(f"usage: {reply.usage.prompt_tokens} prompt tokens "
              f"({reply.usage.prompt_tokens_details and reply.usage.prompt_tokens_details.cached_tokens} cached), "
              f"{reply.usage.completion_tokens} completion tokens")
        expected = PRICES.cost(reply.model, input_tokens=176, cached_input_tokens=1024, output_tokens=350)
        print(f"cost: {expected} microcents")

    spent = server.get_budget("tenant:acme", "USD_MICROCENTS")["spent"]
    print(f"budget spent: {spent} microcents (= ${spent / DOLLAR:.6f})")
    assert spent == expected
    server.close()


if __name__ == "__main__":
    main()
