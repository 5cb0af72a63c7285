"""The embedded Cycles server: SQLite ledger, runtime and admin planes, in-process transports, ASGI app.

Quick start::

    from runcycles.local import LocalCyclesServer

    server = LocalCyclesServer()                      # or LocalCyclesServer("cycles.db")
    server.create_tenant("acme")
    key = server.create_api_key("acme")              # the secret; stored only as a salted SHA-256
    server.create_budget("tenant:acme", "USD_MICROCENTS", 100_000_000)
    client = httpx.Client(transport=server.transport(), base_url="http://local",
                          headers={"X-Cycles-API-Key": key})

Network mode: ``runcycles serve [--db PATH] [--port 7878]`` (needs ``runcycles[server]``), or
``uvicorn.run(server.asgi_app)``.

Layout: ``_ledger_store`` (schema, connections, transactions), ``_ledger`` (row types, SQL operations),
``_validate`` (strict request schemas), ``_runtime_shared`` / ``_reservation_writes`` / ``_runtime_reads``
(runtime-plane handlers), ``_admin_schemas`` / ``_admin_tenants`` / ``_admin_keys`` / ``_admin_budgets``
(admin-plane handlers), ``_access`` (permissions, scope filters), ``_overage`` (charging under an overage
policy), ``_http`` (routing,
auth, correlation, error bodies: the pure ``handle`` core), ``_transports`` / ``_asgi`` (thin shells),
``_ops`` / ``_metrics`` (health probes, Prometheus), ``server`` (``LocalCyclesServer``).

Behaviour where the specs leave room (documented choices, most following the reference server):

* Budgets may carry ``caps`` (local extension, on ``POST /v1/admin/budgets``, ``PATCH`` and
  ``create_budget(caps=...)``): a reserve or decide whose deepest budgeted scope has caps answers
  ``ALLOW_WITH_CAPS`` with them. ``close_budget`` (Python only) makes BUDGET_CLOSED reachable without a
  tenant close.
* Budget scopes are tenant-rooted (``tenant:<id>[/level:value...]`` in canonical order, lower-cased);
  subject values are lower-cased for scope derivation; ``Balance.scope`` is the leaf segment and
  ``scope_path`` the full id; balances and ledgers always carry every amount field.
* Reserve checks per budgeted scope in canonical order, first failure wins: FROZEN / CLOSED, over-limit
  (OVERDRAFT_LIMIT_EXCEEDED), ``debt > 0`` with ``overdraft_limit == 0`` (DEBT_OUTSTANDING), remaining.
  Dry runs and decide report these as ``200 DENY`` with ``reason_code`` (BUDGET_NOT_FOUND without budget).
* Commit over the estimate (``_overage``, aligned with the reference ledger): REJECT -> 409 BUDGET_EXCEEDED
  (the reservation stays ACTIVE); ALLOW_IF_AVAILABLE caps the overage to the smallest remaining and flags
  scopes that could not cover it ``is_over_limit``; ALLOW_WITH_OVERDRAFT charges ``spent`` with what each
  scope can still fund and only the unfunded part becomes ``debt`` (409 OVERDRAFT_LIMIT_EXCEEDED if
  ``debt + overage > overdraft_limit`` on a short scope); on a scope whose ``overdraft_limit`` is 0 it
  behaves as ALLOW_IF_AVAILABLE (capped, ``is_over_limit``), never 409. Events likewise with the whole
  actual. Refusals name the first failing scope in scope order. A FROZEN budget refuses new reservations,
  events and funding but accepts commits of existing reservations (freezeBudget's text; the spend
  happened) and releases; a CLOSED one refuses commits too.
* Over HTTP (the ASGI app): ``/actuator/health``, ``/actuator/health/liveness`` and
  ``/actuator/health/readiness`` answer ``{"status":"UP"}`` without credentials (readiness and the
  aggregate check the database: 503 ``DOWN``); ``/metrics`` serves Prometheus metrics from a registry per
  server when ``prometheus-client`` is installed.
* Funding: CREDIT/DEBIT/RESET/RESET_SPENT as the admin spec; REPAY_DEBT lowers debt (capped at it).
  Funding and limit changes leave the over-limit state once ``debt <= overdraft_limit``; only the runtime
  enters it.
* Expiry: commit/release until ``expires_at_ms + grace``, extend until ``expires_at_ms``; reservations past
  grace are expired (hold refunded, status EXPIRED, GET -> 410) lazily on access, or by
  ``sweep_expired()``. ``max_reservation_extensions`` and TTL defaults are read from the tenant's current
  settings.
* Idempotency per (tenant, endpoint, key); successes only are stored (status and body); the payload is
  compared as canonical JSON of the defaults-filled request; live and dry-run reserves share one key space.
  Replays recompute ``remaining_ttl_ms`` for create/extend (0 once the reservation is not ACTIVE).
* Tenants: SUSPENDED keys get 401 (as the reference server). CLOSED releases open reservations (reason
  ``tenant_closed``) and closes budgets, but keeps keys valid so clients see the typed 409 TENANT_CLOSED
  (dry run / decide: DENY) instead of a bare 401; replays of pre-close successes still answer.
* API keys: ``permissions`` (admin spec enum; unknown names are a 400; absent means the spec's default
  tenant set) and ``scope_filter`` are enforced: runtime endpoints answer 403 FORBIDDEN, the dual-auth
  budget endpoints 403 INSUFFICIENT_PERMISSIONS for a missing permission and 403 FORBIDDEN outside the
  filter; lists only show what the filter covers (see ``_access``). ``POST /v1/decide`` needs
  ``reservations:create`` and ``POST /v1/events`` ``reservations:commit``; GET of one reservation
  ``reservations:list``.
* Limits: request bodies over ``max_body_bytes`` (default 1 MiB) get 413; JSON nested deeper than 64,
  non-finite numbers and lone surrogates are a 400; pagination cursors are signed with a per-database secret.
* LIMIT_EXCEEDED never occurs (no rate limiting); INTERNAL_ERROR only for an unexpected failure (logged on
  ``runcycles.local``, never with request secrets).
"""

from ._base import LocalServerError
from ._sqlite import LocalDatabaseError
from .server import LocalCyclesServer

__all__ = ["LocalCyclesServer", "LocalDatabaseError", "LocalServerError"]
