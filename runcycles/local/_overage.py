"""Charging spend to budgets under a commit overage policy: the arithmetic shared by commit and events.

A commit charges ``actual`` against budgets that already hold ``held`` (its reservation); an event charges
``actual`` with nothing held. The overage (``actual - held``) follows the policy:

* ``REJECT``: refused (a commit refuses any overage, an event one that a scope cannot fund).
* ``ALLOW_IF_AVAILABLE``: capped to what every scope can still fund; scopes that could not fund it all are
  marked over limit. Never debt, never refused.
* ``ALLOW_WITH_OVERDRAFT``: each scope funds what it can from ``remaining`` (charged to ``spent``) and only
  the unfunded part becomes ``debt``, refused when ``debt + overage`` would pass a non-zero
  ``overdraft_limit``. A scope whose limit is 0 permits no overdraft and behaves as ``ALLOW_IF_AVAILABLE``
  (the spec's normative OVERDRAFT LIMIT block): the overage is capped to what it can fund and it is marked
  over limit, so spend that already happened is recorded rather than refused.

Refusals are checked per scope in scope order, the first failing scope wins (as for reserve), and happen
before any mutation. A commit is accepted on a FROZEN budget (freezing stops new reservations; the spend of
an existing one already happened); an event, which is new spend, is not.
"""

from __future__ import annotations

from ._base import LocalServerError
from ._ledger import Budget

REJECT = "REJECT"
ALLOW_IF_AVAILABLE = "ALLOW_IF_AVAILABLE"
ALLOW_WITH_OVERDRAFT = "ALLOW_WITH_OVERDRAFT"


def charge(budgets: list[Budget], held: int, actual: int, policy: str, *, commit: bool) -> int:
    """Charge ``actual`` on every budget (releasing ``held``) under ``policy``; returns the charged amount.

    Raises :class:`LocalServerError` (409) before touching any budget when the charge is refused.
    """
    overage = max(0, actual - held)
    # ``remaining`` already excludes ``held``; it is what a scope can still fund of the overage.
    short = [b for b in budgets if b.remaining < overage] if overage > 0 else []
    if policy == ALLOW_IF_AVAILABLE:
        capped = short
    elif policy == ALLOW_WITH_OVERDRAFT:
        capped = [b for b in short if b.overdraft_limit == 0]
    else:
        capped = []
    covered = min([overage, *(max(0, b.remaining) for b in capped)])
    for budget in budgets:
        refusal = _refusal(budget, overage, covered, policy, commit=commit)
        if refusal is not None:
            raise refusal
    charged = min(actual, held) + covered
    for budget in budgets:
        funded = min(covered, max(0, budget.remaining))
        budget.reserved -= held
        budget.spent += charged - covered + funded
        budget.debt += covered - funded
        # Only this charge's own shortfall enters the over-limit state: a debt left behind by lowering the
        # limit stays DEBT_OUTSTANDING (see Budget.reconcile).
        if budget in capped or (covered > funded and budget.debt > budget.overdraft_limit):
            budget.is_over_limit = True
    return charged


def _refusal(budget: Budget, overage: int, covered: int, policy: str, *, commit: bool) -> LocalServerError | None:
    """Why ``budget`` refuses this charge, if it does."""
    scope = budget.scope
    if budget.status == "CLOSED" or (budget.status == "FROZEN" and not commit):
        return LocalServerError(409, f"BUDGET_{budget.status}", f"Budget is {budget.status}: {scope}")
    if overage == 0:
        return None
    if policy == REJECT and commit:
        return LocalServerError(409, "BUDGET_EXCEEDED", f"Actual exceeds the reserved amount for scope {scope}")
    if policy == REJECT and budget.remaining < overage:
        return LocalServerError(409, "BUDGET_EXCEEDED", f"Insufficient remaining budget for scope {scope}")
    if (
        policy == ALLOW_WITH_OVERDRAFT
        and budget.overdraft_limit > 0
        and budget.remaining < covered
        and budget.debt + covered > budget.overdraft_limit
    ):
        return LocalServerError(
            409, "OVERDRAFT_LIMIT_EXCEEDED", f"Overdraft limit would be exceeded for scope {scope}"
        )
    return None
