"""Agent middleware for LangChain's ``create_agent``: a model gate, a tool gate and a turn cap."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, Literal

import attrs

try:
    from langchain.agents.middleware.types import (
        AgentMiddleware,
        AgentState,
        ModelRequest,
        ModelResponse,
        PrivateStateAttr,
        hook_config,
    )
    from langchain_core.messages import AIMessage, ToolMessage
    from langgraph.channels.untracked_value import UntrackedValue
    from langgraph.prebuilt.tool_node import ToolCallRequest
    from typing_extensions import NotRequired
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "runcycles.integrations.langchain needs the 'langchain' extra: pip install 'runcycles[langchain]'"
    ) from exc

from ..client import AsyncCyclesClient, CyclesClient
from ..errors import CyclesProtocolError
from ..models import Unit
from ..pricing import PriceTable
from ._budget import (
    Verdict,
    commit_steps,
    decide_async,
    decide_sync,
    denial_reason,
    idempotency_key,
    is_denial,
    open_async,
    open_sync,
    subject_options,
)
from ._checks import require_pricing
from ._langchain_common import estimate_cost, model_name_of, sum_usage, usage_of_message
from ._steps import Steps, drive, drive_async

__all__ = ["CyclesModelGate", "CyclesToolGate", "CyclesTurnCap", "ToolBudget"]

log = logging.getLogger("runcycles.integrations.langchain")

MODEL_FAILED = "model_call_failed"
TOOL_FAILED = "tool_call_failed"
Client = CyclesClient | AsyncCyclesClient | None


@attrs.frozen
class _Calls:
    """The Cycles calls of one flavour, made by the middleware's step generators (see `_steps`).

    A client of the other flavour counts as none given (the process default is used then)."""

    client: CyclesClient | AsyncCyclesClient | None
    open: Callable[..., Any]
    decide: Callable[..., Any]

    @classmethod
    def sync(cls, client: Client) -> _Calls:
        return cls(client if isinstance(client, CyclesClient) else None, open_sync, decide_sync)

    @classmethod
    def async_(cls, client: Client) -> _Calls:
        return cls(client if isinstance(client, AsyncCyclesClient) else None, open_async, decide_async)


def _check_client(client: Client) -> None:
    if client is not None and not isinstance(client, CyclesClient | AsyncCyclesClient):
        raise TypeError(f"client must be a CyclesClient or an AsyncCyclesClient, got {type(client).__name__}")


# --------------------------------------------------------------------------- model gate


class CyclesModelGate(AgentMiddleware):
    """Reserve before each model call, commit the `PriceTable` cost of the reported ``usage_metadata``.

    The estimate is a byte-level upper bound of the prompt plus the call's ``max_tokens`` (the request's
    ``model_settings``, else the model's ``max_tokens``, else ``default_max_output_tokens``). A model error
    releases the reservation and propagates; a denial becomes an `AIMessage` carrying the reason (no tool
    calls), so the agent ends cleanly. A model that reports no usage commits the estimate (marked
    ``actual_source="estimate"``). ``client`` is a `CyclesClient` for ``invoke``/``stream``, an
    `AsyncCyclesClient` for ``ainvoke``/``astream``; ``None`` uses the process defaults.
    """

    def __init__(
        self,
        *,
        prices: PriceTable,
        client: Client = None,
        model: str | None = None,
        default_max_output_tokens: int = 1024,
        action_kind: str = "llm.completion",
        unit: Unit | str = Unit.USD_MICROCENTS,
        ttl_ms: int = 60000,
        tenant: str | None = None,
        workspace: str | None = None,
        app: str | None = None,
        workflow: str | None = None,
        agent: str | None = None,
        toolset: str | None = None,
        dimensions: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        require_pricing(prices, default_max_output_tokens)
        _check_client(client)
        self.prices = prices
        self.client = client
        self.model = model
        self.default_max_output_tokens = default_max_output_tokens
        self._options: dict[str, Any] = {
            "action_kind": action_kind, "unit": unit, "ttl_ms": ttl_ms, "dimensions": dimensions,
            **subject_options(locals()),
        }

    def _plan(self, request: ModelRequest) -> tuple[str, int]:
        model = self.model or model_name_of(request.model)
        if model is None:
            raise ValueError("CyclesModelGate cannot tell the model's name: pass model= to price it")
        settings = request.model_settings or {}
        max_tokens = settings.get("max_tokens") or getattr(request.model, "max_tokens", None)
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            max_tokens = self.default_max_output_tokens
        messages = ([request.system_message] if request.system_message is not None else []) + list(request.messages)
        estimate = estimate_cost(self.prices, model, messages, tools=request.tools, max_output_tokens=max_tokens)
        return model, estimate

    def _actual(self, model: str, response: Any) -> tuple[int | None, Any]:
        messages = response.result if isinstance(response, ModelResponse) else [response]
        usage = sum_usage(usage_of_message(message) for message in messages)
        if usage is None:
            return None, None
        return usage.cost(self.prices, model), usage.metrics(None)

    @staticmethod
    def _denied(exc: CyclesProtocolError) -> AIMessage:
        reason = denial_reason(exc)
        return AIMessage(
            content=f"Stopped: the budget does not allow another model call ({reason}).",
            response_metadata={"cycles_denied": True, "reason_code": exc.reason_code},
        )

    def _model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], Any], calls: _Calls) -> Steps[Any]:
        model, estimate = self._plan(request)
        try:
            handle = yield calls.open(calls.client, estimate=estimate, action_name=model, **self._options)
        except CyclesProtocolError as exc:
            if is_denial(exc):
                return self._denied(exc)
            raise
        try:
            response = yield handler(request)
        except BaseException:
            yield handle.release(MODEL_FAILED)
            raise
        yield from commit_steps(handle, *self._actual(model, response))
        return response

    def wrap_model_call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], ModelResponse],
    ) -> Any:
        """Reserve, call the model, commit its cost (sync agents)."""
        return drive(self._model_call(request, handler, _Calls.sync(self.client)))

    async def awrap_model_call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], Awaitable[ModelResponse]],
    ) -> Any:
        """Reserve, call the model, commit its cost (async agents)."""
        return await drive_async(self._model_call(request, handler, _Calls.async_(self.client)))


# --------------------------------------------------------------------------- tool gate


@attrs.frozen(kw_only=True)
class ToolBudget:
    """How one tool is governed.

    ``mode``: ``"reserve"`` (reserve ``estimate`` before the tool runs, commit ``actual`` after: a constant,
    a callable of the tool's result, else the estimate), ``"decide"`` (ask ``/v1/decide`` only; nothing is
    spent) or ``"both"`` (decide, then reserve). ``action_name`` defaults to the tool's name.
    """

    estimate: int
    action_kind: str = "tool.call"
    action_name: str | None = None
    mode: Literal["reserve", "decide", "both"] = "reserve"
    unit: Unit | str = Unit.USD_MICROCENTS
    actual: int | Callable[[Any], int] | None = None

    def __attrs_post_init__(self) -> None:
        if self.mode not in ("reserve", "decide", "both"):
            raise ValueError(f"mode must be 'reserve', 'decide' or 'both', got {self.mode!r}")
        if not isinstance(self.estimate, int) or isinstance(self.estimate, bool) or self.estimate < 0:
            raise ValueError("estimate must be non-negative")


ToolPolicies = Mapping[str, "ToolBudget | int"] | Callable[[str, Mapping[str, Any]], "ToolBudget | int | None"]


def _as_budget(value: ToolBudget | int | None) -> ToolBudget | None:
    if value is None or isinstance(value, ToolBudget):
        return value
    return ToolBudget(estimate=value)


class CyclesToolGate(AgentMiddleware):
    """Govern tool calls: per tool, a `ToolBudget` (or a plain estimate) from a mapping of tool names or a
    callable of ``(name, args)``; tools without one use ``default`` (``None``: not governed).

    A denial (by decide or by the reservation) returns a `ToolMessage` with the reason (``status="error"``) and
    the tool never runs; the model sees it and can carry on. Reservations use a deterministic idempotency key
    from the tool call id (namespaced by ``namespace``, a string or a callable of the `ToolCallRequest`, when
    given), so a retried call lands on the same reservation. A tool that raises releases its reservation.
    """

    def __init__(
        self,
        tools: ToolPolicies,
        *,
        default: ToolBudget | int | None = None,
        client: Client = None,
        namespace: str | Callable[[ToolCallRequest], str | None] | None = None,
        ttl_ms: int = 60000,
        tenant: str | None = None,
        workspace: str | None = None,
        app: str | None = None,
        workflow: str | None = None,
        agent: str | None = None,
        toolset: str | None = None,
        dimensions: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(tools, Mapping) and not callable(tools):
            raise TypeError("tools must be a mapping of tool names or a callable of (name, args)")
        _check_client(client)
        self._tools = tools
        self._default = _as_budget(default)
        self.client = client
        self._namespace = namespace
        self._options: dict[str, Any] = {"ttl_ms": ttl_ms, "dimensions": dimensions, **subject_options(locals())}

    def policy(self, name: str, args: Mapping[str, Any]) -> ToolBudget | None:
        """The `ToolBudget` for a call of tool ``name`` with ``args`` (``None``: not governed)."""
        tools = self._tools
        found = tools.get(name) if isinstance(tools, Mapping) else tools(name, args)
        return _as_budget(found) or self._default

    def _key(self, request: ToolCallRequest) -> str | None:
        call_id = request.tool_call.get("id")
        if not call_id:
            return None
        namespace = self._namespace(request) if callable(self._namespace) else self._namespace
        return idempotency_key("tool", str(call_id), namespace)

    def _options_for(self, name: str, budget: ToolBudget) -> dict[str, Any]:
        return {
            "action_kind": budget.action_kind, "action_name": budget.action_name or name, "unit": budget.unit,
            **self._options,
        }

    @staticmethod
    def _denied(request: ToolCallRequest, reason: str) -> ToolMessage:
        name = request.tool_call.get("name", "")
        return ToolMessage(
            content=f"Tool call '{name}' denied by the budget ({reason}); it did not run.",
            tool_call_id=request.tool_call.get("id") or "",
            name=name,
            status="error",
            response_metadata={"cycles_denied": True, "reason_code": reason},
        )

    @staticmethod
    def _amount(budget: ToolBudget, result: Any) -> int:
        actual = budget.actual
        if not callable(actual):
            return budget.estimate if actual is None else actual
        try:
            value = actual(result)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value
            raise ValueError(f"actual must be a non-negative int, got {value!r}")
        except Exception:  # the tool ran: its spend is committed, never dropped
            log.exception("the tool's actual= failed; committing its estimate instead")
            return budget.estimate

    def _tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], Any], calls: _Calls
    ) -> Steps[Any]:
        name = request.tool_call.get("name", "")
        budget = self.policy(name, request.tool_call.get("args") or {})
        if budget is None:
            return (yield handler(request))
        options = self._options_for(name, budget)
        if budget.mode in ("decide", "both"):
            verdict: Verdict = yield calls.decide(calls.client, estimate=budget.estimate, **options)
            if not verdict.allowed:
                return self._denied(request, verdict.reason)
        if budget.mode == "decide":
            return (yield handler(request))
        try:
            handle = yield calls.open(
                calls.client, estimate=budget.estimate, idempotency_key=self._key(request), **options
            )
        except CyclesProtocolError as exc:
            if is_denial(exc):
                return self._denied(request, denial_reason(exc))
            raise
        try:
            result = yield handler(request)
        except BaseException:
            yield handle.release(TOOL_FAILED)
            raise
        yield handle.commit(self._amount(budget, result))
        return result

    def wrap_tool_call(self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], Any]) -> Any:
        """Decide and/or reserve, run the tool, commit (sync agents)."""
        return drive(self._tool_call(request, handler, _Calls.sync(self.client)))

    async def awrap_tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], Awaitable[Any]]
    ) -> Any:
        """Decide and/or reserve, run the tool, commit (async agents)."""
        return await drive_async(self._tool_call(request, handler, _Calls.async_(self.client)))


# --------------------------------------------------------------------------- turn cap


class TurnCapState(AgentState[Any]):
    """The turn cap's private counter of model turns in the current run."""

    cycles_run_turns: NotRequired[Annotated[int, UntrackedValue, PrivateStateAttr]]


