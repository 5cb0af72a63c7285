"""The OpenAI Agents SDK (``openai-agents``): run hooks that reserve per LLM and tool call, and an input
guardrail that asks ``/v1/decide`` before the run.

Needs the ``agents`` extra (``pip install 'runcycles[agents]'``)::

    hooks = CyclesRunHooks(prices=prices, client=cycles, tool_costs={"search": 3})
    agent = Agent(name="triage", ..., input_guardrails=[cycles_input_guardrail(estimate=2_000_000, client=cycles)])
    try:
        result = await Runner.run(agent, "question", hooks=hooks)
    except Exception:
        await hooks.release_pending()  # a failed run leaves no reservation open
        raise

The Agents SDK runs on asyncio, so everything here is async and needs an `AsyncCyclesClient`.

``fail_open`` (default ``False``): when the Cycles server cannot be reached (`CyclesTransportError`), the hooks
and the guardrail raise, and the run stops. With ``fail_open=True`` they log a warning and let the call run
without a reservation. A denial always stops the run, whatever ``fail_open`` says.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

try:
    from agents import Agent, GuardrailFunctionOutput, InputGuardrail, RunContextWrapper, RunHooks, Tool
    from agents.items import ModelResponse
    from agents.models.default_models import get_default_model
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "runcycles.integrations.agents needs the 'agents' extra: pip install 'runcycles[agents]'"
    ) from exc

from ..client import AsyncCyclesClient
from ..errors import CyclesTransportError
from ..models import Unit
from ..pricing import PriceTable
from ..streaming import AsyncStreamReservation
from ._budget import create_event_async, decide_async, idempotency_key, open_async, subject_options
from ._checks import require_pricing
from ._llm_usage import Usage, char_upper_bound

__all__ = ["CyclesRunHooks", "cycles_input_guardrail"]

log = logging.getLogger("runcycles.integrations.agents")

RUN_FAILED = "agent_run_failed"


def _check_client(client: AsyncCyclesClient | None) -> None:
    if client is not None and not isinstance(client, AsyncCyclesClient):
        raise TypeError(f"the Agents SDK integration needs an AsyncCyclesClient, got {type(client).__name__}")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class CyclesRunHooks(RunHooks[Any]):
    """Run hooks that put every LLM call and (priced) tool call of an agent run on the Cycles ledger.

    - ``on_llm_start`` reserves the estimate (prompt upper bound + the agent's ``max_tokens``, else
      ``default_max_output_tokens``, priced by ``prices``); ``on_llm_end`` commits the `PriceTable` cost of the
      response's usage.
    - ``on_tool_start`` reserves the tool's cost (``tool_costs``: a mapping of tool names or a callable of the
      name; risk points by default, ``tool_unit``) under a key derived from the tool call id (namespaced by
      ``namespace`` when given); ``on_tool_end`` commits it. Tools without a cost are not governed.
    - ``on_handoff`` records a ``agent.handoff`` event (``handoff_amount``, default 0) with the two agents.
    - A denial raises the typed error from the hook, which stops the run before the call. Calls that never
      ended (the run failed) stay pending until `release_pending` releases them.

    Use one instance per run (or give each run its own ``namespace``).
    """

    def __init__(
        self,
        *,
        prices: PriceTable,
        client: AsyncCyclesClient | None = None,
        model: str | None = None,
        default_max_output_tokens: int = 1024,
        tool_costs: Mapping[str, int] | Callable[[str], int | None] | None = None,
        tool_unit: Unit | str = Unit.RISK_POINTS,
        handoff_amount: int = 0,
        handoff_unit: Unit | str = Unit.USD_MICROCENTS,
        namespace: str | None = None,
        fail_open: bool = False,
        llm_action_kind: str = "llm.completion",
        tool_action_kind: str = "tool.call",
        ttl_ms: int = 60000,
        tenant: str | None = None,
        workspace: str | None = None,
        app: str | None = None,
        workflow: str | None = None,
        agent: str | None = None,
        toolset: str | None = None,
        dimensions: Mapping[str, str] | None = None,
    ) -> None:
        require_pricing(prices, default_max_output_tokens)
        if handoff_amount < 0:
            raise ValueError("handoff_amount must be non-negative")
        _check_client(client)
        self.prices = prices
        self.client = client
        self.model = model
        self.default_max_output_tokens = default_max_output_tokens
        self.tool_costs = tool_costs
        self.namespace = namespace
        self.fail_open = fail_open
        self._handoff_amount = handoff_amount
        common = {"ttl_ms": ttl_ms, "dimensions": dimensions, **subject_options(locals())}
        self._llm_options: dict[str, Any] = {"action_kind": llm_action_kind, **common}
        self._tool_options: dict[str, Any] = {"action_kind": tool_action_kind, "unit": tool_unit, **common}
        self._event_options: dict[str, Any] = {
            "action_kind": "agent.handoff", "unit": handoff_unit, "dimensions": dimensions, **subject_options(locals()),
        }
        self._lock = threading.Lock()
        self._llm: dict[str, list[tuple[AsyncStreamReservation, str]]] = {}
        self._tools: dict[str, list[AsyncStreamReservation]] = {}

    # ---- bookkeeping

    @property
    def pending(self) -> int:
        """Reservations opened by a start hook whose end hook has not run."""
        with self._lock:
            return sum(len(v) for v in self._llm.values()) + sum(len(v) for v in self._tools.values())

    async def release_pending(self, reason: str = RUN_FAILED) -> int:
        """Release every pending reservation (call it when a run fails); returns how many."""
        with self._lock:
            handles = [h for entries in self._llm.values() for h, _ in entries]
            handles += [h for entries in self._tools.values() for h in entries]
            self._llm.clear()
            self._tools.clear()
        for handle in handles:
            await handle.release(reason)
        return len(handles)

    async def _open(self, **options: Any) -> AsyncStreamReservation | None:
        try:
            return await open_async(self.client, **options)
        except CyclesTransportError:
            if not self.fail_open:
                raise
            log.warning(
                "fail_open: the Cycles server could not be reached; %s %s runs WITHOUT a reservation",
                options.get("action_kind"), options.get("action_name"), exc_info=True,
            )
            return None

    # ---- LLM calls

    def _model_of(self, agent: Agent[Any]) -> str:
        if self.model:
            return self.model
        model = agent.model
        if isinstance(model, str) and model:
            return model
        name = getattr(model, "model", None)
        return name if isinstance(name, str) and name else get_default_model()

    def _estimate(self, agent: Agent[Any], model: str, system_prompt: str | None, items: list[Any]) -> int:
        text = (system_prompt or "") + json.dumps(items, default=str)
        tools = getattr(agent, "tools", None) or []
        text += "".join(f"{getattr(t, 'name', '')}{json.dumps(getattr(t, 'params_json_schema', ''))}" for t in tools)
        max_tokens = getattr(agent.model_settings, "max_tokens", None)
        if not isinstance(max_tokens, int) or max_tokens < 1:
            max_tokens = self.default_max_output_tokens
        prompt = char_upper_bound(text, len(items) + 1)
        return self.prices.estimate(model, input_tokens=prompt, max_output_tokens=max_tokens)

    async def on_llm_start(
        self, context: RunContextWrapper[Any], agent: Agent[Any], system_prompt: str | None, input_items: list[Any]
    ) -> None:
        """Reserve for the LLM call about to be made."""
        model = self._model_of(agent)
        estimate = self._estimate(agent, model, system_prompt, input_items)
        handle = await self._open(estimate=estimate, action_name=model, **self._llm_options)
        if handle is not None:
            with self._lock:
                self._llm.setdefault(agent.name, []).append((handle, model))

    async def on_llm_end(self, context: RunContextWrapper[Any], agent: Agent[Any], response: ModelResponse) -> None:
        """Commit the cost of the usage the model reported."""
        with self._lock:
            entries = self._llm.get(agent.name)
            taken = entries.pop(0) if entries else None
        if taken is None:
            return
        handle, model = taken
        usage = response.usage
        details = getattr(usage, "input_tokens_details", None)
        cached = _int(getattr(details, "cached_tokens", 0))
        reported = Usage(
            input_tokens=max(0, _int(usage.input_tokens) - cached), output_tokens=_int(usage.output_tokens),
            cached_input_tokens=cached, model=model,
        )
        if reported.prompt_tokens == 0 and reported.output_tokens == 0:
            await handle.commit(handle.context.estimate, metadata={"actual_source": "estimate"})
            return
        await handle.commit(reported.cost(self.prices, model), metrics=reported.metrics(None))

    # ---- tools

    def _tool_cost(self, name: str) -> int | None:
        costs = self.tool_costs
        if costs is None:
            return None
        return costs.get(name) if isinstance(costs, Mapping) else costs(name)

    @staticmethod
    def _call_id(context: RunContextWrapper[Any], agent: Agent[Any], tool: Tool) -> tuple[str, str | None]:
        call_id = getattr(context, "tool_call_id", None)
        if isinstance(call_id, str) and call_id:
            return call_id, call_id
        return f"{agent.name}/{tool.name}", None

    async def on_tool_start(self, context: RunContextWrapper[Any], agent: Agent[Any], tool: Tool) -> None:
        """Reserve the tool's cost (tools without one are not governed)."""
        cost = self._tool_cost(tool.name)
        if cost is None:
            return
        slot, call_id = self._call_id(context, agent, tool)
        key = idempotency_key("tool", call_id, self.namespace) if call_id else None
        handle = await self._open(estimate=cost, action_name=tool.name, idempotency_key=key, **self._tool_options)
        if handle is not None:
            with self._lock:
                self._tools.setdefault(slot, []).append(handle)

    async def on_tool_end(
        self, context: RunContextWrapper[Any], agent: Agent[Any], tool: Tool, result: object
    ) -> None:
        """Commit the tool's cost."""
        slot, _ = self._call_id(context, agent, tool)
        with self._lock:
            entries = self._tools.get(slot)
            handle = entries.pop(0) if entries else None
            if entries == []:
                del self._tools[slot]
        if handle is not None:
            await handle.commit(handle.context.estimate)

    # ---- handoffs

    async def on_handoff(self, context: RunContextWrapper[Any], from_agent: Agent[Any], to_agent: Agent[Any]) -> None:
        """Record the handoff as an ``agent.handoff`` event."""
        await create_event_async(
            self.client, amount=self._handoff_amount, action_name=f"{from_agent.name}->{to_agent.name}",
            metadata={"from_agent": from_agent.name, "to_agent": to_agent.name}, **self._event_options,
        )


