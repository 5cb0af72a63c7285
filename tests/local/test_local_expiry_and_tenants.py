"""Expiry with grace (driven by the fake clock) and tenant lifecycle (CLOSED cascade, TENANT_CLOSED)."""

from __future__ import annotations

from local_support import USD, World, error_of


def test_commit_and_release_are_accepted_during_grace_but_extend_is_not(world: World) -> None:
    first = world.reserve(100, ttl_ms=10_000, grace_period_ms=2_000).json()
    second = world.reserve_id(100, ttl_ms=10_000, grace_period_ms=2_000)
    world.clock.advance(10_001)  # past expiry, inside grace
    extend = world.extend(first["reservation_id"])
    assert extend.status_code == 410 and error_of(extend) == "RESERVATION_EXPIRED"
    assert world.commit(first["reservation_id"], 40).status_code == 200
    assert world.release(second).status_code == 200
    assert world.budget()["spent"] == 40 and world.budget()["reserved"] == 0


def test_after_grace_the_reservation_expires_and_its_hold_returns(world: World) -> None:
    rid = world.reserve_id(300, ttl_ms=5_000, grace_period_ms=1_000)
    world.clock.advance(5_000)
    assert world.extend(rid, by=1_000).status_code == 200  # exactly at expiry extend is still allowed
    world.clock.advance(1_000 + 1_000 + 1)
    assert world.budget()["reserved"] == 300  # nothing swept yet: expiry is applied on access
    for response in (world.commit(rid, 1), world.release(rid), world.extend(rid)):
        assert response.status_code == 410 and error_of(response) == "RESERVATION_EXPIRED"
    assert world.budget()["reserved"] == 0
    got = world.http.get(f"/v1/reservations/{rid}")
    assert got.status_code == 410 and error_of(got) == "RESERVATION_EXPIRED"
    rows = world.http.get("/v1/reservations", params={"status": "EXPIRED"}).json()["reservations"]
    assert [r["reservation_id"] for r in rows] == [rid]
    assert "finalized_at_ms" not in rows[0]


def test_expired_holds_are_swept_before_new_reserves(world: World) -> None:
    world.server.create_budget("tenant:acme/agent:small", USD, 100)
    subject = {"tenant": "acme", "agent": "small"}
    world.reserve_id(100, subject=subject, ttl_ms=1_000, grace_period_ms=0)
    assert error_of(world.reserve(100, subject=subject)) == "BUDGET_EXCEEDED"
    world.clock.advance(1_001)
    assert world.reserve(100, subject=subject).status_code == 200


def test_sweep_expired_method(world: World) -> None:
    world.reserve_id(10, ttl_ms=1_000, grace_period_ms=0)
    world.reserve_id(10, ttl_ms=60_000)
    world.clock.advance(1_001)
    assert world.server.sweep_expired() == 1
    assert world.server.sweep_expired() == 0
    assert world.budget()["reserved"] == 10


def test_replayed_create_after_expiry_reports_zero_ttl(world: World) -> None:
    body = world.reserve_body(10, ttl_ms=1_000, grace_period_ms=0)
    first = world.http.post("/v1/reservations", json=body).json()
    world.clock.advance(2_000)
    replay = world.http.post("/v1/reservations", json=body).json()
    assert replay["reservation_id"] == first["reservation_id"]
    assert replay["remaining_ttl_ms"] == 0


def test_extend_replay_recomputes_remaining_ttl(world: World) -> None:
    rid = world.reserve_id(1, ttl_ms=10_000)
    body = {"idempotency_key": "beat-1", "extend_by_ms": 10_000}
    first = world.http.post(f"/v1/reservations/{rid}/extend", json=body).json()
    world.clock.advance(3_000)
    replay = world.http.post(f"/v1/reservations/{rid}/extend", json=body).json()
    assert replay["expires_at_ms"] == first["expires_at_ms"]  # not applied twice
    assert replay["remaining_ttl_ms"] == first["remaining_ttl_ms"] - 3_000


def test_closing_a_tenant_releases_its_reservations_and_closes_its_budgets(world: World) -> None:
    open_rid = world.reserve_id(200)
    done_body = world.reserve_body(50)
    done = world.http.post("/v1/reservations", json=done_body).json()["reservation_id"]
    commit_body = {"idempotency_key": "pre-close", "actual": {"unit": USD, "amount": 50}}
    committed = world.http.post(f"/v1/reservations/{done}/commit", json=commit_body)
    world.server.update_tenant("acme", status="CLOSED")

    assert world.http.get(f"/v1/reservations/{open_rid}").json()["status"] == "RELEASED"
    budget = world.budget()
    assert (budget["status"], budget["reserved"], budget["spent"]) == ("CLOSED", 0, 50)
    for response in (
        world.reserve(1),
        world.commit(open_rid, 1),
        world.release(open_rid),
        world.extend(open_rid),
        world.event(1),
    ):
        assert response.status_code == 409 and error_of(response) == "TENANT_CLOSED", response.text
    assert world.reserve(1, dry_run=True).json()["reason_code"] == "TENANT_CLOSED"
    assert world.decide(1).json() == {
        "decision": "DENY",
        "reason_code": "TENANT_CLOSED",
        "affected_scopes": ["tenant:acme"],
    }
    # Replays of pre-close successes still return the stored response; reads keep working.
    replay = world.http.post(f"/v1/reservations/{done}/commit", json=commit_body)
    assert replay.status_code == 200 and replay.content == committed.content
    assert world.http.post("/v1/reservations", json=done_body).json()["reservation_id"] == done
    assert world.http.get("/v1/balances", params={"tenant": "acme"}).status_code == 200
    # The other tenant is unaffected.
    assert (
        world.beta.post("/v1/reservations", json={**world.reserve_body(1), "subject": {"tenant": "beta"}}).status_code
        == 200
    )
