"""A FastAPI app whose endpoints spend budget per tenant: a guarded completion, a metered stream, a 402.

Run it with ``python examples/fastapi_app.py`` (needs ``runcycles[fastapi]``). No network and no key: the
Cycles server is the embedded one, in process, and the "model" is a fake that reports what it used. The script
calls its own app in process through httpx; ``create_app`` is what you would serve with uvicorn.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations at runtime, and
# `Depends(budget)` refers to a local of create_app.
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
import httpx
from fastapi import Depends, FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from runcycles import AsyncCyclesClient, CyclesConfig
from runcycles.integrations.fastapi import CyclesBudget, RequestBudget, from_header, install_exception_handlers
from runcycles.local import LocalCyclesServer

DOLLAR = 100_000_000  # USD_MICROCENTS per dollar
PRICE_PER_TOKEN = 60_000  # a made-up price: $0.0006 per token


class Prompt(BaseModel):
    prompt: str
    max_tokens: int = 64


def fake_completion(prompt: str, max_tokens: int) -> dict[str, Any]:
    """Stands in for a provider call: an answer and the tokens it used."""
    words = prompt.split()[:max_tokens]
    return {"text": " ".join(reversed(words)), "usage": {"input_tokens": len(words), "output_tokens": len(words)}}


async def fake_token_stream(prompt: str) -> AsyncIterator[tuple[str, int]]:
    """Stands in for a provider stream: each chunk with the cost of everything streamed so far."""
    cost = len(prompt.split()) * PRICE_PER_TOKEN  # the prompt
    for word in prompt.split():
        await anyio.sleep(0)
        cost += PRICE_PER_TOKEN
        yield word + " ", cost


def create_app(cycles: AsyncCyclesClient) -> FastAPI:
    """The app: the tenant of each request comes from its ``X-Tenant`` header."""
    app = FastAPI()
    install_exception_handlers(app)  # denials -> 402 problem+json, Cycles unreachable -> 503
    budget = CyclesBudget(cycles, tenant=from_header("X-Tenant"))

    @app.post("/complete")
    async def complete(body: Prompt, spend: Annotated[RequestBudget, Depends(budget)]) -> dict[str, Any]:
        @spend.guard(
            estimate=2 * body.max_tokens * PRICE_PER_TOKEN,
            actual=lambda reply: sum(reply["usage"].values()) * PRICE_PER_TOKEN,
            action_kind="llm.completion",
            action_name="fake-model",
        )
        async def run() -> dict[str, Any]:
            return fake_completion(body.prompt, body.max_tokens)

        return await run()

    @app.post("/stream")
    async def stream(body: Prompt, spend: Annotated[RequestBudget, Depends(budget)]) -> StreamingResponse:
        return await spend.streaming_response(
            fake_token_stream(body.prompt),
            estimate=2 * body.max_tokens * PRICE_PER_TOKEN,
            meter=lambda chunk: chunk[1],  # cumulative cost so far
            render=lambda chunk: chunk[0],
            media_type="text/plain",
            action_kind="llm.stream",
            action_name="fake-model",
        )

    return app


async def main() -> None:
    server = LocalCyclesServer()
    for tenant, dollars in (("acme", 1), ("frugal", 0)):
        server.create_tenant(tenant)
        server.create_budget(f"tenant:{tenant}", "USD_MICROCENTS", allocated=dollars * DOLLAR)
    key = server.create_api_key("acme")
    config = CyclesConfig(base_url="http://cycles.local", api_key=key, journal_enabled=False)
    async with AsyncCyclesClient(config, transport=server.async_transport()) as cycles:
        app = create_app(cycles)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as http:
            reply = await http.post("/complete", json={"prompt": "budgets keep agents honest"},
                                    headers={"X-Tenant": "acme"})
            print("1. /complete ->", reply.status_code, reply.json()["text"])
            reply = await http.post("/stream", json={"prompt": "streams are metered as they go"},
                                    headers={"X-Tenant": "acme"})
            print("2. /stream   ->", reply.status_code, reply.text.strip())
            spent = server.get_budget("tenant:acme", "USD_MICROCENTS")["spent"]
            print(f"   tenant acme spent ${spent / DOLLAR:.4f}")
        # A second key for a tenant with an empty budget: its requests are refused with 402.
        frugal = CyclesConfig(base_url="http://cycles.local", api_key=server.create_api_key("frugal"),
                              journal_enabled=False)
        async with AsyncCyclesClient(frugal, transport=server.async_transport()) as poor:
            http = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(poor)), base_url="http://app")
            async with http:
                reply = await http.post("/complete", json={"prompt": "anything"}, headers={"X-Tenant": "frugal"})
                print("3. /complete ->", reply.status_code, reply.headers["content-type"], reply.json()["title"])
    server.close()


if __name__ == "__main__":
    anyio.run(main)
