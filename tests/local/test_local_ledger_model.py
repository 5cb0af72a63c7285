"""Model-based property test: random operation sequences keep the ledger consistent.

After every step, for every budget: ``reserved`` equals the holds of the ACTIVE reservations on it,
``spent + debt`` equals everything charged to it, ``debt`` never exceeds the overdraft limit, and
``remaining = allocated - spent - reserved - debt``.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runcycles.local import LocalCyclesServer

USD = "USD_MICROCENTS"
SCOPES = {0: ["tenant:acme", "tenant:acme/agent:a0"], 1: ["tenant:acme", "tenant:acme/agent:a1"], 2: ["tenant:acme"]}
POLICIES = ["REJECT", "ALLOW_IF_AVAILABLE", "ALLOW_WITH_OVERDRAFT"]

operation = st.one_of(
    st.tuples(st.just("reserve"), st.integers(0, 600), st.integers(0, 2), st.sampled_from(POLICIES)),
    st.tuples(st.just("commit"), st.integers(0, 30), st.integers(0, 900)),
    st.tuples(st.just("release"), st.integers(0, 30)),
    st.tuples(st.just("extend"), st.integers(0, 30), st.integers(1, 20_000)),
    st.tuples(st.just("event"), st.integers(0, 600), st.integers(0, 2), st.sampled_from(POLICIES)),
    st.tuples(st.just("advance"), st.integers(0, 40_000)),
    st.tuples(st.just("fund"), st.sampled_from(["CREDIT", "REPAY_DEBT", "RESET"]), st.integers(0, 800)),
)


class Clock:
    now = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, min_size=1, max_size=40))
def test_random_operations_keep_the_ledger_consistent(ops: list[tuple[Any, ...]]) -> None:
    clock = Clock()
    server = LocalCyclesServer(clock=clock)
    server.create_tenant("acme")
    server.create_budget("tenant:acme", USD, 2_000)
    server.create_budget("tenant:acme/agent:a0", USD, 700)
    server.create_budget("tenant:acme/agent:a1", USD, 700, overdraft_limit=500)
    key = server.create_api_key("acme")
    holds: dict[str, tuple[int, list[str]]] = {}  # reservation id -> (amount, budgeted scopes)
    ids: list[str] = []
    charged = {scope: 0 for scope in ("tenant:acme", "tenant:acme/agent:a0", "tenant:acme/agent:a1")}

    def call(method: str, path: str, body: dict[str, Any] | None = None, query: str = "") -> tuple[int, Any]:
        raw = json.dumps(body).encode() if body is not None else b""
        status, _headers, out = server.handle(method, path, query, {"x-cycles-api-key": key}, raw)
        assert status != 500, out
        return status, json.loads(out)

    for step, op in enumerate(ops):
        kind = op[0]
        if kind in ("reserve", "event"):
            _, amount, agent, policy = op
            subject = {"tenant": "acme", **({"agent": f"a{agent}"} if agent < 2 else {})}
            body: dict[str, Any] = {
                "idempotency_key": f"s{step}",
                "subject": subject,
                "action": {"kind": "k", "name": "n"},
                "overage_policy": policy,
            }
            if kind == "reserve":
                status, data = call(
                    "POST",
                    "/v1/reservations",
                    {**body, "estimate": {"unit": USD, "amount": amount}, "ttl_ms": 10_000, "grace_period_ms": 1_000},
                )
                if status == 200:
                    holds[data["reservation_id"]] = (amount, SCOPES[agent])
                    ids.append(data["reservation_id"])
                else:
                    assert status == 409, data
            else:
                status, data = call("POST", "/v1/events", {**body, "actual": {"unit": USD, "amount": amount}})
                if status == 201:
                    for scope in SCOPES[agent]:
                        charged[scope] += data["charged"]["amount"]
                else:
                    assert status == 409, data
        elif kind in ("commit", "release", "extend") and ids:
            rid = ids[op[1] % len(ids)]
            if kind == "commit":
                status, data = call(
                    "POST",
                    f"/v1/reservations/{rid}/commit",
                    {"idempotency_key": f"s{step}", "actual": {"unit": USD, "amount": op[2]}},
                )
            elif kind == "release":
                status, data = call("POST", f"/v1/reservations/{rid}/release", {"idempotency_key": f"s{step}"})
            else:
                status, data = call(
                    "POST", f"/v1/reservations/{rid}/extend", {"idempotency_key": f"s{step}", "extend_by_ms": op[2]}
                )
            if status == 200 and kind != "extend":
                _amount, scopes = holds.pop(rid)
                for scope in scopes:
                    charged[scope] += data["charged"]["amount"] if kind == "commit" else 0
            elif status != 200:
                assert status in (409, 410), data
        elif kind == "advance":
            clock.now += op[1]
        elif kind == "fund":
            debt_before = server.get_budget("tenant:acme/agent:a1", USD)["debt"]
            server.fund_budget("tenant:acme/agent:a1", USD, op[1], op[2])
            if op[1] == "REPAY_DEBT":  # repaid debt leaves the books (capped at the outstanding debt)
                charged["tenant:acme/agent:a1"] -= min(op[2], debt_before)

        server.sweep_expired()
        status, listing = call("GET", "/v1/reservations", query="status=ACTIVE&limit=200")
        active = {row["reservation_id"] for row in listing["reservations"]}
        for rid in list(holds):
            if rid not in active:  # expired: the hold went back, nothing was charged
                holds.pop(rid)
        for scope, total in charged.items():
            budget = server.get_budget(scope, USD)
            held = sum(amount for amount, scopes in holds.values() if scope in scopes)
            assert budget["reserved"] == held, (scope, budget, held)
            assert budget["spent"] + budget["debt"] == total, (scope, budget, total)
            assert budget["debt"] <= budget["overdraft_limit"]
            assert budget["remaining"] == budget["allocated"] - budget["spent"] - budget["reserved"] - budget["debt"]
    server.close()
