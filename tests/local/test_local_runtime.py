"""Runtime-plane semantics of the embedded server, each test run in process and over real HTTP."""

from __future__ import annotations

import pytest
from local_support import USD, World, error_of

# --- reserve ---------------------------------------------------------------------------------------------


def test_live_reserve_holds_budget_and_reports_scopes(world: World) -> None:
    world.server.create_budget("tenant:acme/workspace:prod", USD, 5_000)
    body = world.reserve_body(300, subject={"tenant": "acme", "workspace": "Prod", "agent": "bot"}, ttl_ms=20_000)
    response = world.http.post("/v1/reservations", json=body)
    assert response.status_code == 200
    data = response.json()
    assert data["decision"] == "ALLOW"
    assert data["reserved"] == {"unit": USD, "amount": 300}
    assert data["affected_scopes"] == [
        "tenant:acme",
        "tenant:acme/workspace:prod",
        "tenant:acme/workspace:prod/agent:bot",
    ]
    assert data["scope_path"] == "tenant:acme/workspace:prod/agent:bot"
    assert data["expires_at_ms"] == world.clock.now + 20_000
    assert data["remaining_ttl_ms"] == 20_000
    assert "caps" not in data
    assert [b["scope_path"] for b in data["balances"]] == ["tenant:acme", "tenant:acme/workspace:prod"]
    assert data["balances"][1]["remaining"]["amount"] == 4_700
    assert world.budget()["reserved"] == 300
    assert world.budget("tenant:acme/workspace:prod")["remaining"] == 4_700
    assert response.headers["x-cycles-tenant"] == "acme"


def test_reserve_over_remaining_is_409_budget_exceeded_and_holds_nothing(world: World) -> None:
    response = world.reserve(1_000_001)
    assert response.status_code == 409
    assert error_of(response) == "BUDGET_EXCEEDED"
    assert world.budget()["reserved"] == 0


def test_reserve_is_atomic_across_scopes(world: World) -> None:
    world.server.create_budget("tenant:acme/app:small", USD, 50)
    response = world.reserve(100, subject={"tenant": "acme", "app": "small"})
    assert error_of(response) == "BUDGET_EXCEEDED"
    assert "tenant:acme/app:small" in response.json()["message"]
    assert world.budget()["reserved"] == 0  # the parent scope was not charged either


def test_dry_run_evaluates_without_mutating(world: World) -> None:
    response = world.reserve(200, dry_run=True)
    data = response.json()
    assert response.status_code == 200
    assert data["decision"] == "ALLOW"
    assert "reservation_id" not in data and "expires_at_ms" not in data and "remaining_ttl_ms" not in data
    assert data["affected_scopes"] == ["tenant:acme"]
    assert world.budget()["reserved"] == 0
    denied = world.reserve(2_000_000, dry_run=True).json()
    assert denied["decision"] == "DENY"
    assert denied["reason_code"] == "BUDGET_EXCEEDED"
    assert "remaining_ttl_ms" not in denied


def test_dry_run_without_budget_denies_budget_not_found(world: World) -> None:
    data = world.reserve(1, subject={"workspace": "nobudget"}, dry_run=True).json()
    assert data["decision"] == "DENY"
    assert data["reason_code"] == "BUDGET_NOT_FOUND"


def test_caps_of_the_deepest_budgeted_scope_give_allow_with_caps(world: World) -> None:
    caps = {"max_tokens": 512, "tool_denylist": ["shell"]}
    world.server.create_budget("tenant:acme/agent:capped", USD, 10_000, caps=caps)
    data = world.reserve(10, subject={"tenant": "acme", "agent": "capped"}).json()
    assert data["decision"] == "ALLOW_WITH_CAPS"
    assert data["caps"] == caps
    assert data["reservation_id"]
    dry = world.reserve(10, subject={"tenant": "acme", "agent": "capped"}, dry_run=True).json()
    assert dry["decision"] == "ALLOW_WITH_CAPS" and dry["caps"] == caps
    plain = world.reserve(10).json()  # tenant scope has no caps
    assert plain["decision"] == "ALLOW" and "caps" not in plain


def test_ttl_defaults_and_cap_come_from_the_tenant(world: World) -> None:
    world.server.update_tenant("acme", default_reservation_ttl_ms=15_000, max_reservation_ttl_ms=30_000)
    assert world.reserve(1).json()["remaining_ttl_ms"] == 15_000
    capped = world.reserve(1, ttl_ms=600_000).json()
    assert capped["remaining_ttl_ms"] == 30_000
    assert capped["expires_at_ms"] == world.clock.now + 30_000


