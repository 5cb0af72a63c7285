"""Admin-plane request schemas and the helpers the admin handlers share (validation, params, paging)."""

from __future__ import annotations

import re
import string as _string
from typing import Any

from ._access import check_permissions, check_scope_filter
from ._base import (
    Env,
    Request,
    binding,
    cursor_offset,
    decode_cursor,
    dumps,
    encode_cursor,
    invalid,
    page_limit,
)
from ._runtime_shared import Response
from ._validate import (
    AMOUNT,
    CAPS,
    FREE_OBJECT,
    OVERAGE,
    UNIT,
    Check,
    SchemaError,
    integer,
    obj,
    string,
)

_TTL = integer(minimum=1000, maximum=86_400_000)
_TENANT_STATUS = ("ACTIVE", "SUSPENDED", "CLOSED")
_EXPIRY_POLICY = string(enum=("AUTO_RELEASE", "MANUAL_CLEANUP", "GRACE_ONLY"))
TENANT_CREATE = obj(
    {
        "tenant_id": string(min_len=3, max_len=64, pattern=re.compile(r"^[a-z0-9-]+$")),
        "name": string(max_len=256),
        "parent_tenant_id": string(),
        "metadata": obj(additional=string(), max_props=32),
        "default_commit_overage_policy": OVERAGE,
        "default_reservation_ttl_ms": _TTL,
        "max_reservation_ttl_ms": _TTL,
        "max_reservation_extensions": integer(minimum=0),
        "reservation_expiry_policy": _EXPIRY_POLICY,
    },
    required=("tenant_id", "name"),
)
TENANT_UPDATE = obj(
    {
        "name": string(max_len=256),
        "status": string(enum=_TENANT_STATUS),
        "metadata": obj(additional=string(), max_props=32),
        "default_commit_overage_policy": OVERAGE,
        "default_reservation_ttl_ms": _TTL,
        "max_reservation_ttl_ms": _TTL,
        "max_reservation_extensions": integer(minimum=0),
    }
)
API_KEY_CREATE = obj(
    {
        "tenant_id": string(),
        "name": string(max_len=256),
        "description": string(max_len=1024),
        "permissions": check_permissions,
        "scope_filter": check_scope_filter,
        "expires_at": string(max_len=64),
        "metadata": FREE_OBJECT,
    },
    required=("tenant_id", "name"),
)
BUDGET_CREATE = obj(
    {
        "tenant_id": string(),
        "scope": string(min_len=1),
        "unit": UNIT,
        "allocated": AMOUNT,
        "overdraft_limit": AMOUNT,
        "commit_overage_policy": OVERAGE,
        "rollover_policy": string(enum=("NONE", "CARRY_FORWARD", "CAP_AT_ALLOCATED")),
        "period_start": string(),
        "period_end": string(),
        "metadata": FREE_OBJECT,
        "caps": CAPS,  # local extension: returned as ALLOW_WITH_CAPS when this is the deepest budgeted scope
    },
    required=("scope", "unit", "allocated"),
)
BUDGET_UPDATE = obj(
    {"overdraft_limit": AMOUNT, "commit_overage_policy": OVERAGE, "metadata": FREE_OBJECT, "caps": CAPS}
)
FUNDING = obj(
    {
        "operation": string(enum=("CREDIT", "DEBIT", "RESET", "REPAY_DEBT", "RESET_SPENT")),
        "amount": AMOUNT,
        "spent": AMOUNT,
        "reason": string(max_len=512),
        "idempotency_key": string(min_len=1, max_len=256),
        "metadata": FREE_OBJECT,
    },
    required=("operation", "amount"),
)
STATUS_TRANSITION = obj({"reason": string(max_len=512), "metadata": FREE_OBJECT})
KEY_ALPHABET = _string.ascii_letters + _string.digits
KEY_PREFIX_LEN = 14


def validated(schema: Check, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` checked against ``schema`` (400 INVALID_REQUEST otherwise)."""
    try:
        schema(body, "")
    except SchemaError as exc:
        raise invalid(str(exc)) from None
    return body


# --- API keys --------------------------------------------------------------------------------------------


def required_param(req: Request, name: str) -> str:
    value = req.param(name)
    if value is None:
        raise invalid(f"{name} query parameter is required")
    return value


def scope_unit(req: Request) -> tuple[str, str]:
    unit = required_param(req, "unit")
    try:
        UNIT(unit, "unit")
    except SchemaError as exc:
        raise invalid(str(exc)) from None
    return required_param(req, "scope"), unit


def paged(env: Env, req: Request, items: list[dict[str, Any]], field: str, *bound: Any) -> Response:
    limit = page_limit(req, 50, 100)
    key = binding(field, *bound)
    cursor = req.param("cursor")
    offset = cursor_offset(decode_cursor(env.ledger.cursor_secret, cursor, key)) if cursor is not None else 0
    page = items[offset : offset + limit]
    result: dict[str, Any] = {field: page, "has_more": offset + limit < len(items)}
    if result["has_more"]:
        result["next_cursor"] = encode_cursor(env.ledger.cursor_secret, {"h": key, "o": offset + limit})
    return 200, dumps(result)
