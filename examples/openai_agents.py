"""An OpenAI Agents SDK run under a budget: each LLM call and tool call reserved and committed, the handoff
recorded as an event, and a run that the budget refuses before its first model request.

Run it with ``python examples/openai_agents.py`` (needs ``runcycles[agents]``). No network and no key: the
Cycles server is the embedded one, in process, and the model is a scripted fake of the Chat Completions API
that the SDK's own ``AsyncOpenAI`` client reaches through ``http_client=`` (an ``httpx2`` mock transport).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import anyio
import httpx2
import openai
from agents import (
    Agent,
    InputGuardrailTripwireTriggered,
    OpenAIChatCompletionsModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)

from runcycles import AsyncCyclesClient, CyclesConfig
from runcycles.integrations.agents import CyclesRunHooks, cycles_input_guardrail
from runcycles.local import LocalCyclesServer
from runcycles.pricing import ModelPrice, PriceTable

DOLLAR = 100_000_000  # USD_MICROCENTS per dollar
PRICES = PriceTable({"gpt-4o-mini": ModelPrice(input="0.15", output="0.60", cached_input="0.075")})  # example


class FakeChatCompletions:
    """``POST /v1/chat/completions`` answered from a script: each reply is a text or a list of tool calls,
    with the usage the API would report. Records every request body."""

    def __init__(self, replies: Sequence[dict[str, Any]]) -> None:
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        reply = self.replies.pop(0)
        if "status" in reply:  # an injected failure
            return httpx2.Response(reply["status"], json={"error": {"message": "fake failure", "type": "server_error"}})
        calls = [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
            for call_id, name, args in reply.get("tool_calls", ())
        ]
        message: dict[str, Any] = {"role": "assistant", "content": reply.get("text"), "refusal": None}
        if calls:
            message["tool_calls"] = calls
        tokens_in, tokens_out = reply["usage"]
        return httpx2.Response(200, json={
            "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": 1_700_000_000,
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out,
                      "total_tokens": tokens_in + tokens_out, "prompt_tokens_details": {"cached_tokens": 0}},
        })

    def model(self, name: str = "gpt-4o-mini") -> OpenAIChatCompletionsModel:
        """An Agents SDK model using the SDK's own AsyncOpenAI client, pointed at this fake."""
        client = openai.AsyncOpenAI(
            api_key="sk-fake", base_url="http://fake.local/v1", max_retries=0,
            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(self.handle)),
        )
        return OpenAIChatCompletionsModel(model=name, openai_client=client)


@function_tool
def lookup(topic: str) -> str:
    """Look a topic up in the knowledge base."""
    return f"{topic}: reserve before you spend, commit what you spent"


def build_agents(fake: FakeChatCompletions) -> Agent[Any]:
    """A triage agent that hands off to a researcher with one tool."""
    researcher = Agent(name="researcher", instructions="Answer using lookup.", tools=[lookup], model=fake.model())
    return Agent(name="triage", instructions="Hand research questions to the researcher.",
                 handoffs=[researcher], model=fake.model())


SCRIPT: list[dict[str, Any]] = [
    {"tool_calls": [("call_h1", "transfer_to_researcher", {})], "usage": (400, 15)},
    {"tool_calls": [("call_t1", "lookup", {"topic": "budgets"})], "usage": (600, 20)},
    {"text": "Reserve before you spend; commit what you spent.", "usage": (700, 30)},
]


async def main() -> None:
    set_tracing_disabled(True)  # no trace export: this example makes no network calls
    server = LocalCyclesServer()
    server.create_tenant("acme")
    server.create_budget("tenant:acme", "USD_MICROCENTS", allocated=DOLLAR // 100)
    server.create_budget("tenant:acme", "RISK_POINTS", allocated=100)
    config = CyclesConfig(base_url="http://cycles.local", api_key=server.create_api_key("acme"), tenant="acme",
                          journal_enabled=False)
    async with AsyncCyclesClient(config, transport=server.async_transport()) as cycles:
        fake = FakeChatCompletions(SCRIPT)
        hooks = CyclesRunHooks(prices=PRICES, client=cycles, tool_costs={"lookup": 5})
        try:
            result = await Runner.run(build_agents(fake), "How do budgets work?", hooks=hooks)
        except Exception:
            await hooks.release_pending()
            raise
        usd = server.get_budget("tenant:acme", "USD_MICROCENTS")["spent"]
        points = server.get_budget("tenant:acme", "RISK_POINTS")["spent"]
        print("1. answer:", result.final_output)
        print(f"   {len(fake.requests)} model calls, spent ${usd / DOLLAR:.6f} and {points} risk points")

        # A run the budget cannot afford is refused by /v1/decide before any model request.
        fake = FakeChatCompletions(SCRIPT)
        triage = build_agents(fake)
        triage.input_guardrails = [cycles_input_guardrail(estimate=DOLLAR, client=cycles)]
        try:
            await Runner.run(triage, "Write me a novel.", hooks=CyclesRunHooks(prices=PRICES, client=cycles))
        except InputGuardrailTripwireTriggered as exc:
            info = exc.guardrail_result.output.output_info
            print(f"2. refused before the run: {info['reason_code']}; model requests: {len(fake.requests)}")
    server.close()


if __name__ == "__main__":
    anyio.run(main)
