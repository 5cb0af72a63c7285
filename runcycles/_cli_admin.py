"""``runcycles tenants|keys|budgets ...``: the admin-key commands of the operator CLI (over
:class:`~runcycles.admin.CyclesAdminClient`)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from . import _cli_format as fmt
from ._cli_context import Context, UsageError, add_unit

if TYPE_CHECKING:
    from .admin import ApiKey, BudgetFunding, BudgetLedger, Tenant

_FUNDING = ("credit", "debit", "reset", "reset-spent", "repay-debt")
_POLICIES = ("REJECT", "ALLOW_IF_AVAILABLE", "ALLOW_WITH_OVERDRAFT")


def _metadata(pairs: list[str] | None) -> dict[str, str] | None:
    if not pairs:
        return None
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--metadata takes KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError("must be true or false")


def _amount(ctx: Context, text: str | None, name: str) -> int | None:
    return None if text is None else fmt.parse_amount(text, ctx.args.unit, name)


def _as_dicts(items: Any) -> list[dict[str, Any]]:
    from .admin import as_dict

    return [as_dict(item) for item in items]


# --- tenants ---------------------------------------------------------------------------------------------


def _tenant_block(ctx: Context, tenant: Tenant) -> None:
    fmt.block(
        ctx.out,
        [
            ("tenant", tenant.tenant_id),
            ("name", tenant.name),
            ("status", fmt.plain(tenant.status)),
            ("overage policy", fmt.plain(tenant.default_commit_overage_policy)),
            ("default ttl ms", fmt.plain(tenant.default_reservation_ttl_ms)),
            ("max ttl ms", fmt.plain(tenant.max_reservation_ttl_ms)),
            ("max extensions", fmt.plain(tenant.max_reservation_extensions)),
            ("created", tenant.created_at),
            *([("closed", tenant.closed_at)] if tenant.closed_at else []),
        ],
    )


def tenants_list(ctx: Context) -> None:
    """``runcycles tenants list``."""
    with ctx.admin() as admin:
        tenants = list(admin.iter_tenants(status=ctx.args.status, parent_tenant_id=ctx.args.parent))
    if ctx.json:
        ctx.emit(_as_dicts(tenants))
        return
    rows = [(t.tenant_id, t.name, fmt.plain(t.status), t.created_at) for t in tenants]
    fmt.table(ctx.out, ("TENANT", "NAME", "STATUS", "CREATED"), rows, "no tenants")


def tenants_create(ctx: Context) -> None:
    """``runcycles tenants create``."""
    a = ctx.args
    options = {
        "parent_tenant_id": a.parent,
        "metadata": _metadata(a.metadata),
        "default_commit_overage_policy": a.overage_policy,
        "default_reservation_ttl_ms": a.default_ttl_ms,
        "max_reservation_ttl_ms": a.max_ttl_ms,
        "max_reservation_extensions": a.max_extensions,
    }
    with ctx.admin() as admin:
        tenant = admin.create_tenant(a.tenant_id, a.name, **{k: v for k, v in options.items() if v is not None})
    if ctx.json:
        ctx.emit(_as_dicts([tenant])[0])
    else:
        _tenant_block(ctx, tenant)


def tenants_close(ctx: Context) -> None:
    """``runcycles tenants close``."""
    with ctx.admin() as admin:
        tenant = admin.close_tenant(ctx.args.tenant_id)
    if ctx.json:
        ctx.emit(_as_dicts([tenant])[0])
    else:
        print(f"closed tenant {tenant.tenant_id}: its budgets are closed, its open reservations released", file=ctx.out)


# --- API keys --------------------------------------------------------------------------------------------


def keys_create(ctx: Context) -> None:
    """``runcycles keys create``: prints the secret, once."""
    a = ctx.args
    options: dict[str, Any] = {
        "description": a.description,
        "permissions": a.permission,
        "scope_filter": a.scope_filter,
        "expires_at": a.expires_at,
    }
    with ctx.admin() as admin:
        key = admin.create_api_key(a.tenant, a.name, **{k: v for k, v in options.items() if v is not None})
    if ctx.json:
        ctx.emit(_as_dicts([key])[0])
        return
    fmt.block(
        ctx.out,
        [
            ("key id", key.key_id),
            ("tenant", key.tenant_id),
            ("prefix", key.key_prefix),
            ("permissions", fmt.plain(key.permissions)),
            ("expires", key.expires_at),
            ("secret", key.key_secret),
        ],
    )
    print("The secret is shown only now: store it (e.g. export CYCLES_API_KEY=...).", file=ctx.out)


def _key_row(key: ApiKey) -> tuple[str, ...]:
    return (key.key_id, key.tenant_id, key.name or "-", key.key_prefix, fmt.plain(key.status), key.expires_at)


def keys_list(ctx: Context) -> None:
    """``runcycles keys list`` (never secrets)."""
    with ctx.admin() as admin:
        keys = list(admin.iter_api_keys(tenant_id=ctx.args.tenant, status=ctx.args.status))
    if ctx.json:
        ctx.emit(_as_dicts(keys))
        return
    headers = ("KEY ID", "TENANT", "NAME", "PREFIX", "STATUS", "EXPIRES")
    fmt.table(ctx.out, headers, [_key_row(k) for k in keys], "no API keys")


def keys_revoke(ctx: Context) -> None:
    """``runcycles keys revoke``."""
    with ctx.admin() as admin:
        key = admin.revoke_api_key(ctx.args.key_id, reason=ctx.args.reason)
    if ctx.json:
        ctx.emit(_as_dicts([key])[0])
    else:
        print(f"revoked {key.key_id} ({key.key_prefix}...) of tenant {key.tenant_id}", file=ctx.out)


# --- budgets ---------------------------------------------------------------------------------------------


def _n(value: Any) -> int | None:
    return None if value is None else int(value.amount)


def _ledger_block(ctx: Context, b: BudgetLedger) -> None:
    u = b.unit
    fmt.block(
        ctx.out,
        [
            ("scope", b.scope),
            ("tenant", fmt.plain(b.tenant_id)),
            ("unit", fmt.plain(u)),
            ("status", fmt.plain(b.status)),
            ("allocated", fmt.amount_text(_n(b.allocated), u)),
            ("remaining", fmt.amount_text(_n(b.remaining), u)),
            ("reserved", fmt.amount_text(_n(b.reserved), u)),
            ("spent", fmt.amount_text(_n(b.spent), u)),
            ("debt", fmt.amount_text(_n(b.debt), u)),
            ("overdraft limit", fmt.amount_text(_n(b.overdraft_limit), u)),
            ("over limit", "yes" if b.is_over_limit else "no"),
            ("overage policy", fmt.plain(b.commit_overage_policy)),
            ("updated", fmt.plain(b.updated_at or b.created_at)),
        ],
    )


def _ledger_row(b: BudgetLedger) -> tuple[str, ...]:
    u = b.unit
    amounts = (b.allocated, b.remaining, b.reserved, b.spent, b.debt)
    return (b.scope, fmt.plain(u), fmt.plain(b.status), *(fmt.cell(_n(x), u) for x in amounts))


def _ledger_out(ctx: Context, ledger: BudgetLedger, message: str) -> None:
    if ctx.json:
        ctx.emit(_as_dicts([ledger])[0])
        return
    print(message, file=ctx.out)
    _ledger_block(ctx, ledger)


def budgets_list(ctx: Context) -> None:
    """``runcycles budgets list``."""
    a = ctx.args
    filters = {
        "tenant_id": a.tenant,
        "scope_prefix": a.scope_prefix,
        "unit": a.unit,
        "status": a.status,
        "over_limit": a.over_limit,
        "has_debt": a.has_debt,
    }
    with ctx.admin() as admin:
        ledgers = list(admin.iter_budgets(**filters))
    if ctx.json:
        ctx.emit(_as_dicts(ledgers))
        return
    headers = ("SCOPE", "UNIT", "STATUS", "ALLOCATED", "REMAINING", "RESERVED", "SPENT", "DEBT")
    fmt.table(ctx.out, headers, [_ledger_row(b) for b in ledgers], "no budgets")


def budgets_show(ctx: Context) -> None:
    """``runcycles budgets show``."""
    with ctx.admin() as admin:
        ledger = admin.get_budget(ctx.args.scope, ctx.args.unit)
    if ctx.json:
        ctx.emit(_as_dicts([ledger])[0])
    else:
        _ledger_block(ctx, ledger)


def budgets_create(ctx: Context) -> None:
    """``runcycles budgets create``."""
    a = ctx.args
    options = {
        "tenant_id": a.tenant,
        "overdraft_limit": _amount(ctx, a.overdraft_limit, "--overdraft-limit"),
        "commit_overage_policy": a.overage_policy,
    }
    with ctx.admin() as admin:
        ledger = admin.create_budget(
            a.scope, a.unit, _amount(ctx, a.amount, "amount"), **{k: v for k, v in options.items() if v is not None}
        )
    _ledger_out(ctx, ledger, f"created budget {ledger.scope} ({fmt.plain(ledger.unit)})")


def _change(before: Any, after: Any, unit: object) -> str:
    if before is None or after is None:
        return fmt.amount_text(_n(after), unit)
    old, new = int(before.amount), int(after.amount)
    return fmt.amount_text(new, unit) if old == new else f"{fmt.amount_text(old, unit)} -> {fmt.amount_text(new, unit)}"


def budgets_fund(ctx: Context) -> None:
    """``runcycles budgets fund SCOPE OPERATION AMOUNT``."""
    a = ctx.args
    operation = a.operation.upper().replace("-", "_")
    options = {
        "tenant_id": a.tenant,
        "spent": _amount(ctx, a.spent, "--spent"),
        "reason": a.reason,
        "idempotency_key": a.idempotency_key,
    }
    with ctx.admin() as admin:
        result: BudgetFunding = admin.fund_budget(
            a.scope,
            a.unit,
            operation,
            _amount(ctx, a.amount, "amount"),
            **{k: v for k, v in options.items() if v is not None},
        )
    if ctx.json:
        ctx.emit(_as_dicts([result])[0])
        return
    u = a.unit
    print(f"{fmt.plain(result.operation)} on {a.scope} ({u})", file=ctx.out)
    fmt.block(
        ctx.out,
        [
            ("allocated", _change(result.previous_allocated, result.new_allocated, u)),
            ("remaining", _change(result.previous_remaining, result.new_remaining, u)),
            ("spent", _change(result.previous_spent, result.new_spent, u)),
            ("debt", _change(result.previous_debt, result.new_debt, u)),
        ],
    )


def _budgets_freeze(ctx: Context, frozen: bool) -> None:
    with ctx.admin() as admin:
        call = admin.freeze_budget if frozen else admin.unfreeze_budget
        ledger = call(ctx.args.scope, ctx.args.unit, reason=ctx.args.reason)
    _ledger_out(ctx, ledger, f"{'froze' if frozen else 'unfroze'} budget {ledger.scope} ({fmt.plain(ledger.unit)})")


def budgets_freeze(ctx: Context) -> None:
    """``runcycles budgets freeze``."""
    _budgets_freeze(ctx, True)


def budgets_unfreeze(ctx: Context) -> None:
    """``runcycles budgets unfreeze``."""
    _budgets_freeze(ctx, False)


# --- parsers ---------------------------------------------------------------------------------------------


def _group(commands: Any, name: str, help_text: str) -> Any:
    parser = commands.add_parser(name, help=help_text, description=help_text)
    return parser.add_subparsers(dest="action", required=True, metavar="ACTION")


def _action(group: Any, name: str, handler: Any, help_text: str, parent: argparse.ArgumentParser) -> Any:
    parser = group.add_parser(name, parents=[parent], help=help_text, description=help_text)
    parser.set_defaults(handler=handler)
    return parser


def _register_tenants(commands: Any, common: argparse.ArgumentParser) -> None:
    group = _group(commands, "tenants", "list, create and close tenants (admin key)")
    p = _action(group, "list", tenants_list, "list tenants", common)
    p.add_argument("--status", type=str.upper, choices=("ACTIVE", "SUSPENDED", "CLOSED"), help="only this status")
    p.add_argument("--parent", help="only children of this tenant")
    p = _action(group, "create", tenants_create, "create a tenant (an identical one is returned as is)", common)
    p.add_argument("tenant_id", help="3-64 characters of a-z, 0-9 and '-'")
    p.add_argument("--name", help="display name (default: the id)")
    p.add_argument("--parent", help="parent tenant id")
    p.add_argument("--overage-policy", type=str.upper, choices=_POLICIES, help="default commit overage policy")
    p.add_argument("--default-ttl-ms", type=int, help="default reservation TTL (1000-86400000 ms)")
    p.add_argument("--max-ttl-ms", type=int, help="maximum reservation TTL (1000-86400000 ms)")
    p.add_argument("--max-extensions", type=int, help="maximum TTL extensions per reservation")
    p.add_argument("--metadata", action="append", metavar="KEY=VALUE", help="metadata entry (repeatable)")
    p = _action(group, "close", tenants_close, "close a tenant for good (irreversible)", common)
    p.add_argument("tenant_id", help="the tenant to close")


def _register_keys(commands: Any, common: argparse.ArgumentParser) -> None:
    group = _group(commands, "keys", "create, list and revoke tenant API keys (admin key)")
    p = _action(group, "create", keys_create, "create an API key and print its secret once", common)
    p.add_argument("--tenant", required=True, help="the tenant the key belongs to")
    p.add_argument("--name", default="cli", help="key name (default: cli)")
    p.add_argument("--description", help="free text")
    p.add_argument("--permission", action="append", help="a permission, e.g. reservations:create (repeatable; "
                   "default: the server's tenant set)")
    p.add_argument("--scope-filter", action="append", help="restrict the key to a scope (repeatable)")
    p.add_argument("--expires-at", help="ISO 8601 expiry, e.g. 2027-01-01T00:00:00Z")
    p = _action(group, "list", keys_list, "list API keys (never their secrets)", common)
    p.add_argument("--tenant", help="only this tenant's keys")
    p.add_argument("--status", type=str.upper, choices=("ACTIVE", "REVOKED", "EXPIRED"), help="only this status")
    p = _action(group, "revoke", keys_revoke, "revoke an API key permanently", common)
    p.add_argument("key_id", help="the key id (see keys list)")
    p.add_argument("--reason", help="why (kept with the key)")


def _register_budgets(commands: Any, common: argparse.ArgumentParser) -> None:
    group = _group(commands, "budgets", "list, show, create, fund, freeze and unfreeze budgets (admin key)")
    p = _action(group, "list", budgets_list, "list budgets", common)
    p.add_argument("--tenant", help="only this tenant's budgets (default: all tenants)")
    p.add_argument("--scope-prefix", help="only scopes starting with this, e.g. tenant:acme/workspace:eng")
    p.add_argument("--unit", type=str.upper, choices=("USD_MICROCENTS", "TOKENS", "CREDITS", "RISK_POINTS"),
                   help="only this unit")
    p.add_argument("--status", type=str.upper, choices=("ACTIVE", "FROZEN", "CLOSED"), help="only this status")
    p.add_argument("--over-limit", type=_bool, metavar="true|false", help="only budgets (not) over their limit")
    p.add_argument("--has-debt", type=_bool, metavar="true|false", help="only budgets with (without) debt")
    p = _action(group, "show", budgets_show, "show one budget", common)
    p.add_argument("scope", help="exact scope, e.g. tenant:acme")
    add_unit(p)
    p = _action(group, "create", budgets_create, "create a budget", common)
    p.add_argument("scope", help="tenant:<id>[/workspace:<w>/...]")
    p.add_argument("amount", help="allocated amount in the unit (or dollars like $5 for USD_MICROCENTS)")
    add_unit(p)
    p.add_argument("--tenant", help="owning tenant (default: from the scope)")
    p.add_argument("--overdraft-limit", help="maximum debt (default 0)")
    p.add_argument("--overage-policy", type=str.upper, choices=_POLICIES, help="commit overage policy")
    p = _action(group, "fund", budgets_fund, "credit, debit, reset, reset-spent or repay-debt", common)
    p.add_argument("scope", help="the budget's scope")
    p.add_argument("operation", type=str.lower, choices=_FUNDING, help="funding operation")
    p.add_argument("amount", help="amount in the unit (or dollars like $5 for USD_MICROCENTS)")
    add_unit(p)
    p.add_argument("--spent", help="spent after a reset-spent (default 0)")
    p.add_argument("--reason", help="why (audit trail)")
    p.add_argument("--idempotency-key", help="makes a retry safe (default: a fresh one)")
    p.add_argument("--tenant", help="owning tenant (default: from the scope)")
    for name, handler, text in (
        ("freeze", budgets_freeze, "freeze a budget: no reservations or funding until unfrozen"),
        ("unfreeze", budgets_unfreeze, "unfreeze a frozen budget"),
    ):
        p = _action(group, name, handler, text, common)
        p.add_argument("scope", help="the budget's scope")
        add_unit(p)
        p.add_argument("--reason", help="why (audit trail)")


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``tenants``, ``keys`` and ``budgets``; ``common`` holds ``--base-url``, ``--admin-key``, ``--json``."""
    _register_tenants(commands, common)
    _register_keys(commands, common)
    _register_budgets(commands, common)
