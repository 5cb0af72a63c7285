"""LangChain (>= 1.0): agent middleware for ``create_agent`` and callback handlers for chains and LCEL.

Needs the ``langchain`` extra (``pip install 'runcycles[langchain]'``)::

    agent = create_agent(
        model, tools=[search, fetch],
        middleware=[
            CyclesTurnCap(max_turns=8),
            CyclesModelGate(prices=prices, client=cycles),
            CyclesToolGate({"search": 20_000, "fetch": ToolBudget(estimate=5_000, mode="both")}, client=cycles),
        ],
    )

    chain.invoke(inputs, config={"callbacks": [CyclesCallbackHandler(prices=prices, client=cycles)]})

LangChain and LangGraph run on asyncio (or threads); the async hooks need an `AsyncCyclesClient`, the sync ones
a `CyclesClient`.
"""

from __future__ import annotations

from ._budget import idempotency_key
from ._langchain_agent import CyclesModelGate, CyclesToolGate, CyclesTurnCap, ToolBudget
from ._langchain_callbacks import AsyncCyclesCallbackHandler, CyclesCallbackHandler

__all__ = [
    "AsyncCyclesCallbackHandler",
    "CyclesCallbackHandler",
    "CyclesModelGate",
    "CyclesToolGate",
    "CyclesTurnCap",
    "ToolBudget",
    "idempotency_key",
]
