"""Admin plane, API keys: authentication, create, list, revoke, update (the spec's ``updateApiKey``)."""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import secrets
from typing import Any

from . import _ledger as db
from ._access import DEFAULT_PERMISSIONS, PERMISSIONS, Grant
from ._admin_schemas import API_KEY_CREATE, KEY_ALPHABET, KEY_PREFIX_LEN, paged
from ._base import (
    Env,
    LocalServerError,
    Request,
    dumps,
    invalid,
    iso,
    new_id,
    parse_iso,
)
from ._runtime_shared import DAY_MS, Response
from ._validate import (
    FREE_OBJECT,
    array,
    obj,
    string,
)


def _digest(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode("utf-8")).digest()


# Keys the in-memory cache of authentications (never the secret itself); new in every process.
_CACHE_KEY = os.urandom(32)
_CACHE_LIMIT = 4096


def _cache_key(secret: str) -> bytes:
    return hashlib.blake2b(secret.encode("utf-8"), key=_CACHE_KEY, digest_size=32).digest()


def _lookup(env: Env, secret: str) -> Any:
    """The stored key row matching ``secret`` (``None`` if none), from the cache while no key or tenant changed.

    A cached entry is used only while the ledger's ``auth_epoch`` (bumped by triggers on every change to
    API keys or tenants, by any process sharing the file) is the one it was read at, and no write was rolled
    back since (see ``Ledger.rollbacks``), so a revocation, suspension or update takes effect on the next
    request. Only matches are cached: unknown secrets cannot fill it.
    """
    cache_key = _cache_key(secret)
    cached = env.key_cache.get(cache_key)
    if cached is not None and cached[0] == (env.ledger.auth_epoch(), env.ledger.rollbacks):
        return cached[1]
    rollbacks = env.ledger.rollbacks
    with env.ledger.read() as conn:
        epoch = db.auth_epoch(conn)
        candidates = db.key_candidates(conn, secret[:KEY_PREFIX_LEN])
    match = next((c for c in candidates if hmac.compare_digest(_digest(c[2], secret), c[3])), None)
    if match is not None:
        if len(env.key_cache) >= _CACHE_LIMIT:
            env.key_cache.clear()
        env.key_cache[cache_key] = ((epoch, rollbacks), match)
    return match


def authenticate_cached(env: Env, secret: str) -> tuple[str, Grant, tuple[int, int]] | None:
    """The tenant, grant and cache stamp of a key that was valid when cached, without reading the ledger.

    ``None`` when there is no such entry or the entry would not pass (then :func:`authenticate` decides).
    The caller must compare the stamp with ``(auth_epoch, Ledger.rollbacks)`` inside its transaction before
    it changes anything, and authenticate again (:func:`authenticate`) if they differ.
    """
    cached = env.key_cache.get(_cache_key(secret))
    if cached is None:
        return None
    _key_id, tenant_id, _salt, _hash, status, expires_at_ms, doc, tenant_status = cached[1]
    if status != "ACTIVE" or expires_at_ms <= env.clock() or tenant_status in (None, "SUSPENDED"):
        return None
    stamp: tuple[int, int] = cached[0]
    return tenant_id, _grant_of(doc), stamp


def authenticate(env: Env, secret: str) -> tuple[str, Grant]:
    """The tenant and grant of a presented API key secret; 401 UNAUTHORIZED for anything not currently valid."""
    match = _lookup(env, secret)
    if match is None:
        raise LocalServerError(401, "UNAUTHORIZED", "KEY_NOT_FOUND")
    _key_id, tenant_id, _salt, _hash, status, expires_at_ms, doc, tenant_status = match
    if status != "ACTIVE":
        raise LocalServerError(401, "UNAUTHORIZED", f"KEY_{status}")
    if expires_at_ms <= env.clock():
        raise LocalServerError(401, "UNAUTHORIZED", "KEY_EXPIRED")
    if tenant_status is None:
        raise LocalServerError(401, "UNAUTHORIZED", "KEY_NOT_OWNED_BY_TENANT")
    if tenant_status == "SUSPENDED":
        raise LocalServerError(401, "UNAUTHORIZED", "TENANT_SUSPENDED")
    return tenant_id, _grant_of(doc)


