"""Concurrency property: many threads and several processes sharing one database never overdraw a budget
under REJECT, every charge is accounted exactly once, and the ledger identity holds afterwards."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from local_workers import process_worker, run_threads

from runcycles.local import LocalCyclesServer

USD = "USD_MICROCENTS"
TENANT_ALLOCATED = 20_000
AGENT_ALLOCATED = 8_000


def seed(server: LocalCyclesServer) -> str:
    server.create_tenant("acme")
    server.create_budget("tenant:acme", USD, TENANT_ALLOCATED)
    for agent in range(3):
        server.create_budget(f"tenant:acme/agent:a{agent}", USD, AGENT_ALLOCATED)
    return server.create_api_key("acme")


def check_ledger(server: LocalCyclesServer, charged: int) -> None:
    tenant = server.get_budget("tenant:acme", USD)
    agents = [server.get_budget(f"tenant:acme/agent:a{i}", USD) for i in range(3)]
    for budget in (tenant, *agents):
        assert budget["reserved"] == 0 and budget["debt"] == 0
        assert budget["spent"] <= budget["allocated"]
        assert budget["remaining"] == budget["allocated"] - budget["spent"] - budget["reserved"] - budget["debt"]
        assert budget["remaining"] >= 0
    assert tenant["spent"] == charged == sum(agent["spent"] for agent in agents)
    assert charged > TENANT_ALLOCATED // 2  # the workload really contended for the budget


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_threads_never_overdraw(tmp_path: Path, kind: str) -> None:
    server = LocalCyclesServer(None if kind == "memory" else str(tmp_path / "ledger.db"))
    key = seed(server)
    charged = run_threads(server, key, "t", threads=16, rounds=40)
    check_ledger(server, charged)
    server.close()


def test_processes_and_threads_share_one_file(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    server = LocalCyclesServer(path)
    key = seed(server)
    context = multiprocessing.get_context("spawn")
    with context.Pool(3) as pool:
        children = pool.map_async(process_worker, [(path, key, i, 4, 30) for i in range(3)])
        parent = run_threads(server, key, "parent", threads=4, rounds=20, seed=999)
        charged = [*children.get(timeout=60), parent]
    check_ledger(server, sum(charged))
    server.close()
