"""API-key ``permissions`` and ``scope_filter`` are enforced on every endpoint a tenant key can call.

The matrix: every key-authenticated endpoint x a key with / without the permission it needs x a target
inside / outside the key's ``scope_filter`` (``workspace:eng``). Runs in process and over real HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from local_support import USD, World, error_of

from runcycles.local import LocalServerError
from runcycles.local._access import DEFAULT_PERMISSIONS

INSIDE, OUTSIDE = "eng", "other"


def _subject(workspace: str) -> dict[str, str]:
    return {"tenant": "acme", "workspace": workspace}


def _reservation(world: World, workspace: str) -> str:
    """A reservation in ``workspace``, made with the unrestricted key."""
    return world.reserve_id(10, subject=_subject(workspace))


def _reserve(world: World, c: httpx.Client, ws: str) -> httpx.Response:
    return c.post("/v1/reservations", json=world.reserve_body(10, subject=_subject(ws)))


def _decide(world: World, c: httpx.Client, ws: str) -> httpx.Response:
    return c.post("/v1/decide", json=world.reserve_body(10, subject=_subject(ws)))


def _event(world: World, c: httpx.Client, ws: str) -> httpx.Response:
    body = {
        "idempotency_key": world.key_("e"),
        "subject": _subject(ws),
        "action": {"kind": "tool", "name": "web"},
        "actual": {"unit": USD, "amount": 5},
    }
    return c.post("/v1/events", json=body)


def _get(world: World, c: httpx.Client, ws: str) -> httpx.Response:
    return c.get(f"/v1/reservations/{_reservation(world, ws)}")


def _commit(world: World, c: httpx.Client, ws: str) -> httpx.Response:
    return world.commit(_reservation(world, ws), 10, client=c)


def _release(world: World, c: httpx.Client, ws: str) -> httpx.Response:
    return world.release(_reservation(world, ws), client=c)


def _extend(world: World, c: httpx.Client, ws: str) -> httpx.Response:
    return world.extend(_reservation(world, ws), client=c)


def _list(world: World, c: httpx.Client, ws: str) -> httpx.Response:
    _reservation(world, ws)
    return c.get("/v1/reservations", params={"workspace": ws})


def _balances(world: World, c: httpx.Client, ws: str) -> httpx.Response:
    return c.get("/v1/balances", params={"workspace": ws})


def _create_budget(world: World, c: httpx.Client, ws: str) -> httpx.Response:
    scope = f"tenant:acme/workspace:{ws}/app:{world.key_('app')}"
    return c.post("/v1/admin/budgets", json={"scope": scope, "unit": USD, "allocated": {"unit": USD, "amount": 1}})


def _list_budgets(world: World, c: httpx.Client, ws: str) -> httpx.Response:
    return c.get("/v1/admin/budgets", params={"scope_prefix": f"tenant:acme/workspace:{ws}"})


def _lookup(world: World, c: httpx.Client, ws: str) -> httpx.Response:
    return c.get("/v1/admin/budgets/lookup", params={"scope": f"tenant:acme/workspace:{ws}", "unit": USD})


def _fund(operation: str) -> Callable[[World, httpx.Client, str], httpx.Response]:
    def fund(world: World, c: httpx.Client, ws: str) -> httpx.Response:
        body: dict[str, Any] = {"operation": operation, "amount": {"unit": USD, "amount": 50_000}}
        if operation == "RESET_SPENT":
            body["spent"] = {"unit": USD, "amount": 0}
        return c.post(
            "/v1/admin/budgets/fund", params={"scope": f"tenant:acme/workspace:{ws}", "unit": USD}, json=body
        )

    return fund


# (name, call, permission, success status, kind): kind "scoped" = refused outside the filter, "list" =
# answers outside the filter but without the records there.
ENDPOINTS: list[tuple[str, Callable[[World, httpx.Client, str], httpx.Response], str, int, str]] = [
    ("reserve", _reserve, "reservations:create", 200, "scoped"),
    ("decide", _decide, "reservations:create", 200, "scoped"),
    ("event", _event, "reservations:commit", 201, "scoped"),
    ("get-reservation", _get, "reservations:list", 200, "scoped"),
    ("commit", _commit, "reservations:commit", 200, "scoped"),
    ("release", _release, "reservations:release", 200, "scoped"),
    ("extend", _extend, "reservations:extend", 200, "scoped"),
    ("list-reservations", _list, "reservations:list", 200, "list"),
    ("balances", _balances, "balances:read", 200, "list"),
    ("create-budget", _create_budget, "budgets:write", 201, "scoped"),
    ("list-budgets", _list_budgets, "budgets:read", 200, "list"),
    ("lookup-budget", _lookup, "budgets:read", 200, "scoped"),
    ("fund-credit", _fund("CREDIT"), "budgets:write", 200, "scoped"),
    ("fund-reset-spent", _fund("RESET_SPENT"), "budgets:write", 200, "scoped"),
]
_LIST_FIELD = {"list-reservations": "reservations", "balances": "balances", "list-budgets": "ledgers"}


def _key(world: World, permissions: list[str], scope_filter: list[str] | None = None) -> httpx.Client:
    body: dict[str, Any] = {"tenant_id": "acme", "name": "restricted", "permissions": permissions}
    if scope_filter is not None:
        body["scope_filter"] = scope_filter
    created = world.admin.post("/v1/admin/api-keys", json=body)
    assert created.status_code == 201, created.text
    return world.client(api_key=created.json()["key_secret"])


@pytest.fixture
def seeded(world: World) -> World:
    for ws in (INSIDE, OUTSIDE):
        world.server.create_budget(f"tenant:acme/workspace:{ws}", USD, 1_000_000)
    return world


@pytest.mark.parametrize("where", [INSIDE, OUTSIDE])
@pytest.mark.parametrize("has_permission", [True, False], ids=["granted", "missing"])
@pytest.mark.parametrize(
    ("name", "call", "permission", "ok", "kind"), ENDPOINTS, ids=[endpoint[0] for endpoint in ENDPOINTS]
)
def test_permission_and_scope_matrix(
    seeded: World,
    name: str,
    call: Callable[[World, httpx.Client, str], httpx.Response],
    permission: str,
    ok: int,
    kind: str,
    has_permission: bool,
    where: str,
) -> None:
    others = [p for p in DEFAULT_PERMISSIONS if p != permission]
    client = _key(seeded, [permission] if has_permission else others, [f"workspace:{INSIDE}"])
    before = {ws: seeded.budget(f"tenant:acme/workspace:{ws}") for ws in (INSIDE, OUTSIDE)}
    response = call(seeded, client, where)
    if not has_permission:
        assert response.status_code == 403, response.text
        admin_plane = response.request.url.path.startswith("/v1/admin")
        assert error_of(response) == ("INSUFFICIENT_PERMISSIONS" if admin_plane else "FORBIDDEN")
    elif where == INSIDE or kind == "list":
        assert response.status_code == ok, response.text
        if kind == "list":
            rows = response.json()[_LIST_FIELD[name]]
            assert (len(rows) > 0) == (where == INSIDE), rows
    else:
        assert response.status_code == 403, response.text
        assert error_of(response) == "FORBIDDEN"
    if response.status_code == 403:
        # A refused request changed nothing (the setup reservation aside, which the unrestricted key made).
        after = {ws: seeded.budget(f"tenant:acme/workspace:{ws}") for ws in (INSIDE, OUTSIDE)}
        for ws in (INSIDE, OUTSIDE):
            assert after[ws]["allocated"] == before[ws]["allocated"]
            assert after[ws]["spent"] == before[ws]["spent"]


def test_issue_reproduction_read_only_key_cannot_spend_or_fund(seeded: World) -> None:
    client = _key(seeded, ["balances:read"], ["workspace:eng"])
    assert _fund("RESET_SPENT")(seeded, client, OUTSIDE).status_code == 403
    assert _fund("CREDIT")(seeded, client, INSIDE).status_code == 403
    assert _event(seeded, client, OUTSIDE).status_code == 403
    assert _reserve(seeded, client, OUTSIDE).status_code == 403
    assert _balances(seeded, client, INSIDE).status_code == 200
    assert seeded.budget("tenant:acme/workspace:other")["allocated"] == 1_000_000


def test_empty_permissions_grant_nothing(seeded: World) -> None:
    client = _key(seeded, [])
    for _name, call, _permission, _ok, _kind in ENDPOINTS:
        assert call(seeded, client, INSIDE).status_code == 403


def test_keys_without_permissions_get_the_spec_default_set(seeded: World) -> None:
    created = seeded.admin.post("/v1/admin/api-keys", json={"tenant_id": "acme", "name": "default"})
    assert created.json()["permissions"] == DEFAULT_PERMISSIONS
    client = seeded.client(api_key=created.json()["key_secret"])
    for _name, call, _permission, ok, _kind in ENDPOINTS:
        assert call(seeded, client, OUTSIDE).status_code == ok


def test_admin_wildcards_follow_the_spec(seeded: World) -> None:
    writer = _key(seeded, ["admin:write"])
    assert _fund("CREDIT")(seeded, writer, INSIDE).status_code == 200  # admin:write satisfies budgets:write
    assert _lookup(seeded, writer, INSIDE).status_code == 403  # ... but no read
    assert _reserve(seeded, writer, INSIDE).status_code == 403  # reservations:create is not a *:write
    reader = _key(seeded, ["admin:read"])
    assert _balances(seeded, reader, INSIDE).status_code == 200
    assert _lookup(seeded, reader, INSIDE).status_code == 200
    denied = _create_budget(seeded, reader, INSIDE)
    assert denied.status_code == 403 and error_of(denied) == "INSUFFICIENT_PERMISSIONS"
    granular = _key(seeded, ["admin:budgets:write"])
    assert _fund("CREDIT")(seeded, granular, INSIDE).status_code == 200


def test_scope_filter_levels_combine(seeded: World) -> None:
    seeded.server.create_budget("tenant:acme/workspace:eng/agent:bot", USD, 1_000)
    client = _key(seeded, DEFAULT_PERMISSIONS, ["workspace:eng", "workspace:ops", "agent:*"])
    agent = {"tenant": "acme", "workspace": "ENG", "agent": "bot"}
    assert client.post("/v1/decide", json=seeded.reserve_body(1, subject=agent)).status_code == 200
    # workspace:eng alone lacks the agent level the filter requires.
    assert _decide(seeded, client, INSIDE).status_code == 403
    other_agent = {"tenant": "acme", "workspace": "other", "agent": "bot"}
    assert client.post("/v1/decide", json=seeded.reserve_body(1, subject=other_agent)).status_code == 403


@pytest.mark.parametrize(
    "body",
    [
        {"permissions": ["root:everything"]},
        {"permissions": ["reservations:create", 7]},
        {"permissions": "balances:read"},
        {"scope_filter": ["eng"]},
        {"scope_filter": ["galaxy:far"]},
        {"scope_filter": ["workspace:bad value"]},
    ],
)
def test_key_creation_rejects_unknown_permissions_and_bad_filters(world: World, body: dict[str, Any]) -> None:
    response = world.admin.post("/v1/admin/api-keys", json={"tenant_id": "acme", "name": "x", **body})
    assert response.status_code == 400 and error_of(response) == "INVALID_REQUEST"
    assert next(iter(body)) in response.json()["message"]


def test_python_and_cli_keys_keep_full_runtime_permissions(seeded: World) -> None:
    # World's keys come from LocalCyclesServer.create_api_key (as `runcycles serve --tenant` does).
    for _name, call, _permission, ok, _kind in ENDPOINTS:
        assert call(seeded, seeded.http, INSIDE).status_code == ok


def test_python_create_api_key_takes_permissions_and_scope_filter(seeded: World) -> None:
    secret = seeded.server.create_api_key("acme", "ro", permissions=["balances:read"], scope_filter=["workspace:eng"])
    client = seeded.client(api_key=secret)
    assert _balances(seeded, client, INSIDE).status_code == 200
    assert _reserve(seeded, client, INSIDE).status_code == 403
    assert _balances(seeded, client, OUTSIDE).json()["balances"] == []
    with pytest.raises(LocalServerError) as caught:
        seeded.server.create_api_key("acme", permissions=["root:everything"])
    assert caught.value.status == 400 and "permissions[0]" in caught.value.message
