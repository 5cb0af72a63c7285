"""Bounded input: the body limit (413), malformed JSON and values (400, never 500), signed cursors, admin
date-time limits, int64 overflow on funding, and the conformance nits (405 Allow, BudgetLedger fields,
``revoked_reason`` length). In process and over real HTTP."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest
from local_support import USD, World, error_of

from runcycles.local import LocalCyclesServer


def _post_raw(world: World, path: str, raw: bytes) -> Any:
    return world.http.post(path, content=raw, headers={"content-type": "application/json"})


def test_body_over_the_limit_is_413(world: World) -> None:
    body = world.reserve_body(metadata={"blob": "x" * (1024 * 1024)})
    response = world.http.post("/v1/reservations", json=body)
    assert response.status_code == 413 and error_of(response) == "INVALID_REQUEST"
    assert "1048576" in response.json()["message"]
    assert world.budget()["reserved"] == 0
    just_under = world.reserve_body(metadata={"blob": "x" * 1000_000})
    assert world.http.post("/v1/reservations", json=just_under).status_code == 200


def test_body_limit_is_configurable() -> None:
    with LocalCyclesServer(max_body_bytes=100) as server:
        status, _headers, body = server.handle("POST", "/v1/decide", "", {}, b"{" + b" " * 100 + b"}")
        assert status == 413 and json.loads(body)["error"] == "INVALID_REQUEST"
    with pytest.raises(ValueError, match="max_body_bytes"):
        LocalCyclesServer(max_body_bytes=0)


NESTED = b'{"a":' * 5000 + b"1" + b"}" * 5000


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("nested-5000", lambda body: NESTED),
        ("nested-in-metadata", lambda body: _splice(body, "metadata", b"[" * 100 + b"]" * 100)),
        ("int-5000-digits", lambda body: _splice(body, "metadata", b'{"n":' + b"9" * 5000 + b"}")),
        ("int-5000-digits-amount", lambda body: body.replace(b'"amount":100', b'"amount":' + b"1" * 5000)),
        ("lone-surrogate-value", lambda body: _splice(body, "metadata", b'{"s":"\\ud800"}')),
        ("lone-surrogate-key", lambda body: _splice(body, "metadata", b'{"\\udfff":1}')),
        ("lone-surrogate-idempotency", lambda body: body.replace(b'"r-', b'"\\ud800r-')),
        ("inf-in-metadata", lambda body: _splice(body, "metadata", b'{"x":1e999}')),
        ("neg-inf-in-metadata", lambda body: _splice(body, "metadata", b'{"x":-1e999}')),
        ("nan-in-metadata", lambda body: _splice(body, "metadata", b'{"x":NaN}')),
        ("invalid-utf8", lambda body: _splice(body, "metadata", b'{"x":"\xff"}')),
    ],
)
def test_malformed_input_is_400_not_500(world: World, name: str, make: Any, caplog: pytest.LogCaptureFixture) -> None:
    raw = make(json.dumps(world.reserve_body(100)).replace(" ", "").encode())
    with caplog.at_level(logging.INFO, logger="runcycles.local"):
        for path in ("/v1/reservations", "/v1/decide"):
            response = _post_raw(world, path, raw)
            assert response.status_code == 400, (name, response.text)
            assert error_of(response) == "INVALID_REQUEST"
    assert world.budget()["reserved"] == 0
    assert not caplog.records


def _splice(body: bytes, field: str, value: bytes) -> bytes:
    return body[:-1] + b',"' + field.encode() + b'":' + value + b"}"


def test_admin_bodies_are_hardened_too(world: World) -> None:
    raw = b'{"tenant_id":"acme","name":"k","metadata":{"x":1e999}}'
    response = world.admin.post("/v1/admin/api-keys", content=raw)
    assert response.status_code == 400
    response = world.admin.post("/v1/admin/tenants", content=NESTED)
    assert response.status_code == 400


def test_stored_metadata_never_comes_back_as_infinity(world: World) -> None:
    rid = world.reserve_id(10, metadata={"x": 1.5e300})
    detail = world.http.get(f"/v1/reservations/{rid}")
    assert detail.json()["metadata"] == {"x": 1.5e300}
    assert b"Infinity" not in detail.content


def test_credit_past_int64_is_400_and_changes_nothing(world: World) -> None:
    near = 2**63 - 10
    world.server.fund_budget("tenant:acme", USD, "RESET", near)
    response = world.http.post(
        "/v1/admin/budgets/fund",
        params={"scope": "tenant:acme", "unit": USD},
        json={"operation": "CREDIT", "amount": {"unit": USD, "amount": 100}},
    )
    assert response.status_code == 400 and error_of(response) == "INVALID_REQUEST"
    assert "allocated" in response.json()["message"]
    assert world.budget()["allocated"] == near
    ok = world.http.post(
        "/v1/admin/budgets/fund",
        params={"scope": "tenant:acme", "unit": USD},
        json={"operation": "CREDIT", "amount": {"unit": USD, "amount": 9}},
    )
    assert ok.status_code == 200 and ok.json()["new_allocated"]["amount"] == 2**63 - 1


def _forge(cursor: str, **changes: Any) -> str:
    payload = cursor.split(".")[0]
    value = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    value.update(changes)
    forged = base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")
    return forged + "." + cursor.split(".")[1] if "." in cursor else forged


@pytest.mark.parametrize(
    "changes",
    [{"o": 1}, {"o": "x"}, {"o": 10**30}, {"o": -5}, {"v": [1, 2]}, {"v": {"a": 1}}, {"id": None}, {"h": "0" * 16}],
)
def test_forged_cursors_are_400(world: World, changes: dict[str, Any]) -> None:
    for _ in range(3):
        world.reserve_id(1)
    for path, params in (
        ("/v1/reservations", {"limit": "1"}),
        ("/v1/balances", {"tenant": "acme", "limit": "1"}),
    ):
        world.server.create_budget(f"tenant:acme/workspace:{world.key_('w')}", USD, 1)
        first = world.http.get(path, params=params)
        cursor = first.json()["next_cursor"]
        assert world.http.get(path, params={**params, "cursor": cursor}).status_code == 200
        forged = world.http.get(path, params={**params, "cursor": _forge(cursor, **changes)})
        assert forged.status_code == 400 and error_of(forged) == "INVALID_REQUEST", forged.text
        unsigned = world.http.get(path, params={**params, "cursor": cursor.split(".")[0]})
        assert unsigned.status_code == 400


def test_admin_list_cursors_are_signed(world: World) -> None:
    for i in range(3):
        world.server.create_tenant(f"tenant-{i}")
    first = world.admin.get("/v1/admin/tenants", params={"limit": "1"}).json()
    forged = world.admin.get("/v1/admin/tenants", params={"limit": "1", "cursor": _forge(first["next_cursor"], o=2)})
    assert forged.status_code == 400


def test_cursors_do_not_verify_on_another_database(tmp_path: Any) -> None:
    cursors = []
    for name in ("a.db", "b.db"):
        with LocalCyclesServer(tmp_path / name, admin_key="k") as server:
            for i in range(3):
                server.create_tenant(f"tenant-{i}")
            status, _h, body = server.handle("GET", "/v1/admin/tenants", "limit=1", {"X-Admin-API-Key": "k"}, b"")
            cursors.append(json.loads(body)["next_cursor"])
    assert cursors[0] != cursors[1]
    with LocalCyclesServer(tmp_path / "a.db", admin_key="k") as again:  # the secret persists with the file
        auth = {"X-Admin-API-Key": "k"}
        ok = again.handle("GET", "/v1/admin/tenants", f"limit=1&cursor={cursors[0]}", auth, b"")
        foreign = again.handle("GET", "/v1/admin/tenants", f"limit=1&cursor={cursors[1]}", auth, b"")
    assert ok[0] == 200 and foreign[0] == 400


@pytest.mark.parametrize(
    ("expires_at", "status"),
    [
        ("9999-12-31T23:59:59Z", 201),
        ("9999-12-31T23:59:59.999999-23:59", 400),
        ("0001-01-01T00:00:00+23:59", 400),
        ("0001-01-01T00:00:00Z", 400),
        ("1969-12-31T23:59:59Z", 400),
        ("99999-01-01T00:00:00Z", 400),
        ("2030-02-30T00:00:00Z", 400),
        ("not a date", 400),
    ],
)
def test_api_key_expires_at_limits(world: World, expires_at: str, status: int) -> None:
    body = {"tenant_id": "acme", "name": "k", "expires_at": expires_at}
    response = world.admin.post("/v1/admin/api-keys", json=body)
    assert response.status_code == status, response.text
    if status == 201:
        assert response.json()["expires_at"].startswith("9999-12-31T23:59:59")


def test_reservation_list_windows_at_datetime_limits(world: World) -> None:
    for value in ("0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59"):
        response = world.http.get("/v1/reservations", params={"from": value})
        assert response.status_code == 400, response.text


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/v1/reservations/abc", "GET"),
        ("GET", "/v1/reservations/abc/commit", "POST"),
        ("PUT", "/v1/reservations", "GET, POST"),
        ("POST", "/v1/admin/tenants/acme", "GET, PATCH"),
        ("GET", "/v1/admin/budgets/fund", "POST"),
        ("POST", "/v1/admin/api-keys/key_1", "DELETE, PATCH"),
    ],
)
def test_405_allow_lists_the_matched_route_only(world: World, method: str, path: str, allow: str) -> None:
    response = world.admin.request(method, path)
    assert response.status_code == 405 and response.headers["allow"] == allow


# BudgetLedger properties in the admin spec (additionalProperties: false).
LEDGER_FIELDS = {
    "ledger_id", "tenant_id", "scope", "scope_path", "unit", "allocated", "remaining", "reserved", "spent", "debt",
    "overdraft_limit", "is_over_limit", "commit_overage_policy", "status", "rollover_policy", "period_start",
    "period_end", "created_at", "updated_at",
}  # fmt: skip


def test_budget_ledger_carries_only_its_schema_fields(world: World) -> None:
    created = world.admin.post(
        "/v1/admin/budgets",
        json={
            "tenant_id": "acme",
            "scope": "tenant:acme/app:x",
            "unit": USD,
            "allocated": {"unit": USD, "amount": 5},
            "metadata": {"team": "a"},
            "caps": {"max_tokens": 7},
        },
    )
    assert created.status_code == 201
    views = [
        created.json(),
        world.admin.get("/v1/admin/budgets/lookup", params={"scope": "tenant:acme/app:x", "unit": USD}).json(),
        *world.admin.get("/v1/admin/budgets", params={"tenant_id": "acme"}).json()["ledgers"],
        world.admin.patch(
            "/v1/admin/budgets", params={"scope": "tenant:acme/app:x", "unit": USD}, json={"metadata": {"b": "c"}}
        ).json(),
    ]
    for view in views:
        assert set(view) <= LEDGER_FIELDS, set(view) - LEDGER_FIELDS
    assert world.server.get_budget("tenant:acme/app:x", USD)["caps"] == {"max_tokens": 7}  # still applied


def test_overlong_revoked_reason_is_rejected(world: World) -> None:
    key_id = world.admin.get("/v1/admin/api-keys", params={"tenant_id": "acme"}).json()["keys"][0]["key_id"]
    too_long = world.admin.delete(f"/v1/admin/api-keys/{key_id}", params={"reason": "r" * 513})
    assert too_long.status_code == 400 and "reason" in too_long.json()["message"]
    assert world.http.get("/v1/balances", params={"tenant": "acme"}).status_code == 200  # not revoked
    revoked = world.admin.delete(f"/v1/admin/api-keys/{key_id}", params={"reason": "r" * 512})
    assert revoked.status_code == 200 and revoked.json()["revoked_reason"] == "r" * 512


def test_an_internal_error_logs_one_line(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from runcycles.local import _runtime_reads as _runtime

    def boom(*_args: object) -> None:
        raise RuntimeError("line one\nline two")

    monkeypatch.setattr(_runtime.db, "tenant_budgets", boom)
    with caplog.at_level(logging.INFO, logger="runcycles.local"):
        response = world.http.get("/v1/balances", params={"tenant": "acme"})
    assert response.status_code == 500
    records = [r for r in caplog.records if r.name == "runcycles.local"]
    assert len(records) == 1 and "\n" not in records[0].getMessage() and records[0].exc_info is None
