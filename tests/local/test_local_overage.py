"""Overage arithmetic aligned with the reference ledger (issue 8's addendum), in process and over real HTTP.

* ALLOW_WITH_OVERDRAFT on a scope whose overdraft limit is 0 (or absent) behaves as ALLOW_IF_AVAILABLE.
* Under ALLOW_WITH_OVERDRAFT a short scope charges ``spent`` with what it could fund; only the rest is debt.
* A commit is accepted on a budget frozen after the reservation was made; events on it are refused.
* The first failing scope in scope order names the error, on the event path as on reserve.
"""

from __future__ import annotations

from local_support import USD, World, error_of

AWO = "ALLOW_WITH_OVERDRAFT"
AGENT = {"tenant": "acme", "agent": "a1"}
AGENT_SCOPE = "tenant:acme/agent:a1"


def _amounts(world: World, scope: str) -> tuple[int, int, int, int, bool]:
    b = world.budget(scope)
    return b["spent"], b["reserved"], b["debt"], b["remaining"], b["is_over_limit"]


# --- a zero overdraft limit behaves as ALLOW_IF_AVAILABLE ---------------------------------------------------


def test_overdraft_commit_on_a_zero_limit_scope_is_capped_not_refused(world: World) -> None:
    world.server.create_budget(AGENT_SCOPE, USD, 150)  # overdraft_limit 0
    rid = world.reserve_id(100, subject=AGENT, overage_policy=AWO)
    response = world.commit(rid, 400)
    assert response.status_code == 200
    assert response.json()["charged"] == {"unit": USD, "amount": 150}  # 100 + the 50 the scope still had
    assert _amounts(world, AGENT_SCOPE) == (150, 0, 0, 0, True)
    assert world.http.get(f"/v1/reservations/{rid}").json()["committed"]["amount"] == 150
    blocked = world.reserve(1, subject=AGENT)
    assert blocked.status_code == 409 and error_of(blocked) == "OVERDRAFT_LIMIT_EXCEEDED"


def test_overdraft_limit_absent_from_the_budget_is_a_zero_limit(world: World) -> None:
    created = world.admin.post(
        "/v1/admin/budgets",
        json={"tenant_id": "acme", "scope": AGENT_SCOPE, "unit": USD, "allocated": {"unit": USD, "amount": 80}},
    )
    assert created.status_code in (200, 201), created.text
    event = world.event(200, subject=AGENT, overage_policy=AWO)
    assert event.status_code == 201
    assert event.json()["charged"] == {"unit": USD, "amount": 80}
    assert _amounts(world, AGENT_SCOPE) == (80, 0, 0, 0, True)
    assert world.budget()["spent"] == 80  # the parent was charged the same capped amount


def test_zero_limit_scope_caps_the_charge_for_an_overdraft_scope_beside_it(world: World) -> None:
    world.server.create_budget("tenant:acme/workspace:w", USD, 120)  # limit 0
    world.server.create_budget("tenant:acme/workspace:w/agent:a1", USD, 100, overdraft_limit=500)
    subject = {"tenant": "acme", "workspace": "w", "agent": "a1"}
    rid = world.reserve_id(50, subject=subject, overage_policy=AWO)
    data = world.commit(rid, 200).json()
    # The workspace could fund 70 of the 150 overage: that caps the charge; the agent funds 50 and owes 20.
    assert data["charged"]["amount"] == 120
    assert _amounts(world, "tenant:acme/workspace:w") == (120, 0, 0, 0, True)
    assert _amounts(world, "tenant:acme/workspace:w/agent:a1") == (100, 0, 20, -20, False)
    assert _amounts(world, "tenant:acme")[:3] == (120, 0, 0)


# --- debt is only the unfunded part -----------------------------------------------------------------------


def test_overdraft_commit_charges_spent_with_what_the_scope_could_fund(world: World) -> None:
    world.server.create_budget(AGENT_SCOPE, USD, 100, overdraft_limit=300)
    rid = world.reserve_id(50, subject=AGENT, overage_policy=AWO)
    data = world.commit(rid, 350).json()
    assert data["charged"]["amount"] == 350
    # 50 held + the 50 still free are spent; the 250 nobody funded is debt. remaining = 100 - 100 - 250.
    assert _amounts(world, AGENT_SCOPE) == (100, 0, 250, -250, False)
    balance = next(b for b in data["balances"] if b["scope_path"] == AGENT_SCOPE)
    assert (balance["spent"]["amount"], balance["debt"]["amount"]) == (100, 250)
    assert _amounts(world, "tenant:acme")[:3] == (350, 0, 0)  # the parent funded it all