def test_reserve_without_any_budget_is_404(world: World) -> None:
    response = world.reserve(1, subject={"workspace": "nobudget"})
    assert response.status_code == 404
    assert error_of(response) == "NOT_FOUND"
    assert "Budget not found" in response.json()["message"]


def test_unit_mismatch_on_reserve_carries_details(world: World) -> None:
    response = world.reserve(5, unit="TOKENS")
    assert response.status_code == 400
    assert error_of(response) == "UNIT_MISMATCH"
    assert response.json()["details"] == {
        "scope": "tenant:acme",
        "requested_unit": "TOKENS",
        "expected_units": [USD],
    }
    dry = world.reserve(5, unit="TOKENS", dry_run=True)
    assert dry.status_code == 400 and error_of(dry) == "UNIT_MISMATCH"


def test_frozen_budget_rejects_reserve_and_events(world: World) -> None:
    world.server.freeze_budget("tenant:acme", USD)
    assert error_of(world.reserve(1)) == "BUDGET_FROZEN"
    assert world.reserve(1).status_code == 409
    assert world.reserve(1, dry_run=True).json()["reason_code"] == "BUDGET_FROZEN"
    assert world.decide(1).json()["reason_code"] == "BUDGET_FROZEN"
    assert error_of(world.event(1)) == "BUDGET_FROZEN"
    world.server.unfreeze_budget("tenant:acme", USD)
    assert world.reserve(1).status_code == 200


def test_closed_budget_is_409_budget_closed(world: World) -> None:
    world.server.close_budget("tenant:acme", USD)
    response = world.reserve(1)
    assert response.status_code == 409
    assert error_of(response) == "BUDGET_CLOSED"
    assert world.decide(1).json()["reason_code"] == "BUDGET_CLOSED"


# --- commit ----------------------------------------------------------------------------------------------


def test_commit_below_estimate_releases_the_remainder(world: World) -> None:
    rid = world.reserve_id(500)
    response = world.commit(rid, 200, metadata={"run": "x"}, metrics={"tokens_input": 3, "latency_ms": 9})
    data = response.json()
    assert response.status_code == 200
    assert data == {
        **data,
        "status": "COMMITTED",
        "charged": {"unit": USD, "amount": 200},
        "released": {"unit": USD, "amount": 300},
    }
    budget = world.budget()
    assert (budget["spent"], budget["reserved"], budget["remaining"]) == (200, 0, 999_800)
    detail = world.http.get(f"/v1/reservations/{rid}").json()
    assert detail["status"] == "COMMITTED"
    assert detail["committed"] == {"unit": USD, "amount": 200}
    assert detail["committed_metadata"] == {"run": "x"}
    assert detail["finalized_at_ms"] == world.clock.now


def test_commit_equal_to_estimate_has_no_released(world: World) -> None:
    data = world.commit(world.reserve_id(100), 100).json()
    assert data["charged"]["amount"] == 100 and "released" not in data


def test_commit_over_estimate_under_reject_is_409_and_reservation_stays_active(world: World) -> None:
    rid = world.reserve_id(100, overage_policy="REJECT")
    response = world.commit(rid, 150)
    assert response.status_code == 409 and error_of(response) == "BUDGET_EXCEEDED"
    assert world.http.get(f"/v1/reservations/{rid}").json()["status"] == "ACTIVE"
    assert world.budget()["reserved"] == 100
    assert world.commit(rid, 90).status_code == 200


def test_allow_if_available_overage_is_capped_and_marks_over_limit(world: World) -> None:
    world.server.create_budget("tenant:acme/agent:tight", USD, 150)
    rid = world.reserve_id(100, subject={"tenant": "acme", "agent": "tight"})
    data = world.commit(rid, 400).json()
    assert data["charged"] == {"unit": USD, "amount": 150}  # 100 + the 50 the tight scope still had
    tight = world.budget("tenant:acme/agent:tight")
    assert (tight["spent"], tight["remaining"], tight["debt"], tight["is_over_limit"]) == (150, 0, 0, True)
    parent = world.budget()
    assert parent["spent"] == 150 and parent["is_over_limit"] is False
    blocked = world.reserve(1, subject={"tenant": "acme", "agent": "tight"})
    assert blocked.status_code == 409 and error_of(blocked) == "OVERDRAFT_LIMIT_EXCEEDED"
    world.server.fund_budget("tenant:acme/agent:tight", USD, "CREDIT", 100)
    assert world.reserve(1, subject={"tenant": "acme", "agent": "tight"}).status_code == 200


