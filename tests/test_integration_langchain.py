"""runcycles.integrations.langchain with the real langchain / langchain-core / langgraph against the embedded
server: agents with a fake chat model that reports usage_metadata, the callback handlers on LCEL chains.

LangChain and LangGraph are asyncio-based (no trio support), so the async tests run on asyncio only.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from integration_support import Ledger
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from langgraph.prebuilt.tool_node import ToolCallRequest

from runcycles import BudgetExceededError
from runcycles.integrations.langchain import (
    AsyncCyclesCallbackHandler,
    CyclesCallbackHandler,
    CyclesModelGate,
    CyclesToolGate,
    CyclesTurnCap,
    ToolBudget,
    idempotency_key,
)
from runcycles.pricing import ModelPrice, PriceTable

PRICES = PriceTable({"gpt-4o-mini": ModelPrice(input="0.15", output="0.60", cached_input="0.075")})
SEARCH_COST = 20_000
WEATHER_COST = 5_000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # LangChain/LangGraph run on asyncio only


class ScriptedChatModel(GenericFakeChatModel):
    """A priced fake chat model that accepts tools and counts its calls."""

    model_name: str = "gpt-4o-mini"
    calls: int = 0

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return super()._generate(*args, **kwargs)


def turn(text: str = "", calls: Sequence[tuple[str, str, dict[str, Any]]] = (), *, tokens_in: int = 0,
         tokens_out: int = 0, cached: int = 0, usage: bool = True) -> AIMessage:
    return AIMessage(
        content=text,
        tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"} for call_id, name, args in calls],
        usage_metadata={
            "input_tokens": tokens_in, "output_tokens": tokens_out, "total_tokens": tokens_in + tokens_out,
            "input_token_details": {"cache_read": cached},
        } if usage else None,
    )


def cost(tokens_in: int, tokens_out: int, cached: int = 0) -> int:
    return PRICES.cost("gpt-4o-mini", input_tokens=tokens_in - cached, output_tokens=tokens_out,
                       cached_input_tokens=cached)


class Tools:
    """Two tools that record their calls, plus an expensive one."""

    def __init__(self) -> None:
        self.ran: list[str] = []

        @tool
        def search(query: str) -> str:
            """Search the web."""
            self.ran.append("search")
            return f"results for {query}"

        @tool
        def weather(city: str) -> str:
            """The weather in a city."""
            self.ran.append("weather")
            return f"sunny in {city}"

        @tool
        def deploy(service: str) -> str:
            """Deploy a service."""
            self.ran.append("deploy")
            return "deployed"

        @tool
        def flaky(x: str) -> str:
            """Always fails."""
            self.ran.append("flaky")
            raise RuntimeError("tool broke")

        self.all = [search, weather, deploy, flaky]


SCRIPT = [
    turn(calls=[("call_1", "search", {"query": "cycles"})], tokens_in=1_000, tokens_out=50, cached=200),
    turn(calls=[("call_2", "weather", {"city": "Porto"})], tokens_in=1_200, tokens_out=40),
    turn("done", tokens_in=1_400, tokens_out=80),
]
SCRIPT_COST = cost(1_000, 50, 200) + cost(1_200, 40) + cost(1_400, 80)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(tmp_path)
    yield ledger
    ledger.close()


def small_ledger(tmp_path: Path, funds: int) -> Ledger:
    return Ledger(tmp_path, funds=funds)


def gates(client: Any, **tool_options: Any) -> list[Any]:
    policies = tool_options.pop("policies", {"search": SEARCH_COST, "weather": ToolBudget(estimate=WEATHER_COST)})
    return [
        CyclesTurnCap(max_turns=10),
        CyclesModelGate(prices=PRICES, client=client),
        CyclesToolGate(policies, client=client, **tool_options),
    ]


def statuses(ledger: Ledger) -> list[tuple[str, str]]:
    return sorted((row["action"]["kind"], row["status"]) for row in ledger.reservations())


# ------------------------------------------------------------------------------------------- agents


def test_sync_agent_spend_is_each_turns_price_plus_each_tools_amount(ledger: Ledger) -> None:
    tools = Tools()
    model = ScriptedChatModel(messages=iter(SCRIPT))
    agent = create_agent(model, tools=tools.all, middleware=gates(ledger.sync_client(), namespace="run-7"))
    result = agent.invoke({"messages": [{"role": "user", "content": "go"}]})
    assert result["messages"][-1].content == "done"
    assert tools.ran == ["search", "weather"]
    assert (ledger.spent(), ledger.reserved()) == (SCRIPT_COST + SEARCH_COST + WEATHER_COST, 0)
    assert statuses(ledger) == [("llm.completion", "COMMITTED")] * 3 + [("tool.call", "COMMITTED")] * 2
    keys = [body["idempotency_key"] for _, _, body in ledger.recorder.ops("create")
            if body["action"]["kind"] == "tool.call"]
    assert keys == [idempotency_key("tool", "call_1", "run-7"), idempotency_key("tool", "call_2", "run-7")]
    commits = [body for _, _, body in ledger.recorder.ops("commit")]
    assert commits[0]["actual"]["amount"] == cost(1_000, 50, 200)
    assert commits[0]["metrics"]["tokens_input"] == 1_000 and commits[0]["metrics"]["tokens_output"] == 50


@pytest.mark.anyio
async def test_async_agent_spend_is_each_turns_price_plus_each_tools_amount(ledger: Ledger) -> None:
    tools = Tools()
    async with ledger.async_client() as client:
        agent = create_agent(ScriptedChatModel(messages=iter(SCRIPT)), tools=tools.all, middleware=gates(client))
        result = await agent.ainvoke({"messages": [{"role": "user", "content": "go"}]})
    assert result["messages"][-1].content == "done"
    assert tools.ran == ["search", "weather"]
    assert (ledger.spent(), ledger.reserved()) == (SCRIPT_COST + SEARCH_COST + WEATHER_COST, 0)
    assert statuses(ledger) == [("llm.completion", "COMMITTED")] * 3 + [("tool.call", "COMMITTED")] * 2


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["reserve", "decide", "both"])
async def test_denied_tool_never_runs_and_the_agent_finishes(tmp_path: Path, mode: str) -> None:
    ledger = small_ledger(tmp_path, funds=10_000_000)
    tools = Tools()
    script = [
        turn(calls=[("call_1", "deploy", {"service": "api"})], tokens_in=100, tokens_out=10),
        turn("could not deploy", tokens_in=150, tokens_out=10),
    ]
    policies = {"deploy": ToolBudget(estimate=50_000_000, mode=mode)}
    try:
        async with ledger.async_client() as client:
            agent = create_agent(ScriptedChatModel(messages=iter(script)), tools=tools.all,
                                 middleware=gates(client, policies=policies))
            result = await agent.ainvoke({"messages": [{"role": "user", "content": "deploy"}]})
        assert tools.ran == []
        denial = result["messages"][2]
        assert isinstance(denial, ToolMessage) and denial.status == "error"
        assert "denied by the budget" in denial.content and "BUDGET_EXCEEDED" in denial.content
        assert result["messages"][-1].content == "could not deploy"
        assert (ledger.spent(), ledger.reserved()) == (cost(100, 10) + cost(150, 10), 0)
        tool_creates = [b for _, _, b in ledger.recorder.ops("create") if b["action"]["kind"] == "tool.call"]
        assert len(tool_creates) == (0 if mode == "decide" or mode == "both" else 1)
        assert len(ledger.recorder.ops("decide")) == (0 if mode == "reserve" else 1)
    finally:
        ledger.close()


def test_decide_only_tool_runs_when_allowed_and_spends_nothing(ledger: Ledger) -> None:
    tools = Tools()
    script = [turn(calls=[("call_1", "search", {"query": "q"})], tokens_in=100, tokens_out=10), turn("ok")]
    agent = create_agent(ScriptedChatModel(messages=iter(script)), tools=tools.all, middleware=gates(
        ledger.sync_client(), policies={"search": ToolBudget(estimate=SEARCH_COST, mode="decide")}))
    agent.invoke({"messages": [{"role": "user", "content": "go"}]})
    assert tools.ran == ["search"]
    assert ledger.spent() == cost(100, 10)  # the turns; the tool was only checked
    assert len(ledger.recorder.ops("decide")) == 1


@pytest.mark.anyio
async def test_failing_tool_releases_its_reservation(ledger: Ledger) -> None:
    tools = Tools()
    script = [turn(calls=[("call_1", "flaky", {"x": "y"})], tokens_in=10, tokens_out=1)]
    async with ledger.async_client() as client:
        agent = create_agent(ScriptedChatModel(messages=iter(script)), tools=tools.all,
                             middleware=gates(client, policies={"flaky": 1_000}))
        with pytest.raises(RuntimeError, match="tool broke"):
            await agent.ainvoke({"messages": [{"role": "user", "content": "go"}]})
    assert tools.ran == ["flaky"]
    assert (ledger.spent(), ledger.reserved()) == (cost(10, 1), 0)
    assert ("tool.call", "RELEASED") in statuses(ledger)


def test_turn_cap_stops_a_looping_agent_at_n_turns(ledger: Ledger) -> None:
    tools = Tools()
    ids = itertools.count()
    loop = (turn(calls=[(f"call_{next(ids)}", "search", {"query": "again"})], tokens_in=100, tokens_out=5)
            for _ in itertools.count())
    model = ScriptedChatModel(messages=loop)
    client = ledger.sync_client()
    agent = create_agent(model, tools=tools.all, middleware=[
        CyclesTurnCap(max_turns=3), CyclesModelGate(prices=PRICES, client=client),
        CyclesToolGate({"search": SEARCH_COST}, client=client),
    ])
    result = agent.invoke({"messages": [{"role": "user", "content": "loop"}]})
    assert model.calls == 3
    last = result["messages"][-1]
    assert isinstance(last, AIMessage) and "turn cap of 3" in last.content and not last.tool_calls
    assert tools.ran == ["search"] * 3
    assert ledger.spent() == 3 * cost(100, 5) + 3 * SEARCH_COST


@pytest.mark.anyio
async def test_turn_cap_ends_the_run_on_a_decide_deny(tmp_path: Path) -> None:
    ledger = small_ledger(tmp_path, funds=1_000)
    model = ScriptedChatModel(messages=iter([turn("never")]))
    try:
        async with ledger.async_client() as client:
            agent = create_agent(model, tools=[], middleware=[CyclesTurnCap(decide_estimate=5_000, client=client)])
            result = await agent.ainvoke({"messages": [{"role": "user", "content": "hi"}]})
        assert model.calls == 0
        assert "budget denied another turn (BUDGET_EXCEEDED)" in result["messages"][-1].content
        assert ledger.recorder.ops("create") == [] and len(ledger.recorder.ops("decide")) == 1
    finally:
        ledger.close()


def test_model_denial_becomes_an_ai_message_and_the_agent_ends(tmp_path: Path) -> None:
    ledger = small_ledger(tmp_path, funds=10)
    model = ScriptedChatModel(messages=iter([turn("never")]))
    try:
        agent = create_agent(model, tools=[], middleware=[CyclesModelGate(prices=PRICES, client=ledger.sync_client())])
        result = agent.invoke({"messages": [{"role": "user", "content": "hi"}]})
        assert model.calls == 0
        last = result["messages"][-1]
        assert isinstance(last, AIMessage) and not last.tool_calls
        assert "budget does not allow" in last.content and last.response_metadata["reason_code"] == "BUDGET_EXCEEDED"
        assert (ledger.spent(), ledger.reserved()) == (0, 0)
    finally:
        ledger.close()


def _broken() -> Iterator[AIMessage]:
    raise RuntimeError("provider down")
    yield  # pragma: no cover


@pytest.mark.anyio
async def test_model_error_releases_and_propagates(ledger: Ledger) -> None:
    async with ledger.async_client() as client:
        agent = create_agent(ScriptedChatModel(messages=_broken()), tools=[],
                             middleware=[CyclesModelGate(prices=PRICES, client=client)])
        with pytest.raises(RuntimeError, match="provider down"):
            await agent.ainvoke({"messages": [{"role": "user", "content": "hi"}]})
    assert (ledger.spent(), ledger.reserved()) == (0, 0)
    assert statuses(ledger) == [("llm.completion", "RELEASED")]


def test_model_error_releases_and_propagates_sync(ledger: Ledger) -> None:
    agent = create_agent(ScriptedChatModel(messages=_broken()), tools=[],
                         middleware=[CyclesModelGate(prices=PRICES, client=ledger.sync_client())])
    with pytest.raises(RuntimeError, match="provider down"):
        agent.invoke({"messages": [{"role": "user", "content": "hi"}]})
    assert statuses(ledger) == [("llm.completion", "RELEASED")]


@pytest.mark.anyio
async def test_model_denial_becomes_an_ai_message_async(tmp_path: Path) -> None:
    ledger = small_ledger(tmp_path, funds=10)
    model = ScriptedChatModel(messages=iter([turn("never")]))
    try:
        async with ledger.async_client() as client:
            agent = create_agent(model, tools=[], middleware=[CyclesModelGate(prices=PRICES, client=client)])
            result = await agent.ainvoke({"messages": [{"role": "user", "content": "hi"}]})
        assert model.calls == 0
        assert result["messages"][-1].response_metadata["reason_code"] == "BUDGET_EXCEEDED"
        assert (ledger.spent(), ledger.reserved()) == (0, 0)
    finally:
        ledger.close()


def test_model_without_usage_commits_the_estimate_marked(ledger: Ledger) -> None:
    agent = create_agent(ScriptedChatModel(messages=iter([turn("hi", usage=False)])), tools=[],
                         middleware=[CyclesModelGate(prices=PRICES, client=ledger.sync_client())])
    agent.invoke({"messages": [{"role": "user", "content": "hi"}]})
    [(_, _, create)] = ledger.recorder.ops("create")
    [(_, _, commit)] = ledger.recorder.ops("commit")
    assert commit["actual"]["amount"] == create["estimate"]["amount"] > 0
    assert commit["metadata"]["actual_source"] == "estimate"


def test_retried_tool_call_lands_on_the_same_reservation(ledger: Ledger) -> None:
    gate = CyclesToolGate({"search": SEARCH_COST}, client=ledger.sync_client(), namespace="run-1")
    ran: list[int] = []

    def handler(request: ToolCallRequest) -> ToolMessage:
        ran.append(1)
        return ToolMessage(content="ok", tool_call_id=request.tool_call["id"])

    request = ToolCallRequest(tool_call={"name": "search", "args": {}, "id": "call_9"}, tool=None, state={},
                              runtime=None)  # type: ignore[arg-type]
    gate.wrap_tool_call(request, handler)
    gate.wrap_tool_call(request, handler)  # e.g. a retry of the same step
    assert len(ran) == 2
    assert len(ledger.reservations()) == 1
    assert (ledger.spent(), ledger.reserved()) == (SEARCH_COST, 0)
    keys = {body["idempotency_key"] for _, _, body in ledger.recorder.ops("create")}
    assert keys == {"runcycles:tool:run-1:call_9"}


def test_idempotency_keys_are_deterministic_and_bounded() -> None:
    assert idempotency_key("tool", "call_1") == "runcycles:tool:call_1"
    assert idempotency_key("tool", "call_1", "run-2") == "runcycles:tool:run-2:call_1"
    long = idempotency_key("tool", "x" * 500, "run")
    assert long == idempotency_key("tool", "x" * 500, "run") and len(long) <= 128
    assert long != idempotency_key("tool", "x" * 500, "other")


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="mode"):
        ToolBudget(estimate=1, mode="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_turns"):
        CyclesTurnCap(max_turns=0)
    with pytest.raises(ValueError, match="needs max_turns"):
        CyclesTurnCap()
    with pytest.raises(TypeError, match="PriceTable"):
        CyclesModelGate(prices={"gpt": 1})  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ callback handler

PROMPT = ChatPromptTemplate.from_messages([("human", "{question}")])


def test_callback_handler_commits_on_end(ledger: Ledger) -> None:
    handler = CyclesCallbackHandler(prices=PRICES, client=ledger.sync_client())
    chain = PROMPT | ScriptedChatModel(messages=iter([turn("42", tokens_in=300, tokens_out=20)]))
    reply = chain.invoke({"question": "meaning?"}, config={"callbacks": [handler]})
    assert reply.content == "42"
    assert (ledger.spent(), ledger.reserved()) == (cost(300, 20), 0)
    assert handler.pending == 0
    [(_, _, create)] = ledger.recorder.ops("create")
    assert create["action"] == {"kind": "llm.completion", "name": "gpt-4o-mini"}
    assert create["idempotency_key"].startswith("runcycles:llm:")


def test_callback_handler_releases_on_error(ledger: Ledger) -> None:
    handler = CyclesCallbackHandler(prices=PRICES, client=ledger.sync_client())
    chain = PROMPT | ScriptedChatModel(messages=_broken())
    with pytest.raises(RuntimeError, match="provider down"):
        chain.invoke({"question": "x"}, config={"callbacks": [handler]})
    assert (ledger.spent(), ledger.reserved()) == (0, 0)
    assert statuses(ledger) == [("llm.completion", "RELEASED")] and handler.pending == 0


def test_callback_handler_denial_stops_the_chain(tmp_path: Path) -> None:
    ledger = small_ledger(tmp_path, funds=10)
    model = ScriptedChatModel(messages=iter([turn("never")]))
    try:
        handler = CyclesCallbackHandler(prices=PRICES, client=ledger.sync_client())
        with pytest.raises(BudgetExceededError):
            (PROMPT | model).invoke({"question": "x"}, config={"callbacks": [handler]})
        assert model.calls == 0
    finally:
        ledger.close()


@pytest.mark.anyio
async def test_async_callback_handler_commits_on_end_and_releases_on_error(ledger: Ledger) -> None:
    async with ledger.async_client() as client:
        handler = AsyncCyclesCallbackHandler(prices=PRICES, client=client)
        chain = PROMPT | ScriptedChatModel(messages=iter([turn("42", tokens_in=300, tokens_out=20)]))
        await chain.ainvoke({"question": "x"}, config={"callbacks": [handler]})
        broken = PROMPT | ScriptedChatModel(messages=_broken())
        with pytest.raises(RuntimeError, match="provider down"):
            await broken.ainvoke({"question": "x"}, config={"callbacks": [handler]})
    assert (ledger.spent(), ledger.reserved()) == (cost(300, 20), 0)
    assert statuses(ledger) == [("llm.completion", "COMMITTED"), ("llm.completion", "RELEASED")]


@pytest.mark.anyio
async def test_async_callback_handler_denial_stops_the_chain(tmp_path: Path) -> None:
    ledger = small_ledger(tmp_path, funds=10)
    model = ScriptedChatModel(messages=iter([turn("never")]))
    try:
        async with ledger.async_client() as client:
            handler = AsyncCyclesCallbackHandler(prices=PRICES, client=client)
            with pytest.raises(BudgetExceededError):
                await (PROMPT | model).ainvoke({"question": "x"}, config={"callbacks": [handler]})
            assert model.calls == 0 and handler.pending == 0
    finally:
        ledger.close()


@pytest.mark.anyio
async def test_async_callback_handler_without_usage_commits_the_estimate(ledger: Ledger) -> None:
    from langchain_core.language_models.fake import FakeListLLM

    async with ledger.async_client() as client:
        handler = AsyncCyclesCallbackHandler(prices=PRICES, client=client, model="gpt-4o-mini",
                                             default_max_output_tokens=64)
        assert await FakeListLLM(responses=["ok"]).ainvoke("hello", config={"callbacks": [handler]}) == "ok"
    [(_, _, create)] = ledger.recorder.ops("create")
    [(_, _, commit)] = ledger.recorder.ops("commit")
    assert commit["actual"]["amount"] == create["estimate"]["amount"]
    assert commit["metadata"]["actual_source"] == "estimate" and handler.pending == 0


def test_callback_handlers_refuse_the_other_flavours_client(ledger: Ledger) -> None:
    sync_client = ledger.sync_client()
    async_client = ledger.async_client()
    with pytest.raises(TypeError, match="^CyclesCallbackHandler needs a CyclesClient, got AsyncCyclesClient$"):
        CyclesCallbackHandler(prices=PRICES, client=async_client)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match="^AsyncCyclesCallbackHandler needs an AsyncCyclesClient, got CyclesClient$"
    ):
        AsyncCyclesCallbackHandler(prices=PRICES, client=sync_client)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="PriceTable"):
        CyclesCallbackHandler(prices={"gpt": 1}, client=sync_client)  # type: ignore[arg-type]


def test_tool_actual_reads_the_result_and_a_failing_actual_commits_the_estimate(ledger: Ledger) -> None:
    def broken(result: Any) -> int:
        raise ZeroDivisionError

    gate = CyclesToolGate(
        {"search": ToolBudget(estimate=1_000, actual=lambda message: 10 * len(message.content)),
         "weather": ToolBudget(estimate=700, actual=broken)},
        client=ledger.sync_client(),
    )
    for call_id, name in (("a", "search"), ("b", "weather")):
        request = ToolCallRequest(tool_call={"name": name, "args": {}, "id": call_id}, tool=None, state={},
                                  runtime=None)  # type: ignore[arg-type]
        gate.wrap_tool_call(request, lambda r: ToolMessage(content="12345", tool_call_id=r.tool_call["id"]))
    assert sorted(body["actual"]["amount"] for _, _, body in ledger.recorder.ops("commit")) == [50, 700]
    assert (ledger.spent(), ledger.reserved()) == (750, 0)


def test_usage_from_llm_output_token_usage() -> None:
    from langchain_core.outputs import Generation, LLMResult

    from runcycles.integrations._langchain_common import usage_of_result

    result = LLMResult(
        generations=[[Generation(text="x")]],
        llm_output={"token_usage": {"prompt_tokens": 500, "completion_tokens": 40,
                                    "prompt_tokens_details": {"cached_tokens": 100}}, "model_name": "gpt-4o-mini"},
    )
    usage = usage_of_result(result)
    assert usage is not None
    assert (usage.input_tokens, usage.cached_input_tokens, usage.output_tokens) == (400, 100, 40)
    assert usage.cost(PRICES, "gpt-4o-mini") == cost(500, 40, 100)
    assert usage_of_result(LLMResult(generations=[[Generation(text="x")]])) is None


def test_callback_handler_on_a_completion_model_without_usage_commits_the_estimate(ledger: Ledger) -> None:
    from langchain_core.language_models.fake import FakeListLLM

    handler = CyclesCallbackHandler(prices=PRICES, client=ledger.sync_client(), model="gpt-4o-mini",
                                    default_max_output_tokens=64)
    assert FakeListLLM(responses=["ok"]).invoke("hello", config={"callbacks": [handler]}) == "ok"
    [(_, _, create)] = ledger.recorder.ops("create")
    [(_, _, commit)] = ledger.recorder.ops("commit")
    assert create["estimate"]["amount"] == PRICES.estimate("gpt-4o-mini", input_tokens=len("hello") + 4 + 16,
                                                           max_output_tokens=64)
    assert commit["actual"]["amount"] == create["estimate"]["amount"]
    assert commit["metadata"]["actual_source"] == "estimate"