def test_overdraft_event_charges_spent_with_what_the_scope_could_fund(world: World) -> None:
    world.server.create_budget(AGENT_SCOPE, USD, 100, overdraft_limit=300)
    event = world.event(150, subject=AGENT, overage_policy=AWO)
    assert event.status_code == 201 and event.json()["charged"]["amount"] == 150
    assert _amounts(world, AGENT_SCOPE) == (100, 0, 50, -50, False)
    # The limit check stays the spec's: debt + overage (50 + 260) > 300 is refused and changes nothing.
    refused = world.event(260, subject=AGENT, overage_policy=AWO)
    assert refused.status_code == 409 and error_of(refused) == "OVERDRAFT_LIMIT_EXCEEDED"
    assert _amounts(world, AGENT_SCOPE) == (100, 0, 50, -50, False)
    assert world.event(250, subject=AGENT, overage_policy=AWO).status_code == 201
    assert _amounts(world, AGENT_SCOPE) == (100, 0, 300, -300, False)


def test_overdraft_over_a_scope_already_in_debt_is_all_debt(world: World) -> None:
    world.server.create_budget(AGENT_SCOPE, USD, 100, overdraft_limit=1_000)
    assert world.event(150, subject=AGENT, overage_policy=AWO).status_code == 201
    assert world.event(40, subject=AGENT, overage_policy=AWO).status_code == 201
    assert _amounts(world, AGENT_SCOPE) == (100, 0, 90, -90, False)


def test_a_commit_leaves_debt_from_a_lowered_limit_as_debt_outstanding(world: World) -> None:
    world.server.create_budget(AGENT_SCOPE, USD, 100, overdraft_limit=1_000)
    first = world.reserve_id(100, subject=AGENT, overage_policy=AWO)
    second = world.reserve_id(0, subject=AGENT, overage_policy=AWO)
    assert world.commit(first, 300).status_code == 200
    world.server.update_budget(AGENT_SCOPE, USD, overdraft_limit=0)
    assert world.commit(second, 0).status_code == 200
    assert world.budget(AGENT_SCOPE)["is_over_limit"] is False
    assert error_of(world.reserve(0, subject=AGENT)) == "DEBT_OUTSTANDING"


# --- frozen budgets -------------------------------------------------------------------------------------


def test_commit_on_a_budget_frozen_after_the_reservation_is_accepted(world: World) -> None:
    first, second = world.reserve_id(10), world.reserve_id(10)
    world.server.freeze_budget("tenant:acme", USD)
    response = world.commit(first, 7)
    assert response.status_code == 200 and response.json()["charged"]["amount"] == 7
    assert (world.budget()["spent"], world.budget()["reserved"], world.budget()["status"]) == (7, 10, "FROZEN")
    assert world.release(second).status_code == 200
    frozen = world.reserve(1)  # freezing still stops new work
    assert frozen.status_code == 409 and error_of(frozen) == "BUDGET_FROZEN"
    assert error_of(world.event(1)) == "BUDGET_FROZEN"


def test_commit_on_a_closed_budget_is_still_refused(world: World) -> None:
    rid = world.reserve_id(10)
    world.server.close_budget("tenant:acme", USD)
    response = world.commit(rid, 10)
    assert response.status_code == 409 and error_of(response) == "BUDGET_CLOSED"
    assert world.budget()["reserved"] == 10


# --- error precedence on events: first failing scope in scope order -------------------------------------


def _exhausted_workspace_then_frozen_agent(world: World) -> dict[str, str]:
    world.server.create_budget("tenant:acme/workspace:w", USD, 10, overdraft_limit=20)
    world.server.create_budget("tenant:acme/workspace:w/agent:a1", USD, 1_000)
    world.server.freeze_budget("tenant:acme/workspace:w/agent:a1", USD)
    return {"tenant": "acme", "workspace": "w", "agent": "a1"}


def test_event_reports_the_first_failing_scope_before_a_later_frozen_one(world: World) -> None:
    subject = _exhausted_workspace_then_frozen_agent(world)
    rejected = world.event(50, subject=subject, overage_policy="REJECT")
    assert rejected.status_code == 409 and error_of(rejected) == "BUDGET_EXCEEDED"
    assert "tenant:acme/workspace:w" in rejected.json()["message"]
    over = world.event(50, subject=subject, overage_policy=AWO)
    assert over.status_code == 409 and error_of(over) == "OVERDRAFT_LIMIT_EXCEEDED"
    # The reserve path agrees on the same state.
    assert error_of(world.reserve(50, subject=subject)) == "BUDGET_EXCEEDED"
    # An amount the workspace can fund reaches the frozen agent.
    fits = world.event(5, subject=subject, overage_policy="REJECT")
    assert fits.status_code == 409 and error_of(fits) == "BUDGET_FROZEN"
    assert world.budget("tenant:acme/workspace:w")["spent"] == 0


def test_event_reports_a_frozen_scope_that_comes_first(world: World) -> None:
    world.server.create_budget("tenant:acme/workspace:w", USD, 1_000)
    world.server.create_budget("tenant:acme/workspace:w/agent:a1", USD, 10)
    world.server.freeze_budget("tenant:acme/workspace:w", USD)
    subject = {"tenant": "acme", "workspace": "w", "agent": "a1"}
    response = world.event(50, subject=subject, overage_policy="REJECT")
    assert response.status_code == 409 and error_of(response) == "BUDGET_FROZEN"