def test_overdraft_commit_creates_debt_within_the_limit(world: World) -> None:
    world.server.create_budget("tenant:acme/agent:od", USD, 100, overdraft_limit=300)
    subject = {"tenant": "acme", "agent": "od"}
    first = world.reserve_id(50, subject=subject, overage_policy="ALLOW_WITH_OVERDRAFT")
    second = world.reserve_id(50, subject=subject, overage_policy="ALLOW_WITH_OVERDRAFT")
    data = world.commit(first, 350).json()
    assert data["charged"] == {"unit": USD, "amount": 350}
    od = world.budget("tenant:acme/agent:od")
    assert (od["spent"], od["reserved"], od["debt"], od["remaining"]) == (50, 50, 300, -300)
    assert od["is_over_limit"] is False
    assert world.budget()["spent"] == 350  # the parent could cover the overage
    balance = next(b for b in data["balances"] if b["scope_path"] == "tenant:acme/agent:od")
    assert balance["debt"]["amount"] == 300 and balance["remaining"]["amount"] == -300
    over = world.commit(second, 60)  # 300 + 10 > 300
    assert over.status_code == 409 and error_of(over) == "OVERDRAFT_LIMIT_EXCEEDED"
    assert world.budget("tenant:acme/agent:od")["debt"] == 300
    assert world.commit(second, 50).status_code == 200


def test_debt_with_zero_overdraft_limit_blocks_reserves_until_repaid(world: World) -> None:
    world.server.create_budget("tenant:acme/agent:od", USD, 100, overdraft_limit=1_000)
    subject = {"tenant": "acme", "agent": "od"}
    rid = world.reserve_id(100, subject=subject, overage_policy="ALLOW_WITH_OVERDRAFT")
    world.commit(rid, 300)
    world.server.update_budget("tenant:acme/agent:od", USD, overdraft_limit=0)
    blocked = world.reserve(0, subject=subject)
    assert blocked.status_code == 409 and error_of(blocked) == "DEBT_OUTSTANDING"
    assert world.decide(0, subject=subject).json()["reason_code"] == "DEBT_OUTSTANDING"
    world.server.fund_budget("tenant:acme/agent:od", USD, "REPAY_DEBT", 200)
    assert world.budget("tenant:acme/agent:od")["debt"] == 0
    assert world.reserve(0, subject=subject).status_code == 200


def test_commit_unit_mismatch_and_unknown_reservation(world: World) -> None:
    rid = world.reserve_id(10)
    response = world.commit(rid, 10, unit="TOKENS")
    assert response.status_code == 400 and error_of(response) == "UNIT_MISMATCH"
    missing = world.commit("no-such-reservation", 1)
    assert missing.status_code == 404 and error_of(missing) == "NOT_FOUND"


def test_finalized_reservation_rejects_further_settlement(world: World) -> None:
    rid = world.reserve_id(10)
    assert world.commit(rid, 10).status_code == 200
    for response in (world.commit(rid, 10), world.release(rid), world.extend(rid)):
        assert response.status_code == 409 and error_of(response) == "RESERVATION_FINALIZED"


# --- release / extend ------------------------------------------------------------------------------------


def test_release_returns_the_whole_hold(world: World) -> None:
    rid = world.reserve_id(250)
    data = world.release(rid).json()
    assert data["status"] == "RELEASED" and data["released"] == {"unit": USD, "amount": 250}
    assert world.budget()["reserved"] == 0 and world.budget()["remaining"] == 1_000_000
    assert world.http.get(f"/v1/reservations/{rid}").json()["status"] == "RELEASED"


def test_admin_key_may_release_and_read_any_tenants_reservation(world: World) -> None:
    rid = world.reserve_id(50)
    assert world.admin.get(f"/v1/reservations/{rid}").json()["reservation_id"] == rid
    listing = world.admin.get("/v1/reservations")
    assert listing.status_code == 400 and "tenant query parameter is required" in listing.json()["message"]
    assert len(world.admin.get("/v1/reservations", params={"tenant": "acme"}).json()["reservations"]) == 1
    assert world.release(rid, client=world.admin).status_code == 200
    denied = world.commit(world.reserve_id(1), 1, client=world.admin)  # commit is API-key only
    assert denied.status_code == 401