@functools.lru_cache(maxsize=1024)
def _grant_of(doc: str) -> Grant:
    """The grant of a stored key document (parsed once per distinct document text)."""
    return Grant.of(json.loads(doc))


def create_api_key(env: Env, body: dict[str, Any]) -> dict[str, Any]:
    """Create a key; the returned ``ApiKeyCreateResponse`` is the only place the secret ever appears."""
    secret = "cyc_live_" + "".join(secrets.choice(KEY_ALPHABET) for _ in range(32))
    salt = os.urandom(16)
    with env.ledger.write() as conn:
        now = env.clock()
        tenant = db.get_tenant(conn, body["tenant_id"])
        if tenant is None:
            raise invalid(f"Tenant not found: {body['tenant_id']}")
        if tenant["status"] == "CLOSED":
            raise LocalServerError(409, "TENANT_CLOSED", "Tenant is closed")
        expires_ms = parse_iso(body["expires_at"], "expires_at") if "expires_at" in body else now + 365 * DAY_MS
        doc: dict[str, Any] = {
            "key_id": "key_" + new_id().replace("-", ""),
            "tenant_id": tenant["tenant_id"],
            "key_prefix": secret[:KEY_PREFIX_LEN],
            "name": body["name"],
            "permissions": body.get("permissions", DEFAULT_PERMISSIONS),
            "created_at": iso(now),
            "expires_at": iso(expires_ms),
            **{k: body[k] for k in ("description", "scope_filter", "metadata") if k in body},
        }
        db.insert_api_key(
            conn,
            key_id=doc["key_id"],
            tenant_id=doc["tenant_id"],
            key_prefix=doc["key_prefix"],
            salt=salt,
            key_hash=_digest(salt, secret),
            expires_at_ms=expires_ms,
            doc=doc,
        )
    fields = ("key_id", "key_prefix", "tenant_id", "permissions", "created_at", "expires_at")
    return {"key_secret": secret, **{k: doc[k] for k in fields}}


# --- tenants ---------------------------------------------------------------------------------------------


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


def h_create_api_key(env: Env, req: Request) -> Response:
    """``POST /v1/admin/api-keys`` (201)."""
    return 201, dumps(create_api_key(env, req.json(API_KEY_CREATE)))


def h_list_api_keys(env: Env, req: Request) -> Response:
    """``GET /v1/admin/api-keys`` (never secrets)."""
    tenant_id, status = req.param("tenant_id"), req.param("status")
    with env.ledger.read() as conn:
        keys = [k for k in db.list_api_keys(conn, tenant_id) if status is None or k["status"] == status]
    return paged(env, req, keys, "keys", tenant_id, status)


def h_revoke_api_key(env: Env, req: Request, key_id: str) -> Response:
    """``DELETE /v1/admin/api-keys/{key_id}``: revoke permanently."""
    with env.ledger.write() as conn:
        key = db.get_api_key(conn, key_id)
        if key is None:
            raise LocalServerError(404, "NOT_FOUND", f"API key not found: {key_id}")
        if key["status"] == "REVOKED":
            raise LocalServerError(409, "KEY_REVOKED", "API key is already revoked")
        key.update(status="REVOKED", revoked_at=iso(env.clock()))
        reason = req.param("reason")
        if reason is not None:
            if len(reason) > 512:
                raise invalid("reason must be at most 512 characters")
            key["revoked_reason"] = reason
        db.set_api_key_status(conn, key_id, "REVOKED", {k: v for k, v in key.items() if k != "status"})
    return 200, dumps(key)
