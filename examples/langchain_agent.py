"""A LangChain agent under a budget: every model turn and tool call is reserved, then committed at its cost.

Run it with ``python examples/langchain_agent.py`` (needs ``runcycles[langchain]``). No network and no key: the
Cycles server is the embedded one, in process, and the chat model is a scripted fake that reports
``usage_metadata`` the way provider models do. The agent searches, checks the weather, is refused an expensive
``deploy`` tool by the budget, and answers; then a looping agent is stopped by the turn cap.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import anyio
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.tools import tool

from runcycles import AsyncCyclesClient, CyclesConfig
from runcycles.integrations.langchain import CyclesModelGate, CyclesToolGate, CyclesTurnCap, ToolBudget
from runcycles.local import LocalCyclesServer
from runcycles.pricing import ModelPrice, PriceTable

DOLLAR = 100_000_000  # USD_MICROCENTS per dollar
PRICES = PriceTable({"gpt-4o-mini": ModelPrice(input="0.15", output="0.60")})  # USD per 1M tokens (example)


class ScriptedChatModel(GenericFakeChatModel):
    """A fake chat model with a name (so it can be priced) that accepts tools."""

    model_name: str = "gpt-4o-mini"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self


_CALL_IDS = itertools.count(1)


def turn(
    text: str = "", calls: Sequence[tuple[str, dict[str, Any]]] = (), *, tokens_in: int, tokens_out: int
) -> AIMessage:
    """One scripted model answer, with the usage a provider would report."""
    return AIMessage(
        content=text,
        tool_calls=[{"name": name, "args": args, "id": f"call_{next(_CALL_IDS)}", "type": "tool_call"}
                    for name, args in calls],
        usage_metadata={"input_tokens": tokens_in, "output_tokens": tokens_out,
                        "total_tokens": tokens_in + tokens_out},
        response_metadata={"model_name": "gpt-4o-mini"},
    )


@tool
def search(query: str) -> str:
    """Search the web."""
    return f"3 results for {query!r}"


@tool
def weather(city: str) -> str:
    """Today's weather in a city."""
    return f"sunny in {city}"


@tool
def deploy(service: str) -> str:
    """Deploy a service to production."""
    raise AssertionError("the budget never lets this run")


async def main() -> None:
    server = LocalCyclesServer()
    server.create_tenant("acme")
    server.create_budget("tenant:acme", "USD_MICROCENTS", allocated=DOLLAR // 100)  # one cent
    config = CyclesConfig(base_url="http://cycles.local", api_key=server.create_api_key("acme"), tenant="acme",
                          journal_enabled=False)
    async with AsyncCyclesClient(config, transport=server.async_transport()) as cycles:
        model = ScriptedChatModel(messages=iter([
            turn(calls=[("search", {"query": "budget guards"})], tokens_in=900, tokens_out=40),
            turn(calls=[("weather", {"city": "Lisbon"})], tokens_in=1_100, tokens_out=30),
            turn(calls=[("deploy", {"service": "api"})], tokens_in=1_300, tokens_out=25),
            turn("Searched, sunny in Lisbon; deploying was refused by the budget.", tokens_in=1_500, tokens_out=60),
        ]))
        agent = create_agent(
            model,
            tools=[search, weather, deploy],
            middleware=[
                CyclesTurnCap(max_turns=8),
                CyclesModelGate(prices=PRICES, client=cycles),
                CyclesToolGate(
                    {"search": 20_000, "weather": ToolBudget(estimate=5_000, mode="both"), "deploy": 5 * DOLLAR},
                    client=cycles,
                ),
            ],
        )
        result = await agent.ainvoke({"messages": [{"role": "user", "content": "plan my day"}]})
        for message in result["messages"][1:]:
            print(f"  {type(message).__name__:<10} {message.content or message.tool_calls}")
        spent = server.get_budget("tenant:acme", "USD_MICROCENTS")["spent"]
        print(f"1. agent finished; spent ${spent / DOLLAR:.6f} (4 model turns + search + weather)")

        looping = ScriptedChatModel(messages=(turn(calls=[("search", {"query": "more"})], tokens_in=500,
                                                   tokens_out=10) for _ in itertools.count()))
        agent = create_agent(looping, tools=[search], middleware=[
            CyclesTurnCap(max_turns=3), CyclesModelGate(prices=PRICES, client=cycles),
        ])
        result = await agent.ainvoke({"messages": [{"role": "user", "content": "search forever"}]})
        print("2. looping agent ->", result["messages"][-1].content)
    server.close()


if __name__ == "__main__":
    anyio.run(main)