def _turns(state: Mapping[str, Any]) -> int:
    turns = state.get("cycles_run_turns", 0)
    return turns if isinstance(turns, int) else 0


class CyclesTurnCap(AgentMiddleware):
    """End the run after ``max_turns`` model turns, or as soon as ``/v1/decide`` denies a turn.

    With ``decide_estimate`` set, each turn first asks ``/v1/decide`` for that amount (``action_kind``
    ``"agent.turn"``); a DENY ends the run with an `AIMessage` carrying the reason. Nothing is reserved here:
    pair it with `CyclesModelGate` to charge the turns.
    """

    state_schema = TurnCapState

    def __init__(
        self,
        max_turns: int | None = None,
        *,
        decide_estimate: int | None = None,
        client: Client = None,
        action_kind: str = "agent.turn",
        action_name: str = "model_turn",
        unit: Unit | str = Unit.USD_MICROCENTS,
        tenant: str | None = None,
        workspace: str | None = None,
        app: str | None = None,
        workflow: str | None = None,
        agent: str | None = None,
        toolset: str | None = None,
        dimensions: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        if max_turns is None and decide_estimate is None:
            raise ValueError("CyclesTurnCap needs max_turns, decide_estimate, or both")
        if max_turns is not None and max_turns < 1:
            raise ValueError("max_turns must be at least 1")
        if decide_estimate is not None and decide_estimate < 0:
            raise ValueError("decide_estimate must be non-negative")
        _check_client(client)
        self.max_turns = max_turns
        self.decide_estimate = decide_estimate
        self.client = client
        self._options: dict[str, Any] = {
            "action_kind": action_kind, "action_name": action_name, "unit": unit, "dimensions": dimensions,
            **subject_options(locals()),
        }

    def _over(self, state: AgentState[Any]) -> dict[str, Any] | None:
        turns = _turns(state)
        if self.max_turns is not None and turns >= self.max_turns:
            return self._end(f"Stopped: the turn cap of {self.max_turns} model turns was reached.", "TURN_CAP")
        return None

    @staticmethod
    def _end(text: str, reason: str) -> dict[str, Any]:
        message = AIMessage(content=text, response_metadata={"cycles_denied": True, "reason_code": reason})
        return {"jump_to": "end", "messages": [message]}

    def _denied(self, verdict: Verdict) -> dict[str, Any]:
        return self._end(f"Stopped: the budget denied another turn ({verdict.reason}).", verdict.reason)

    def _before_model(self, state: AgentState[Any], calls: _Calls) -> Steps[dict[str, Any] | None]:
        over = self._over(state)
        if over is not None or self.decide_estimate is None:
            return over
        verdict: Verdict = yield calls.decide(calls.client, estimate=self.decide_estimate, **self._options)
        return None if verdict.allowed else self._denied(verdict)

    @hook_config(can_jump_to=["end"])
    def before_model(self, state: AgentState[Any], runtime: Any) -> dict[str, Any] | None:
        """End the run when the cap is reached or decide denies the turn."""
        return drive(self._before_model(state, _Calls.sync(self.client)))

    @hook_config(can_jump_to=["end"])
    async def abefore_model(self, state: AgentState[Any], runtime: Any) -> dict[str, Any] | None:
        """Async twin of `before_model`."""
        return await drive_async(self._before_model(state, _Calls.async_(self.client)))

    def after_model(self, state: AgentState[Any], runtime: Any) -> dict[str, Any] | None:
        """Count the turn."""
        return {"cycles_run_turns": _turns(state) + 1}

    async def aafter_model(self, state: AgentState[Any], runtime: Any) -> dict[str, Any] | None:
        """Count the turn."""
        return self.after_model(state, runtime)
