"""The runcycles demo: an embedded Cycles server, a budget, guarded calls, caps, one denial.

Run it with ``python3 dev.py demo`` (or ``python examples/demo.py`` once runcycles is installed).
No network and no other setup: the server runs in this process on an in-memory SQLite ledger.
"""

from __future__ import annotations

import anyio

import runcycles
from runcycles import (
    AsyncCyclesClient,
    BudgetExceededError,
    CyclesConfig,
    CyclesMetrics,
    get_cycles_context,
    is_tool_allowed,
    reserve_for_stream,
    with_cycles,
)
from runcycles.local import LocalCyclesServer

DOLLAR = 100_000_000  # USD_MICROCENTS per dollar


def dollars(amount: int) -> str:
    return f"${amount / DOLLAR:,.4f}"


async def main() -> None:
    server = LocalCyclesServer()  # in memory
    server.create_tenant("acme")
    api_key = server.create_api_key("acme")
    server.create_budget("tenant:acme", "USD_MICROCENTS", allocated=1 * DOLLAR)
    server.create_budget(
        "tenant:acme/agent:researcher",
        "USD_MICROCENTS",
        allocated=DOLLAR // 2,
        caps={"max_tokens": 512, "tool_allowlist": ["web.search"]},
    )
    config = CyclesConfig(base_url="http://cycles.local", api_key=api_key, tenant="acme", journal_enabled=False)

    async with AsyncCyclesClient(config, transport=server.async_transport()) as client:

        @with_cycles(estimate=20_000_000, actual=lambda answer: 12_500_000, action_kind="llm.completion",
                     action_name="gpt-4o-mini", client=client)
        async def summarize(text: str) -> str:
            context = get_cycles_context()
            assert context is not None
            context.metrics = CyclesMetrics(tokens_input=len(text.split()), tokens_output=42)
            return f"summary of {len(text)} characters"

        @with_cycles(estimate=10_000_000, agent="researcher", action_kind="tool.search",
                     action_name="web.search", client=client)
        async def research(query: str) -> str:
            context = get_cycles_context()
            assert context is not None
            caps = context.caps
            allowed = is_tool_allowed(caps, "web.search")
            return f"max_tokens={caps.max_tokens if caps else None}, web.search allowed={allowed}"

        print("1. guarded LLM call  ->", await summarize("the quick brown fox jumps over the lazy dog"))
        print("2. call under caps    ->", await research("budget guards"))

        async with reserve_for_stream(client=client, estimate=30_000_000, action_kind="llm.stream",
                                      action_name="claude-stream") as stream:
            streamed = 0
            for chunk in ["Budgets ", "keep ", "agents ", "honest."]:
                streamed += len(chunk)
                stream.actual = streamed * 100_000  # cost known as the stream goes
        print(f"3. streamed completion committed {dollars(streamed * 100_000)}")

        @with_cycles(estimate=5 * DOLLAR, action_kind="llm.completion", action_name="gpt-5-giant", client=client)
        async def too_expensive() -> str:
            return "never runs"

        try:
            await too_expensive()
        except BudgetExceededError as exc:
            code = exc.error_code.value if exc.error_code else None
            print(f"4. denied as expected -> {type(exc).__name__}: {code} (request {exc.request_id})")

        print("\nbalances:")
        async for balance in client.iter_balances(tenant="acme"):
            spent = balance.spent.amount if balance.spent else 0
            remaining = dollars(balance.remaining.amount)
            print(f"  {balance.scope_path:<32} remaining {remaining:>10}  spent {dollars(spent)}")
    server.close()
    print(f"\nruncycles {runcycles.__version__}: done.")


if __name__ == "__main__":
    anyio.run(main)
