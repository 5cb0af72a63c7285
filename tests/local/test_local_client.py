"""The project's own clients and lifecycle against the embedded server (in process)."""

from __future__ import annotations

import pytest

from runcycles import AsyncCyclesClient, BudgetExceededError, CyclesClient, CyclesConfig, Unit, with_cycles
from runcycles.local import LocalCyclesServer


@pytest.fixture
def local() -> LocalCyclesServer:
    server = LocalCyclesServer()
    server.create_tenant("acme")
    server.create_budget("tenant:acme", Unit.USD_MICROCENTS, 1_000)
    return server


def config(server: LocalCyclesServer) -> CyclesConfig:
    return CyclesConfig(
        base_url="http://local", api_key=server.create_api_key("acme"), tenant="acme", journal_enabled=False
    )


def reserve_body(key: str, amount: int) -> dict[str, object]:
    return {
        "idempotency_key": key,
        "subject": {"tenant": "acme"},
        "action": {"kind": "llm.completion", "name": "m"},
        "estimate": {"unit": "USD_MICROCENTS", "amount": amount},
    }


def test_sync_client_round_trip_and_pagination(local: LocalCyclesServer) -> None:
    with CyclesClient(config(local), transport=local.transport()) as client:
        ids = [client.create_reservation(reserve_body(f"k{i}", 10)).body["reservation_id"] for i in range(5)]
        response = client.commit_reservation(
            ids[0], {"idempotency_key": "c0", "actual": {"unit": "USD_MICROCENTS", "amount": 4}}
        )
        assert response.is_success and response.cycles_tenant == "acme"
        assert response.body["released"]["amount"] == 6
        rows = list(client.iter_reservations(limit=2))
        assert sorted(row.reservation_id for row in rows) == sorted(ids)
        balances = list(client.iter_balances(tenant="acme"))
        assert balances[0].reserved is not None and balances[0].reserved.amount == 40
        denied = client.create_reservation(reserve_body("big", 10_000))
        assert denied.status == 409 and denied.get_error_response() is not None


def test_with_cycles_commits_the_actual_and_denies_over_budget(local: LocalCyclesServer) -> None:
    with CyclesClient(config(local), transport=local.transport()) as client:

        @with_cycles(estimate=100, actual=lambda result: result * 10, client=client)
        def work(n: int) -> int:
            return n

        assert work(7) == 7
        budget = local.get_budget("tenant:acme", Unit.USD_MICROCENTS)
        assert (budget["spent"], budget["reserved"]) == (70, 0)

        @with_cycles(estimate=5_000, client=client)
        def too_big() -> None:
            raise AssertionError("must not run")

        with pytest.raises(BudgetExceededError):
            too_big()


@pytest.mark.anyio
async def test_async_client_and_decorator(local: LocalCyclesServer) -> None:
    async with AsyncCyclesClient(config(local), transport=local.async_transport()) as client:

        @with_cycles(estimate=50, actual=30, client=client)
        async def work() -> str:
            return "ok"

        assert await work() == "ok"
        listed = await client.list_reservations(status="COMMITTED")
        assert [row["committed"]["amount"] for row in listed.body["reservations"]] == [30]
    assert local.get_budget("tenant:acme", Unit.USD_MICROCENTS)["spent"] == 30
