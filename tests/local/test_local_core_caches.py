"""The request core's shortcuts keep its behaviour: tenant documents cached by ``auth_epoch`` (and rollbacks),
the one opening statement of a runtime write (expiry sweep, idempotency record), narrow budget writes."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runcycles.local import LocalCyclesServer
from runcycles.local import _ledger as db
from runcycles.local._runtime_shared import tenant_doc
from runcycles.local._validate import (
    COMMIT_REQUEST,
    EVENT_REQUEST,
    EXTEND_REQUEST,
    RELEASE_REQUEST,
    RESERVATION_CREATE_REQUEST,
    SchemaError,
    accepts,
)

USD = "USD_MICROCENTS"


def _call(server: LocalCyclesServer, secret: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    headers = {"x-cycles-api-key": secret}
    status, _headers, raw = server.handle("POST", path, "", headers, json.dumps(body).encode())
    return status, json.loads(raw)


def _reserve(server: LocalCyclesServer, secret: str, key: str, amount: int = 10) -> tuple[int, dict[str, Any]]:
    body = {
        "idempotency_key": key,
        "subject": {"tenant": "acme"},
        "action": {"kind": "k", "name": "n"},
        "estimate": {"unit": USD, "amount": amount},
    }
    return _call(server, secret, "/v1/reservations", body)


def _commit(server: LocalCyclesServer, secret: str, rid: str, key: str, amount: int) -> tuple[int, dict[str, Any]]:
    body = {"idempotency_key": key, "actual": {"unit": USD, "amount": amount}}
    return _call(server, secret, f"/v1/reservations/{rid}/commit", body)


def _seeded(path: str | None, **options: Any) -> tuple[LocalCyclesServer, str]:
    server = LocalCyclesServer(path, **options)
    server.create_tenant("acme")
    server.create_budget("tenant:acme", USD, 1_000_000)
    return server, server.create_api_key("acme")


def test_a_tenant_closed_by_another_process_is_seen_by_the_next_commit(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    serving, secret = _seeded(path)
    other = LocalCyclesServer(path, admin_key=serving.admin_key)
    status, created = _reserve(serving, secret, "r1")  # the tenant document is now cached
    assert status == 200
    other.update_tenant("acme", status="CLOSED")
    status, body = _commit(serving, secret, created["reservation_id"], "c1", 5)
    assert (status, body["error"]) == (409, "TENANT_CLOSED")
    status, body = _reserve(serving, secret, "r2")
    assert (status, body["error"]) == (409, "TENANT_CLOSED")
    serving.close()
    other.close()


def test_a_tenant_setting_changed_elsewhere_applies_to_the_next_reserve(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    serving, secret = _seeded(path)
    other = LocalCyclesServer(path, admin_key=serving.admin_key)
    assert _reserve(serving, secret, "r1")[1]["remaining_ttl_ms"] == 60_000
    other.update_tenant("acme", default_reservation_ttl_ms=120_000)
    assert _reserve(serving, secret, "r2")[1]["remaining_ttl_ms"] == 120_000
    serving.close()
    other.close()


def _put_ttl(conn: Any, ttl: int) -> None:
    doc = db.get_tenant(conn, "acme")
    assert doc is not None
    db.put_tenant(conn, {**doc, "default_reservation_ttl_ms": ttl})


@pytest.mark.parametrize("file_db", [False, True])
def test_a_rolled_back_tenant_change_never_stays_in_the_cache(tmp_path: Path, file_db: bool) -> None:
    # The rolled-back change brings auth_epoch back; a later change reaches the same epoch value with another
    # document: the cache must not take the rolled-back document for it.
    server, secret = _seeded(str(tmp_path / "t.db") if file_db else None)
    env = server._env
    with pytest.raises(RuntimeError), env.ledger.write() as conn:
        _put_ttl(conn, 90_000)
        doc = tenant_doc(env, conn, "acme", db.auth_epoch(conn))
        assert doc is not None and doc["default_reservation_ttl_ms"] == 90_000
        raise RuntimeError("roll back")
    with env.ledger.write() as conn:
        _put_ttl(conn, 120_000)
    assert _reserve(server, secret, "r1")[1]["remaining_ttl_ms"] == 120_000
    server.close()


def test_the_tenant_cache_is_bounded_and_keyed_by_tenant() -> None:
    server, secret = _seeded(None)
    server.create_tenant("beta")
    env = server._env
    with env.ledger.write() as conn:
        epoch = db.auth_epoch(conn)
        acme, beta, missing = (tenant_doc(env, conn, t, epoch) for t in ("acme", "beta", "nobody"))
    assert (acme or {}).get("tenant_id") == "acme" and (beta or {}).get("tenant_id") == "beta" and missing is None
    env.tenant_cache.update({f"t{i}": ((0, 0), None) for i in range(5000)})
    with env.ledger.write() as conn:
        assert tenant_doc(env, conn, "acme", db.auth_epoch(conn)) is acme  # a hit
        assert tenant_doc(env, conn, "gamma", db.auth_epoch(conn)) is None  # a miss on a full cache clears it
    assert list(env.tenant_cache) == ["gamma"]
    server.close()


def test_an_expired_idempotency_record_is_dropped_and_the_request_runs_again() -> None:
    now = [1_800_000_000_000]
    server, secret = _seeded(None, clock=lambda: now[0])
    status, first = _reserve(server, secret, "same")
    assert status == 200
    now[0] += 2 * 86_400_000  # the reserve record (TTL + grace, at least a day) has expired; so has the hold
    status, again = _reserve(server, secret, "same")
    assert status == 200 and again["reservation_id"] != first["reservation_id"]
    budget = server.get_budget("tenant:acme", USD)
    assert (budget["reserved"], budget["spent"]) == (10, 0)  # the first hold was swept, the second holds
    server.close()


def test_a_due_reservation_is_swept_by_the_next_write_before_it_is_evaluated() -> None:
    now = [1_800_000_000_000]
    server, secret = _seeded(None, clock=lambda: now[0])
    status, _ = _reserve(server, secret, "big", amount=1_000_000)
    assert status == 200
    assert _reserve(server, secret, "denied")[0] == 409  # the whole budget is held
    now[0] += 60_000 + 5_000 + 1  # past TTL + grace
    status, body = _reserve(server, secret, "after")
    assert status == 200, body
    assert server.get_budget("tenant:acme", USD)["reserved"] == 10
    server.close()


def test_commit_writes_budget_counters_and_keeps_the_budget_document() -> None:
    server, secret = _seeded(None)
    server.update_budget("tenant:acme", USD, commit_overage_policy="ALLOW_WITH_OVERDRAFT", overdraft_limit=500)
    before = server.get_budget("tenant:acme", USD)
    status, created = _reserve(server, secret, "r1", amount=100)
    assert status == 200
    status, committed = _commit(server, secret, created["reservation_id"], "c1", 60)
    assert status == 200 and committed["released"]["amount"] == 40
    after = server.get_budget("tenant:acme", USD)
    assert (after["reserved"], after["spent"], after["remaining"]) == (0, 60, 1_000_000 - 60)
    assert (after["overdraft_limit"], after["status"], after["caps"]) == (500, "ACTIVE", before["caps"])
    with server._env.ledger.read() as conn:
        stored = db.get_budget(conn, "tenant:acme", USD)
    assert stored is not None and stored.doc.get("commit_overage_policy") == "ALLOW_WITH_OVERDRAFT"
    server.close()


# --- a cached key is checked inside the write transaction ------------------------------------------------


def _key_id(server: LocalCyclesServer) -> str:
    status, _headers, raw = server.handle(
        "GET", "/v1/admin/api-keys", "tenant_id=acme", {"x-admin-api-key": server.admin_key}, b""
    )
    assert status == 200
    return str(json.loads(raw)["keys"][0]["key_id"])


def _revoke_elsewhere(path: str, admin_key: str) -> None:
    other = LocalCyclesServer(path, admin_key=admin_key)  # another process on the same file
    status, _headers, raw = other.handle(
        "DELETE", f"/v1/admin/api-keys/{_key_id(other)}", "", {"x-admin-api-key": admin_key}, b""
    )
    assert status == 200, raw
    other.close()


@pytest.mark.parametrize("operation", ["commit", "release", "extend", "decide", "event"])
def test_a_key_revoked_elsewhere_is_refused_by_every_write(tmp_path: Path, operation: str) -> None:
    path = str(tmp_path / "shared.db")
    serving, secret = _seeded(path)
    status, created = _reserve(serving, secret, "r1")  # authenticated once: now cached
    assert status == 200
    _revoke_elsewhere(path, serving.admin_key)
    rid = created["reservation_id"]
    subject = {"tenant": "acme"}
    bodies = {
        "commit": (f"/v1/reservations/{rid}/commit", {"idempotency_key": "c", "actual": {"unit": USD, "amount": 1}}),
        "release": (f"/v1/reservations/{rid}/release", {"idempotency_key": "c"}),
        "extend": (f"/v1/reservations/{rid}/extend", {"idempotency_key": "c", "extend_by_ms": 1000}),
        "decide": (
            "/v1/decide",
            {
                "idempotency_key": "c",
                "subject": subject,
                "action": {"kind": "k", "name": "n"},
                "estimate": {"unit": USD, "amount": 1},
            },
        ),
        "event": (
            "/v1/events",
            {
                "idempotency_key": "c",
                "subject": subject,
                "action": {"kind": "k", "name": "n"},
                "actual": {"unit": USD, "amount": 1},
            },
        ),
    }
    status, body = _call(serving, secret, *bodies[operation])
    assert (status, body["message"]) == (401, "KEY_REVOKED")
    assert serving.get_budget("tenant:acme", USD)["reserved"] == 10  # nothing changed
    serving.close()


def test_a_revoked_cached_key_gets_401_rather_than_a_request_error(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    serving, secret = _seeded(path)
    assert _reserve(serving, secret, "r1")[0] == 200
    _revoke_elsewhere(path, serving.admin_key)
    status, body = _call(serving, secret, "/v1/reservations", {"idempotency_key": "bad"})  # a 400 body
    assert (status, body["message"]) == (401, "KEY_REVOKED")
    status, body = _call(serving, secret, "/v1/reservations/nope/commit", {"idempotency_key": "c"})
    assert (status, body["message"]) == (401, "KEY_REVOKED")
    serving.close()


def test_a_cached_key_is_used_again_after_a_rollback_elsewhere_in_the_ledger() -> None:
    server, secret = _seeded(None)
    assert _reserve(server, secret, "r1")[0] == 200
    with pytest.raises(RuntimeError), server._env.ledger.write():
        raise RuntimeError("roll back")
    assert _reserve(server, secret, "r2")[0] == 200  # stamp stale: authenticated again, then served
    assert _reserve(server, secret, "r3")[0] == 200
    assert server.get_budget("tenant:acme", USD)["reserved"] == 30
    server.close()


def test_a_cached_reserve_reads_the_ledger_only_inside_its_transaction() -> None:
    server, secret = _seeded(None)
    assert _reserve(server, secret, "r1")[0] == 200
    statements: list[str] = []
    server._env.ledger._memory_conn.set_trace_callback(statements.append)
    assert _reserve(server, secret, "r2")[0] == 200
    server._env.ledger._memory_conn.set_trace_callback(None)
    assert statements[0] == "BEGIN IMMEDIATE" and statements[-1] == "COMMIT", statements
    assert sum("auth_epoch" in s for s in statements) == 1  # the opening statement only
    server.close()


# --- the validators' fast predicates agree with the checkers ----------------------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False),
    st.sampled_from(["", "a", "USD_MICROCENTS", "TOKENS", "REJECT", "acme", "a b", "x" * 300, "tenant"]),
    st.text(max_size=12),
)
_JSON = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "unit",
                    "amount",
                    "tenant",
                    "agent",
                    "kind",
                    "name",
                    "tags",
                    "idempotency_key",
                    "dimensions",
                    "subject",
                    "action",
                    "estimate",
                    "actual",
                    "metrics",
                    "metadata",
                    "custom",
                    "extra",
                ]
            ),
            children,
            max_size=5,
        ),
    ),
    max_leaves=12,
)
_BASES: list[tuple[Any, dict[str, Any]]] = [
    (
        RESERVATION_CREATE_REQUEST,
        {
            "idempotency_key": "k",
            "subject": {"tenant": "acme", "agent": "a0", "dimensions": {"team": "x"}},
            "action": {"kind": "llm", "name": "n", "tags": ["a"]},
            "estimate": {"unit": USD, "amount": 5},
            "ttl_ms": 60_000,
            "dry_run": False,
        },
    ),
    (COMMIT_REQUEST, {"idempotency_key": "k", "actual": {"unit": USD, "amount": 5}, "metrics": {"custom": {}}}),
    (RELEASE_REQUEST, {"idempotency_key": "k", "reason": "r"}),
    (EXTEND_REQUEST, {"idempotency_key": "k", "extend_by_ms": 1000}),
    (
        EVENT_REQUEST,
        {
            "idempotency_key": "k",
            "subject": {"workspace": "w"},
            "action": {"kind": "k", "name": "n"},
            "actual": {"unit": "TOKENS", "amount": 0},
            "metrics": {"tokens_input": 3, "model_version": "m"},
        },
    ),
]


def _passes(schema: Any, value: Any) -> bool:
    try:
        schema(value, "")
    except SchemaError:
        return False
    return True


_EDGES = st.sampled_from(
    [
        None,
        True,
        False,
        -1,
        0,
        1,
        999,
        1000,
        60_001,
        86_400_001,
        2**63 - 1,
        2**63,
        1.5,
        "",
        "a",
        "a b",
        "x" * 64,
        "x" * 65,
        "x" * 128,
        "x" * 129,
        "x" * 256,
        "x" * 257,
        USD,
        "TOKENS",
        "NOPE",
        [],
        ["a"],
        ["x" * 65],
        {},
        {"k": 1},
    ]
)


def _paths(value: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [(*prefix, "unknown")]
    for key, item in value.items():
        out.append((*prefix, key))
        if isinstance(item, dict):
            out.extend(_paths(item, (*prefix, key)))
    return out


@settings(max_examples=600, deadline=None)
@given(data=st.data(), base=st.sampled_from(range(len(_BASES))), drop=st.booleans())
def test_fast_predicates_accept_exactly_what_the_checkers_accept(data: Any, base: int, drop: bool) -> None:
    schema, valid = _BASES[base]
    assert accepts(schema)(valid) and _passes(schema, valid)
    body = json.loads(json.dumps(valid))
    for _ in range(data.draw(st.integers(min_value=1, max_value=2))):
        *parents, key = data.draw(st.sampled_from(_paths(body)))
        target = body
        for parent in parents:
            target = target[parent]
        if drop:
            target.pop(key, None)
        else:
            # A copy: `_EDGES` holds shared lists and dicts, and a later step may mutate inside what it put here
            # (a mutated shared value would change what later examples generate).
            target[key] = copy.deepcopy(data.draw(st.one_of(_EDGES, _JSON)))
    assert accepts(schema)(body) == _passes(schema, body), body
