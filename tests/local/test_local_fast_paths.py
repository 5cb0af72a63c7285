"""The server's fast paths keep its behaviour: cached key authentication, batched ASGI requests, Ledger.group."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from front_support import count_batches, decide_body

from runcycles.local import LocalCyclesServer
from runcycles.local import _ledger as db
from runcycles.local._base import new_id
from runcycles.local._ledger_store import Ledger

USD = "USD_MICROCENTS"


def _reserve(server: LocalCyclesServer, secret: str, key: str) -> tuple[int, dict[str, Any]]:
    headers = {"x-cycles-api-key": secret}
    status, _headers, body = server.handle("POST", "/v1/reservations", "", headers, decide_body(key))
    return status, json.loads(body)


def _admin(server: LocalCyclesServer, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    payload = b"" if body is None else json.dumps(body).encode()
    status, _headers, raw = server.handle(method, path, "", {"x-admin-api-key": server.admin_key}, payload)
    assert status in (200, 201), raw
    result: dict[str, Any] = json.loads(raw)
    return result


def _seeded(path: str | None, **options: Any) -> tuple[LocalCyclesServer, str]:
    server = LocalCyclesServer(path, **options)
    server.create_tenant("acme")
    server.create_budget("tenant:acme", USD, 1_000_000)
    return server, server.create_api_key("acme")


def _key_id(server: LocalCyclesServer) -> str:
    keys = _admin(server, "GET", "/v1/admin/api-keys?tenant_id=acme")["keys"]
    return str(keys[0]["key_id"])


def test_a_key_revoked_by_another_process_is_refused_on_the_next_request(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    serving, secret = _seeded(path)
    other = LocalCyclesServer(path, admin_key=serving.admin_key)  # another process on the same file
    assert _reserve(serving, secret, "r1")[0] == 200  # authenticated once: now cached
    _admin(other, "DELETE", f"/v1/admin/api-keys/{_key_id(other)}")
    status, body = _reserve(serving, secret, "r2")
    assert (status, body["message"]) == (401, "KEY_REVOKED")
    serving.close()
    other.close()


def test_a_tenant_suspended_or_a_key_narrowed_elsewhere_takes_effect_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    serving, secret = _seeded(path)
    other = LocalCyclesServer(path, admin_key=serving.admin_key)
    assert _reserve(serving, secret, "r1")[0] == 200
    _admin(other, "PATCH", f"/v1/admin/api-keys/{_key_id(other)}", {"permissions": ["balances:read"]})
    status, body = _reserve(serving, secret, "r2")
    assert (status, body["error"]) == (403, "FORBIDDEN")
    other.update_tenant("acme", status="SUSPENDED")
    status, body = _reserve(serving, secret, "r3")
    assert (status, body["message"]) == (401, "TENANT_SUSPENDED")
    serving.close()
    other.close()


def test_a_cached_key_still_expires_on_time() -> None:
    now = [1_800_000_000_000]
    server = LocalCyclesServer(clock=lambda: now[0])
    server.create_tenant("acme")
    server.create_budget("tenant:acme", USD, 1_000)
    created = _admin(
        server, "POST", "/v1/admin/api-keys", {"tenant_id": "acme", "name": "k", "expires_at": "2027-01-15T08:00:01Z"}
    )
    secret = created["key_secret"]
    assert _reserve(server, secret, "r1")[0] == 200
    now[0] += 10_000
    status, body = _reserve(server, secret, "r2")
    assert (status, body["message"]) == (401, "KEY_EXPIRED")
    server.close()


def test_unknown_secrets_are_not_cached() -> None:
    server, secret = _seeded(None)
    for index in range(50):
        assert _reserve(server, f"{secret[:12]}{index:020d}", f"x{index}")[0] == 401
    assert _reserve(server, secret, "ok")[0] == 200
    assert len(server._env.key_cache) == 1
    server.close()


def test_new_ids_are_random_version_4_uuids() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", i) for i in ids)


# --- batched ASGI requests on a file database ------------------------------------------------------------


async def _asgi_reserve(server: LocalCyclesServer, secret: str, key: str) -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    inbox = [{"type": "http.request", "body": decide_body(key), "more_body": False}]

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/reservations",
        "raw_path": b"/v1/reservations",
        "query_string": b"",
        "headers": [(b"x-cycles-api-key", secret.encode()), (b"content-type", b"application/json")],
    }
    await server.asgi_app(scope, receive, send)
    return int(sent[0]["status"]), json.loads(sent[1]["body"])


@pytest.mark.anyio
async def test_concurrent_asgi_requests_on_a_file_share_batches_and_all_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, secret = _seeded(str(tmp_path / "batched.db"))
    ledger = server._env.ledger
    groups, syncs = count_batches(ledger, monkeypatch)
    results: list[tuple[int, dict[str, Any]]] = []

    async def one(index: int) -> None:
        results.append(await _asgi_reserve(server, secret, f"k{index}"))

    async with anyio.create_task_group() as tasks:
        for index in range(40):
            tasks.start_soon(one, index)
    assert [status for status, _ in results] == [200] * 40
    assert 1 <= len(groups) < 40 and len(syncs) == len(groups)  # several requests shared a batch
    assert server.get_budget("tenant:acme", USD)["reserved"] == 40
    server.close()


@pytest.mark.anyio
async def test_a_batch_whose_commit_cannot_be_made_durable_answers_500_to_every_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, secret = _seeded(str(tmp_path / "failing.db"))

    def broken_sync() -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(server._env.ledger, "sync", broken_sync)
    results: list[tuple[int, dict[str, Any]]] = []

    async def one(index: int) -> None:
        results.append(await _asgi_reserve(server, secret, f"k{index}"))

    async with anyio.create_task_group() as tasks:
        for index in range(5):
            tasks.start_soon(one, index)
    assert [(status, body["error"]) for status, body in results] == [(500, "INTERNAL_ERROR")] * 5
    monkeypatch.undo()
    status, body = await _asgi_reserve(server, secret, "k0")  # the retry of an ambiguous outcome
    assert status == 200 and body["decision"] == "ALLOW"
    server.close()


@pytest.mark.anyio
async def test_in_memory_asgi_requests_run_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    server, secret = _seeded(None)

    def no_threads(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no worker thread for an in-memory database")

    monkeypatch.setattr(anyio.to_thread, "run_sync", no_threads)
    status, body = await _asgi_reserve(server, secret, "m1")
    assert status == 200 and body["decision"] == "ALLOW"
    server.close()


# --- Ledger.group ----------------------------------------------------------------------------------------


def _tenant(tenant_id: str) -> dict[str, str]:
    return {"tenant_id": tenant_id, "status": "ACTIVE"}


def _stored(path: str) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT tenant_id FROM tenants")}
    finally:
        conn.close()


def test_a_group_commits_its_writes_together_and_reads_see_them(tmp_path: Path) -> None:
    path = str(tmp_path / "group.db")
    ledger = Ledger(path)
    with ledger.group():
        with ledger.write() as conn:
            db.put_tenant(conn, _tenant("a"))
        with pytest.raises(RuntimeError), ledger.write() as conn:
            db.put_tenant(conn, _tenant("rolled-back"))
            raise RuntimeError("this writer's savepoint is rolled back")
        with ledger.write() as conn:
            db.put_tenant(conn, _tenant("b"))
        with ledger.read() as conn:
            assert {doc["tenant_id"] for doc in db.list_tenants(conn)} == {"a", "b"}
        assert _stored(path) == set()  # nothing visible before the group commits
    ledger.sync()
    assert _stored(path) == {"a", "b"}
    ledger.close()


def test_a_group_that_fails_keeps_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "group.db")
    ledger = Ledger(path)
    with pytest.raises(KeyError), ledger.group():
        with ledger.write() as conn:
            db.put_tenant(conn, _tenant("a"))
        raise KeyError("the batch runner broke")
    assert _stored(path) == set()
    with ledger.write() as conn:  # the ledger is still usable
        db.put_tenant(conn, _tenant("c"))
    assert _stored(path) == {"c"}
    ledger.close()


@pytest.mark.anyio
async def test_a_request_cancelled_while_queued_is_dropped_and_the_queue_still_drains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, secret = _seeded(str(tmp_path / "queued.db"))
    real_handle = server._app.handle
    entered, gate = threading.Event(), threading.Event()

    def held_handle(*args: Any, **kwargs: Any) -> Any:
        if not entered.is_set():
            entered.set()
            gate.wait(10)  # the first batch is held on the worker thread until the queue is set up
        return real_handle(*args, **kwargs)

    monkeypatch.setattr(server._app, "handle", held_handle)
    results: dict[str, int] = {}

    async def one(key: str) -> None:
        results[key] = (await _asgi_reserve(server, secret, key))[0]

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(one, "lead")
        await anyio.to_thread.run_sync(entered.wait)
        with anyio.CancelScope() as dropped:
            async with anyio.create_task_group() as queued:
                queued.start_soon(one, "dropped")
                tasks.start_soon(one, "kept")
                await anyio.wait_all_tasks_blocked()
                dropped.cancel()
        gate.set()
    assert results == {"lead": 200, "kept": 200}
    assert server.get_budget("tenant:acme", USD)["reserved"] == 2  # the dropped request never ran
    server.close()
