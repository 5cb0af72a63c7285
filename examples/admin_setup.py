"""Stand up a tenant with the admin client: tenant, API key, budgets, funding, a freeze, and a look at the ledgers.

Runs with no network: the embedded server runs in this process (``LocalCyclesServer().transport()``). Against
a real server (``runcycles serve`` or any Cycles admin server) drop ``transport=`` and pass its URL and admin
key, or set ``CYCLES_BASE_URL`` and ``CYCLES_ADMIN_API_KEY``::

    python examples/admin_setup.py
"""

from __future__ import annotations

from runcycles import CyclesClient, CyclesConfig
from runcycles.admin import AdminConflictError, CyclesAdminClient, FundingOperation
from runcycles.local import LocalCyclesServer

DOLLAR = 100_000_000  # USD_MICROCENTS per dollar
USD = "USD_MICROCENTS"


def name(value: object) -> str:
    """An enum field's wire value (a value this client does not know stays a plain string)."""
    return str(getattr(value, "value", value))


def main() -> None:
    server = LocalCyclesServer()  # in memory; the admin key is generated
    with CyclesAdminClient("http://cycles.local", server.admin_key, transport=server.transport()) as admin:
        tenant = admin.create_tenant("acme", "Acme Corp", default_commit_overage_policy="REJECT")
        print(f"tenant {tenant.tenant_id}: {name(tenant.status)}")

        key = admin.create_api_key("acme", "agents", permissions=["reservations:create", "reservations:commit",
                                                                  "reservations:release", "balances:read"])
        print(f"API key {key.key_prefix}... for {key.tenant_id} (the secret is shown once: store it)")

        admin.create_budget("tenant:acme", USD, 10 * DOLLAR)
        admin.create_budget("tenant:acme/workspace:research", USD, 2 * DOLLAR, overdraft_limit=DOLLAR // 10)
        top_up = admin.fund_budget("tenant:acme", USD, FundingOperation.CREDIT, 5 * DOLLAR,
                                   idempotency_key="2026-12-topup", reason="December top-up")
        print(f"credited: allocated ${top_up.previous_allocated.amount / DOLLAR:.2f}"
              f" -> ${top_up.new_allocated.amount / DOLLAR:.2f}")

        admin.freeze_budget("tenant:acme/workspace:research", USD, reason="runaway agent")
        try:
            admin.fund_budget("tenant:acme/workspace:research", USD, "CREDIT", DOLLAR)
        except AdminConflictError as refused:
            print(f"refused while frozen: {refused.code}")
        admin.unfreeze_budget("tenant:acme/workspace:research", USD)

        for ledger in admin.iter_budgets(tenant_id="acme"):
            print(f"{ledger.scope:32} {name(ledger.status):7} remaining ${ledger.remaining.amount / DOLLAR:.2f}")

    # The key works on the runtime plane straight away.
    config = CyclesConfig("http://cycles.local", key.key_secret, journal_enabled=False)
    with CyclesClient(config, transport=server.transport()) as client:
        balances = list(client.iter_balances(tenant="acme"))
    print(f"the agents' key sees {len(balances)} budgets")
    server.close()


if __name__ == "__main__":
    main()
