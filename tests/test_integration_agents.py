"""runcycles.integrations.agents with the real openai-agents SDK: its own AsyncOpenAI client pointed at a fake
Chat Completions server (examples/openai_agents.py), the embedded Cycles server as the ledger.

The Agents SDK runs on asyncio only, so these tests run on asyncio only.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from agents import InputGuardrailTripwireTriggered, Runner, set_tracing_disabled
from integration_support import Ledger, closed_port_url

from runcycles import AsyncCyclesClient, BudgetExceededError, CyclesConfig, CyclesTransportError
from runcycles.integrations.agents import CyclesRunHooks, cycles_input_guardrail
from runcycles.integrations.langchain import idempotency_key
from runcycles.pricing import ModelPrice, PriceTable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from openai_agents import SCRIPT, FakeChatCompletions, build_agents  # noqa: E402

PRICES = PriceTable({"gpt-4o-mini": ModelPrice(input="0.15", output="0.60")})
SCRIPT_COST = sum(
    PRICES.cost("gpt-4o-mini", input_tokens=reply["usage"][0], output_tokens=reply["usage"][1]) for reply in SCRIPT
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the Agents SDK runs on asyncio only


@pytest.fixture(autouse=True)
def no_tracing() -> None:
    set_tracing_disabled(True)


def seeded(tmp_path: Path, usd: int = 10_000_000_000, points: int = 1_000) -> Ledger:
    ledger = Ledger(tmp_path, funds=usd)
    ledger.server.create_budget("tenant:acme", "RISK_POINTS", points)
    return ledger


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = seeded(tmp_path)
    yield ledger
    ledger.close()


def rows(ledger: Ledger) -> list[tuple[str, str, str]]:
    return sorted((r["action"]["kind"], r["action"]["name"], r["status"]) for r in ledger.reservations())


@pytest.mark.anyio
async def test_run_with_a_tool_call_and_a_handoff(ledger: Ledger) -> None:
    fake = FakeChatCompletions(SCRIPT)
    async with ledger.async_client() as client:
        hooks = CyclesRunHooks(prices=PRICES, client=client, tool_costs={"lookup": 5}, namespace="run-1")
        result = await Runner.run(build_agents(fake), "How do budgets work?", hooks=hooks)
    assert result.final_output == SCRIPT[-1]["text"]
    assert len(fake.requests) == 3 and hooks.pending == 0
    assert rows(ledger) == [("llm.completion", "gpt-4o-mini", "COMMITTED")] * 3 + [
        ("tool.call", "lookup", "COMMITTED")
    ]
    assert ledger.spent() == SCRIPT_COST
    assert ledger.server.get_budget("tenant:acme", "RISK_POINTS")["spent"] == 5
    [(_, status, event)] = ledger.recorder.ops("event")
    assert status == 201
    assert event["action"] == {"kind": "agent.handoff", "name": "triage->researcher"}
    assert event["metadata"] == {"from_agent": "triage", "to_agent": "researcher"}
    [tool_create] = [b for _, _, b in ledger.recorder.ops("create") if b["action"]["kind"] == "tool.call"]
    assert tool_create["idempotency_key"] == idempotency_key("tool", "call_t1", "run-1")
    assert tool_create["estimate"] == {"unit": "RISK_POINTS", "amount": 5}
    commits = [b["actual"]["amount"] for _, _, b in ledger.recorder.ops("commit")]
    assert sorted(commits) == sorted(
        [PRICES.cost("gpt-4o-mini", input_tokens=i, output_tokens=o) for i, o in (r["usage"] for r in SCRIPT)] + [5]
    )


@pytest.mark.anyio
async def test_decide_deny_stops_the_run_before_any_model_request(ledger: Ledger) -> None:
    fake = FakeChatCompletions(SCRIPT)
    async with ledger.async_client() as client:
        triage = build_agents(fake)
        triage.input_guardrails = [cycles_input_guardrail(estimate=100_000_000_000, client=client)]
        hooks = CyclesRunHooks(prices=PRICES, client=client)
        with pytest.raises(InputGuardrailTripwireTriggered) as caught:
            await Runner.run(triage, "hi", hooks=hooks)
    assert fake.requests == []
    assert caught.value.guardrail_result.output.output_info["reason_code"] == "BUDGET_EXCEEDED"
    assert ledger.recorder.ops("create") == [] and len(ledger.recorder.ops("decide")) == 1


@pytest.mark.anyio
async def test_allowed_guardrail_lets_the_run_proceed(ledger: Ledger) -> None:
    fake = FakeChatCompletions(SCRIPT)
    async with ledger.async_client() as client:
        triage = build_agents(fake)
        triage.input_guardrails = [cycles_input_guardrail(estimate=1_000, client=client)]
        result = await Runner.run(triage, "hi", hooks=CyclesRunHooks(prices=PRICES, client=client))
    assert result.final_output == SCRIPT[-1]["text"]
    [(_, _, decide)] = ledger.recorder.ops("decide")
    assert decide["action"] == {"kind": "agent.run", "name": "triage"}


@pytest.mark.anyio
async def test_llm_denial_raises_before_the_model_is_called(tmp_path: Path) -> None:
    ledger = seeded(tmp_path, usd=100)
    fake = FakeChatCompletions(SCRIPT)
    try:
        async with ledger.async_client() as client:
            with pytest.raises(BudgetExceededError):
                await Runner.run(build_agents(fake), "hi", hooks=CyclesRunHooks(prices=PRICES, client=client))
        assert fake.requests == []
        assert (ledger.spent(), ledger.reserved()) == (0, 0)
    finally:
        ledger.close()


@pytest.mark.anyio
async def test_failed_run_leaves_a_pending_reservation_that_release_pending_releases(ledger: Ledger) -> None:
    fake = FakeChatCompletions([SCRIPT[0], {"status": 500}])
    async with ledger.async_client() as client:
        hooks = CyclesRunHooks(prices=PRICES, client=client, tool_costs={"lookup": 5})
        with pytest.raises(Exception, match="fake failure"):
            await Runner.run(build_agents(fake), "hi", hooks=hooks)
        assert hooks.pending == 1 and ledger.reserved() > 0
        assert await hooks.release_pending() == 1
        assert await hooks.release_pending() == 0
    assert hooks.pending == 0 and ledger.reserved() == 0
    assert rows(ledger) == [
        ("llm.completion", "gpt-4o-mini", "COMMITTED"), ("llm.completion", "gpt-4o-mini", "RELEASED"),
    ]


def _unreachable(tmp_path: Path) -> AsyncCyclesClient:
    config = CyclesConfig(base_url=closed_port_url(), api_key="key", tenant="acme",
                          journal_dir=str(tmp_path / "journal"), connect_timeout_ms=500)
    return AsyncCyclesClient(config)


@pytest.mark.anyio
async def test_unreachable_cycles_fails_closed_by_default(tmp_path: Path) -> None:
    fake = FakeChatCompletions(SCRIPT)
    async with _unreachable(tmp_path) as client:
        with pytest.raises(CyclesTransportError):
            await Runner.run(build_agents(fake), "hi", hooks=CyclesRunHooks(prices=PRICES, client=client))
        triage = build_agents(fake)
        triage.input_guardrails = [cycles_input_guardrail(estimate=1, client=client)]
        with pytest.raises(CyclesTransportError):
            await Runner.run(triage, "hi")
    assert fake.requests == []


@pytest.mark.anyio
async def test_fail_open_runs_unguarded_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeChatCompletions(SCRIPT)
    caplog.set_level(logging.WARNING, logger="runcycles")
    async with _unreachable(tmp_path) as client:
        triage = build_agents(fake)
        triage.input_guardrails = [cycles_input_guardrail(estimate=1, client=client, fail_open=True)]
        hooks = CyclesRunHooks(prices=PRICES, client=client, tool_costs={"lookup": 5}, fail_open=True)
        result = await Runner.run(triage, "hi", hooks=hooks)
    assert result.final_output == SCRIPT[-1]["text"] and len(fake.requests) == 3
    assert hooks.pending == 0
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("runcycles.integrations")]
    assert sum("WITHOUT a reservation" in m for m in messages) == 4  # 3 LLM calls + 1 tool call
    assert any("starts unchecked" in m for m in messages)


def test_bad_options_are_refused() -> None:
    with pytest.raises(TypeError, match="PriceTable"):
        CyclesRunHooks(prices={})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="AsyncCyclesClient"):
        CyclesRunHooks(prices=PRICES, client=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="handoff_amount"):
        CyclesRunHooks(prices=PRICES, handoff_amount=-1)
