"""Admin plane, API-key updates: ``PATCH /v1/admin/api-keys/{key_id}`` (the spec's ``updateApiKey``)."""

from __future__ import annotations

from typing import Any

from . import _ledger as db
from ._base import Env, LocalServerError, Request, dumps, parse_iso
from ._runtime import Response
from ._validate import FREE_OBJECT, array, obj, string

PERMISSIONS = (
    "reservations:create",
    "reservations:commit",
    "reservations:release",
    "reservations:extend",
    "reservations:list",
    "balances:read",
    "budgets:read",
    "budgets:write",
    "policies:read",
    "policies:write",
    "webhooks:read",
    "webhooks:write",
    "events:read",
    "admin:read",
    "admin:write",
    "admin:tenants:read",
    "admin:tenants:write",
    "admin:budgets:read",
    "admin:budgets:write",
    "admin:policies:read",
    "admin:policies:write",
    "admin:apikeys:read",
    "admin:apikeys:write",
    "admin:webhooks:read",
    "admin:webhooks:write",
    "admin:events:read",
    "admin:audit:read",
)
"""The admin spec's ``Permission`` enum."""

API_KEY_UPDATE = obj(
    {
        "name": string(max_len=256),
        "description": string(max_len=1024),
        "permissions": array(string(enum=PERMISSIONS)),
        "scope_filter": array(string()),
        "metadata": FREE_OBJECT,
    }
)


def update_api_key(env: Env, key_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Replace the given mutable fields of a key; 404 if unknown, 409 once revoked or expired."""
    with env.ledger.write() as conn:
        now = env.clock()
        key = db.get_api_key(conn, key_id)
        if key is None:
            raise LocalServerError(404, "NOT_FOUND", f"API key not found: {key_id}")
        if key["status"] == "REVOKED":
            raise LocalServerError(409, "KEY_REVOKED", "API key is revoked")
        if key["status"] == "EXPIRED" or parse_iso(key["expires_at"], "expires_at") <= now:
            raise LocalServerError(409, "KEY_EXPIRED", "API key is expired")
        key.update(body)
        db.set_api_key_status(conn, key_id, key["status"], {k: v for k, v in key.items() if k != "status"})
    return key


def h_update_api_key(env: Env, req: Request, key_id: str) -> Response:
    """``PATCH /v1/admin/api-keys/{key_id}``."""
    return 200, dumps(update_api_key(env, key_id, req.json(API_KEY_UPDATE)))