def cycles_input_guardrail(
    *,
    estimate: int,
    client: AsyncCyclesClient | None = None,
    action_kind: str = "agent.run",
    action_name: str | None = None,
    unit: Unit | str = Unit.USD_MICROCENTS,
    fail_open: bool = False,
    name: str = "cycles_budget",
    tenant: str | None = None,
    workspace: str | None = None,
    app: str | None = None,
    workflow: str | None = None,
    agent: str | None = None,
    toolset: str | None = None,
    dimensions: Mapping[str, str] | None = None,
) -> InputGuardrail[Any]:
    """An input guardrail that asks ``/v1/decide`` for ``estimate`` before the run starts (it is blocking:
    ``run_in_parallel=False``, so a DENY stops the run before any model request, raising the SDK's
    ``InputGuardrailTripwireTriggered`` with the decision in ``output_info``). ``action_name`` defaults to the
    agent's name. ``fail_open``: see the module docs (default ``False``: an unreachable server raises)."""
    _check_client(client)
    options: dict[str, Any] = {
        "action_kind": action_kind, "unit": unit, "dimensions": dimensions, **subject_options(locals()),
    }

    async def check(context: RunContextWrapper[Any], agent_: Agent[Any], input: Any) -> GuardrailFunctionOutput:
        try:
            verdict = await decide_async(client, estimate=estimate, action_name=action_name or agent_.name, **options)
        except CyclesTransportError:
            if not fail_open:
                raise
            log.warning("fail_open: the Cycles server could not be reached; the run starts unchecked", exc_info=True)
            return GuardrailFunctionOutput(output_info={"decision": None, "fail_open": True}, tripwire_triggered=False)
        info = {
            "decision": str(getattr(verdict.decision, "value", verdict.decision)),
            "reason_code": verdict.reason_code,
            "retry_after_ms": verdict.retry_after_ms,
        }
        return GuardrailFunctionOutput(output_info=info, tripwire_triggered=not verdict.allowed)

    return InputGuardrail(guardrail_function=check, name=name, run_in_parallel=False)