def test_extend_is_relative_to_current_expiry(world: World) -> None:
    created = world.reserve(1, ttl_ms=10_000).json()
    world.clock.advance(4_000)
    data = world.extend(created["reservation_id"], by=10_000).json()
    assert data["status"] == "ACTIVE"
    assert data["expires_at_ms"] == created["expires_at_ms"] + 10_000
    assert data["remaining_ttl_ms"] == data["expires_at_ms"] - world.clock.now == 16_000
    detail = world.http.get(f"/v1/reservations/{created['reservation_id']}").json()
    assert detail["expires_at_ms"] == data["expires_at_ms"]


def test_extensions_are_limited_by_the_tenant(world: World) -> None:
    world.server.update_tenant("acme", max_reservation_extensions=2)
    rid = world.reserve_id(1)
    assert world.extend(rid).status_code == 200
    assert world.extend(rid).status_code == 200
    third = world.extend(rid)
    assert third.status_code == 409 and error_of(third) == "MAX_EXTENSIONS_EXCEEDED"


# --- decide / events -------------------------------------------------------------------------------------


def test_decide_never_mutates_and_denies_with_200(world: World) -> None:
    allow = world.decide(100)
    assert allow.status_code == 200 and allow.json() == {
        "decision": "ALLOW",
        "affected_scopes": ["tenant:acme"],
    }
    deny = world.decide(5_000_000).json()
    assert deny["decision"] == "DENY" and deny["reason_code"] == "BUDGET_EXCEEDED"
    assert world.budget()["reserved"] == 0 and world.budget()["spent"] == 0


def test_event_charges_directly_with_201(world: World) -> None:
    response = world.event(700, metrics={"tokens_output": 5}, client_time_ms=1)
    assert response.status_code == 201
    data = response.json()
    assert data["status"] == "APPLIED" and data["event_id"]
    assert data["charged"] == {"unit": USD, "amount": 700}
    assert world.budget()["spent"] == 700


def test_event_policies(world: World) -> None:
    world.server.create_budget("tenant:acme/agent:ev", USD, 100, overdraft_limit=300)
    subject = {"tenant": "acme", "agent": "ev"}
    rejected = world.event(150, subject=subject, overage_policy="REJECT")
    assert rejected.status_code == 409 and error_of(rejected) == "BUDGET_EXCEEDED"
    capped = world.event(150, subject=subject).json()  # ALLOW_IF_AVAILABLE by default
    assert capped["charged"]["amount"] == 100
    assert world.budget("tenant:acme/agent:ev")["is_over_limit"] is True
    od = world.event(200, subject=subject, overage_policy="ALLOW_WITH_OVERDRAFT")
    assert od.status_code == 201 and od.json()["charged"]["amount"] == 200
    assert world.budget("tenant:acme/agent:ev")["debt"] == 200
    too_much = world.event(200, subject=subject, overage_policy="ALLOW_WITH_OVERDRAFT")
    assert too_much.status_code == 409 and error_of(too_much) == "OVERDRAFT_LIMIT_EXCEEDED"


def test_event_errors(world: World) -> None:
    assert world.event(1, subject={"workspace": "none"}).status_code == 404
    mismatch = world.event(1, unit="TOKENS")
    assert mismatch.status_code == 400 and error_of(mismatch) == "UNIT_MISMATCH"
    other = world.event(1, subject={"tenant": "beta"})
    assert other.status_code == 403 and error_of(other) == "FORBIDDEN"


# --- reads -----------------------------------------------------------------------------------------------


