"""Group commit on a file ledger: writers that queue share one transaction, each in its own savepoint."""

from __future__ import annotations

import threading
from pathlib import Path

from runcycles.local import _ledger as db
from runcycles.local._ledger_store import Ledger


class _ApiError(Exception):
    commit_on_error = True


def _tenant(tenant_id: str) -> dict[str, str]:
    return {"tenant_id": tenant_id, "status": "ACTIVE"}


def test_concurrent_writers_each_keep_or_lose_exactly_their_own_changes(tmp_path: Path) -> None:
    ledger = Ledger(str(tmp_path / "ledger.db"))
    start = threading.Barrier(24)
    outcomes: dict[int, str] = {}

    def writer(index: int) -> None:
        start.wait()
        try:
            with ledger.write() as conn:
                db.put_tenant(conn, _tenant(f"t{index}"))
                if index % 3 == 1:
                    raise RuntimeError("rolled back")
                if index % 3 == 2:
                    raise _ApiError("committed anyway")
        except RuntimeError:
            outcomes[index] = "rolled back"
        except _ApiError:
            outcomes[index] = "api error"
        else:
            outcomes[index] = "ok"

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ledger.close()

    reopened = Ledger(str(tmp_path / "ledger.db"))
    with reopened.read() as conn:
        stored = {doc["tenant_id"] for doc in db.list_tenants(conn)}
    reopened.close()
    assert len(outcomes) == 24
    assert stored == {f"t{i}" for i in range(24) if i % 3 != 1}


def test_a_write_after_a_failed_one_on_the_same_ledger_still_commits(tmp_path: Path) -> None:
    ledger = Ledger(str(tmp_path / "ledger.db"))
    try:
        with ledger.write() as conn:
            db.put_tenant(conn, _tenant("gone"))
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    with ledger.write() as conn:
        db.put_tenant(conn, _tenant("kept"))
    with ledger.read() as conn:
        assert [doc["tenant_id"] for doc in db.list_tenants(conn)] == ["kept"]
    ledger.close()
