# ruff: noqa: F811
"""Closing a client stops the journal's background work in its directory: the last client of a directory in
this process leaves no spare file behind, so a temporary journal directory can be removed right away."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fixtures_local import Harness, harness, mode, uvicorn_switch  # noqa: F401

from runcycles import with_cycles
from runcycles._journal.spares import SPARE_SUFFIX, pool_for


def _spares(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"*{SPARE_SUFFIX}"))


def _settle_one(client: object) -> None:
    @with_cycles(estimate=10, actual=5, client=client)
    def work() -> int:
        return 1

    assert work() == 1


def test_the_last_client_of_a_directory_removes_its_spares_on_close(harness: Harness) -> None:
    client, _ = harness.sync_client()
    _settle_one(client)
    journal = client._journal_owner.journal
    directory = journal.directory
    pool_for(directory).refill()  # spares ready (as the background refill makes them)
    assert _spares(directory)
    client.close()
    assert _spares(directory) == []
    assert not list(directory.glob("v2-*.json"))
    shutil.rmtree(directory.parent)  # nothing is created in it any more
    assert not directory.parent.exists()
    harness.assert_ledger(spent=5)


def test_closing_one_client_keeps_the_spares_another_client_uses(harness: Harness) -> None:
    first, _ = harness.sync_client()
    second, _ = harness.sync_client()
    _settle_one(first)
    _settle_one(second)
    directory = first._journal_owner.journal.directory
    assert second._journal_owner.journal.directory == directory
    pool = pool_for(directory)
    pool.refill()
    first.close()
    assert pool_for(directory) is pool and not pool.closed and pool.ready == len(_spares(directory)) > 0
    second.close()
    assert pool.closed and _spares(directory) == []


@pytest.mark.anyio
async def test_aclose_removes_the_spares_too(harness: Harness) -> None:
    client, _ = harness.async_client()
    async with client:

        @with_cycles(estimate=10, actual=5, client=client)
        async def work() -> int:
            return 1

        assert await work() == 1
        directory = client._journal_owner.journal.directory
        pool_for(directory).refill()
        assert _spares(directory)
    assert _spares(directory) == []
    harness.assert_ledger(spent=5)