def test_list_filters_sorting_and_cursor_pagination(world: World) -> None:
    ids = [world.reserve_id(amount) for amount in (5, 1, 4, 2, 3)]
    world.reserve_id(9, subject={"tenant": "acme", "workspace": "other"})
    world.commit(ids[0], 5)
    seen: list[int] = []
    params: dict[str, str] = {"sort_by": "reserved", "sort_dir": "asc", "limit": "2", "status": "ACTIVE"}
    while True:
        page = world.http.get("/v1/reservations", params=params).json()
        seen.extend(row["reserved"]["amount"] for row in page["reservations"])
        if not page["has_more"]:
            assert "next_cursor" not in page
            break
        params["cursor"] = page["next_cursor"]
    assert seen == [1, 2, 3, 4, 9]
    rebound = world.http.get("/v1/reservations", params={**params, "status": "COMMITTED"})
    assert rebound.status_code == 400 and error_of(rebound) == "INVALID_REQUEST"
    committed = world.http.get("/v1/reservations", params={"status": "COMMITTED"}).json()["reservations"]
    assert [r["reservation_id"] for r in committed] == [ids[0]]
    assert committed[0]["committed"]["amount"] == 5
    other = world.http.get("/v1/reservations", params={"workspace": "OTHER"}).json()["reservations"]
    assert [r["reserved"]["amount"] for r in other] == [9]


def test_list_by_idempotency_key_and_include(world: World) -> None:
    body = world.reserve_body(3, metadata={"purpose": "recovery"})
    rid = world.http.post("/v1/reservations", json=body).json()["reservation_id"]
    rows = world.http.get("/v1/reservations", params={"idempotency_key": body["idempotency_key"]}).json()
    assert [r["reservation_id"] for r in rows["reservations"]] == [rid]
    assert "metadata" not in rows["reservations"][0]
    projected = world.http.get("/v1/reservations", params={"include": " metadata,bogus,"}).json()
    assert projected["reservations"][0]["metadata"] == {"purpose": "recovery"}


def test_list_windows_and_validation(world: World) -> None:
    world.reserve_id(1)
    ok = world.http.get("/v1/reservations", params={"from": "2000-01-01T00:00:00Z", "to": "", "finalized_to": ""})
    assert ok.status_code == 200 and len(ok.json()["reservations"]) == 1
    finalized = world.http.get("/v1/reservations", params={"finalized_from": "2000-01-01T00:00:00Z"})
    assert finalized.json()["reservations"] == []  # ACTIVE rows have no finalized_at_ms
    for params in (
        {"from": "2030-01-02T00:00:00Z", "to": "2030-01-01T00:00:00Z"},
        {"status": "BOGUS"},
        {"limit": "0"},
        {"limit": "201"},
        {"cursor": "!!!"},
        {"from": "yesterday"},
    ):
        response = world.http.get("/v1/reservations", params=params)
        assert response.status_code == 400, params


def test_balances_match_the_scope_and_its_descendants(world: World) -> None:
    world.server.create_budget("tenant:acme/workspace:prod", USD, 10)
    world.server.create_budget("tenant:acme/workspace:prod/agent:a1", USD, 20)
    world.server.create_budget("tenant:acme/workspace:dev", USD, 30)
    everything = world.http.get("/v1/balances", params={"tenant": "acme"}).json()["balances"]
    assert len(everything) == 4
    prod = world.http.get("/v1/balances", params={"workspace": "prod"}).json()["balances"]
    assert [(b["scope"], b["scope_path"]) for b in prod] == [
        ("workspace:prod", "tenant:acme/workspace:prod"),
        ("agent:a1", "tenant:acme/workspace:prod/agent:a1"),
    ]
    first = world.http.get("/v1/balances", params={"tenant": "acme", "limit": "3"}).json()
    assert first["has_more"] is True and len(first["balances"]) == 3
    rest = world.http.get("/v1/balances", params={"tenant": "acme", "limit": "3", "cursor": first["next_cursor"]})
    assert len(rest.json()["balances"]) == 1 and rest.json()["has_more"] is False
    missing = world.http.get("/v1/balances")
    assert missing.status_code == 400 and error_of(missing) == "INVALID_REQUEST"
    other = world.http.get("/v1/balances", params={"tenant": "beta"})
    assert other.status_code == 403 and error_of(other) == "FORBIDDEN"


# --- idempotency -----------------------------------------------------------------------------------------


def test_reserve_replay_returns_stored_response_with_fresh_ttl(world: World) -> None:
    body = world.reserve_body(100)
    first = world.http.post("/v1/reservations", json=body).json()
    world.clock.advance(1_500)
    body_with_default = {**body, "grace_period_ms": 5_000}  # defaults-filled payloads compare equal
    second = world.http.post("/v1/reservations", json=body_with_default).json()
    assert second["reservation_id"] == first["reservation_id"]
    assert second["remaining_ttl_ms"] == first["remaining_ttl_ms"] - 1_500
    assert {k: v for k, v in second.items() if k != "remaining_ttl_ms"} == {
        k: v for k, v in first.items() if k != "remaining_ttl_ms"
    }
    assert world.budget()["reserved"] == 100  # charged once
    mismatch = world.http.post("/v1/reservations", json={**body, "estimate": {"unit": USD, "amount": 101}})
    assert mismatch.status_code == 409 and error_of(mismatch) == "IDEMPOTENCY_MISMATCH"


