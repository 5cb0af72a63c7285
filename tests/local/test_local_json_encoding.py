"""The server's hand-built JSON for hot responses is byte for byte what the generic encoder writes."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from runcycles.local._base import dumps, dumps_with
from runcycles.local._ledger import Budget
from runcycles.local._runtime_shared import balance, balances_json

_AMOUNTS = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_TEXT = st.text(max_size=20)  # any text: quotes, backslashes, control and non-ASCII characters included


@st.composite
def _budgets(draw: st.DrawFn) -> Budget:
    segments = draw(st.lists(_TEXT, min_size=1, max_size=3))
    return Budget(
        scope="/".join(segments),
        unit=draw(st.sampled_from(["USD_MICROCENTS", "TOKENS", "CREDITS", "RISK_POINTS"]) | _TEXT),
        tenant_id="t",
        ledger_id="l",
        allocated=draw(_AMOUNTS),
        reserved=draw(_AMOUNTS),
        spent=draw(_AMOUNTS),
        debt=draw(_AMOUNTS),
        overdraft_limit=draw(_AMOUNTS),
        is_over_limit=draw(st.booleans()),
    )


@settings(deadline=None)
@given(st.lists(_budgets(), max_size=4))
def test_balances_json_is_what_the_generic_encoder_writes(budgets: list[Budget]) -> None:
    assert balances_json(budgets) == dumps([balance(b) for b in budgets]).decode()


@settings(deadline=None)
@given(st.dictionaries(_TEXT, _TEXT | st.integers(), min_size=1, max_size=4), st.lists(_budgets(), max_size=2))
def test_dumps_with_appends_the_member_last(value: dict[str, object], budgets: list[Budget]) -> None:
    value.pop("balances", None)
    if not value:
        value["x"] = 1
    raw = dumps_with(value, "balances", balances_json(budgets))
    assert raw == dumps({**value, "balances": [balance(b) for b in budgets]})
    assert list(json.loads(raw)) == [*value, "balances"]