def test_commit_replay_is_idempotent_and_mismatch_is_409(world: World) -> None:
    rid = world.reserve_id(100)
    body = {"idempotency_key": "commit-1", "actual": {"unit": USD, "amount": 60}}
    first = world.http.post(f"/v1/reservations/{rid}/commit", json=body)
    again = world.http.post(f"/v1/reservations/{rid}/commit", json=body)
    assert again.status_code == 200 and again.content == first.content
    assert world.budget()["spent"] == 60
    changed = world.http.post(f"/v1/reservations/{rid}/commit", json={**body, "actual": {"unit": USD, "amount": 61}})
    assert changed.status_code == 409 and error_of(changed) == "IDEMPOTENCY_MISMATCH"


@pytest.mark.parametrize("endpoint", ["decide", "events", "release", "extend"])
def test_idempotency_mismatch_on_every_endpoint(world: World, endpoint: str) -> None:
    rid = world.reserve_id(10)
    event = {k: v for k, v in world.reserve_body(1).items() if k != "estimate"}
    bodies = {
        "decide": ("/v1/decide", world.reserve_body(1), {"estimate": {"unit": USD, "amount": 2}}),
        "events": ("/v1/events", {**event, "actual": {"unit": USD, "amount": 1}}, {"metadata": {"a": 1}}),
        "release": (f"/v1/reservations/{rid}/release", {"idempotency_key": "rel"}, {"reason": "other"}),
        "extend": (
            f"/v1/reservations/{rid}/extend",
            {"idempotency_key": "ext", "extend_by_ms": 5},
            {"extend_by_ms": 6},
        ),
    }
    path, body, change = bodies[endpoint]
    first = world.http.post(path, json=body)
    assert first.status_code in (200, 201), first.text
    replay = world.http.post(path, json=body)
    assert replay.status_code == first.status_code
    assert replay.json() == first.json()  # the fake clock did not move, so even remaining_ttl_ms is equal
    response = world.http.post(path, json={**body, **change})
    assert response.status_code == 409 and error_of(response) == "IDEMPOTENCY_MISMATCH"


def test_idempotency_keys_are_scoped_by_tenant_and_endpoint(world: World) -> None:
    body = world.reserve_body(10)
    mine = world.http.post("/v1/reservations", json=body).json()
    theirs = world.beta.post("/v1/reservations", json={**body, "subject": {"tenant": "beta"}}).json()
    assert mine["reservation_id"] != theirs["reservation_id"]
    rid = mine["reservation_id"]
    shared_key = {"idempotency_key": "same", "actual": {"unit": USD, "amount": 10}}
    assert world.http.post(f"/v1/reservations/{rid}/commit", json=shared_key).status_code == 200
    event = {**shared_key, "subject": {"tenant": "acme"}, "action": {"kind": "a", "name": "b"}}
    assert world.http.post("/v1/events", json=event).status_code == 201


def test_header_idempotency_key_must_match_body(world: World) -> None:
    body = world.reserve_body(1)
    ok = world.http.post("/v1/reservations", json=body, headers={"X-Idempotency-Key": body["idempotency_key"]})
    assert ok.status_code == 200
    bad = world.http.post("/v1/reservations", json=world.reserve_body(1), headers={"X-Idempotency-Key": "other"})
    assert bad.status_code == 400 and error_of(bad) == "INVALID_REQUEST"


# --- validation, auth, tenancy, headers ------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"unexpected": 1},
        {"subject": {"dimensions": {"a": "b"}}},
        {"subject": {"tenant": "a" * 129}},
        {"subject": {"tenant": "bad/value"}},
        {"ttl_ms": 999},
        {"ttl_ms": 1_000.0},
        {"grace_period_ms": 60_001},
        {"overage_policy": "SOMETIMES"},
        {"dry_run": "yes"},
        {"estimate": {"unit": USD, "amount": -1}},
        {"estimate": {"unit": USD, "amount": True}},
        {"estimate": {"unit": "EUR", "amount": 1}},
        {"action": {"kind": "x"}},
        {"action": {"kind": "x", "name": "y", "tags": ["t"] * 11}},
        {"idempotency_key": ""},
    ],
)
def test_invalid_reserve_bodies_are_400(world: World, change: dict[str, object]) -> None:
    response = world.http.post("/v1/reservations", json={**world.reserve_body(1), **change})
    assert response.status_code == 400
    assert error_of(response) == "INVALID_REQUEST"


def test_v0126_optional_fields_are_accepted(world: World) -> None:
    body = world.reserve_body(1, observe_mode="ENFORCE")
    body["action"]["policy_keys"] = {"host": "example.com", "custom": {"k": "v"}}
    assert world.http.post("/v1/reservations", json=body).status_code == 200


def test_malformed_json_and_non_object_bodies_are_400(world: World) -> None:
    for content in (b"{not json", b"[1, 2]", b"", b'{"idempotency_key": NaN}'):
        response = world.http.post("/v1/decide", content=content, headers={"Content-Type": "application/json"})
        assert response.status_code == 400 and error_of(response) == "INVALID_REQUEST", content


def test_missing_or_bad_api_key_is_401(world: World) -> None:
    assert error_of(world.anon.post("/v1/reservations", json=world.reserve_body(1))) == "UNAUTHORIZED"
    bad = world.client(api_key="cyc_live_definitelynotavalidkey0000000000")
    response = bad.get("/v1/balances", params={"tenant": "acme"})
    assert response.status_code == 401 and error_of(response) == "UNAUTHORIZED"
    assert "x-cycles-tenant" not in response.headers


def test_suspended_tenant_keys_are_401(world: World) -> None:
    world.server.update_tenant("acme", status="SUSPENDED")
    response = world.reserve(1)
    assert response.status_code == 401 and response.json()["message"] == "TENANT_SUSPENDED"


def test_tenant_isolation_is_403(world: World) -> None:
    response = world.reserve(1, subject={"tenant": "beta"})
    assert response.status_code == 403 and error_of(response) == "FORBIDDEN"
    rid = world.reserve_id(5)
    for resp in (
        world.beta.get(f"/v1/reservations/{rid}"),
        world.commit(rid, 1, client=world.beta),
        world.release(rid, client=world.beta),
        world.extend(rid, client=world.beta),
    ):
        assert resp.status_code == 403 and error_of(resp) == "FORBIDDEN"
    assert world.beta.get("/v1/reservations").json()["reservations"] == []
    assert world.http.get("/v1/reservations", params={"tenant": "beta"}).status_code == 403


def test_correlation_headers(world: World) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    via_parent = world.http.get(
        "/v1/balances",
        params={"tenant": "acme"},
        headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01", "X-Cycles-Trace-Id": "a" * 32},
    )
    assert via_parent.headers["x-cycles-trace-id"] == trace
    via_header = world.http.get(
        "/v1/balances",
        params={"tenant": "acme"},
        headers={"traceparent": f"00-{'0' * 32}-00f067aa0ba902b7-01", "X-Cycles-Trace-Id": "b" * 32},
    )
    assert via_header.headers["x-cycles-trace-id"] == "b" * 32
    error = world.http.post(
        "/v1/reservations/missing/commit",
        json={"idempotency_key": "k", "actual": {"unit": USD, "amount": 1}},
        headers={"X-Cycles-Trace-Id": "not-a-trace-id", "X-Request-Id": "client-chosen"},
    )
    assert error.status_code == 404
    assert error.json()["trace_id"] == error.headers["x-cycles-trace-id"] != "not-a-trace-id"
    assert error.headers["x-request-id"] != "client-chosen"
    ids = {world.http.get("/v1/balances", params={"tenant": "acme"}).headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3


def test_unknown_route_and_wrong_method(world: World) -> None:
    assert world.http.get("/v1/nothing").status_code == 404
    wrong = world.http.delete("/v1/reservations")
    assert wrong.status_code == 405 and error_of(wrong) == "INVALID_REQUEST"
    too_long = world.http.get("/v1/reservations/" + "x" * 129)
    assert too_long.status_code == 400


def test_reservation_ids_are_opaque_path_segments(world: World) -> None:
    response = world.http.get("/v1/reservations/a%2F..%2Fb%3Fx")
    assert response.status_code == 404 and "a/../b?x" in response.json()["message"]
