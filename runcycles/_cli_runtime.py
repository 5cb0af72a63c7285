"""``runcycles balances`` and ``runcycles reservations list|show|release``: the tenant-key commands of the
operator CLI (over :class:`~runcycles.client.CyclesClient`)."""

from __future__ import annotations

import argparse
import itertools
import uuid
from typing import TYPE_CHECKING, Any

from . import _cli_format as fmt
from ._cli_context import Context, UsageError
from .validation import STANDARD_SUBJECT_FIELDS as _LEVELS

if TYPE_CHECKING:
    from .client import CyclesClient
    from .models import Balance, ReservationSummary
    from .response import CyclesResponse


def subject_filters(scope: str) -> dict[str, str]:
    """``tenant:acme/workspace:eng`` -> ``{"tenant": "acme", "workspace": "eng"}`` (a usage error otherwise)."""
    filters: dict[str, str] = {}
    for segment in scope.strip().strip("/").split("/"):
        level, sep, value = segment.partition(":")
        level = level.strip().lower()
        if not sep or level not in _LEVELS or not value.strip():
            raise UsageError(f"--scope segments must be level:value with level one of {', '.join(_LEVELS)}, "
                             f"got {segment!r}")
        filters[level] = value.strip()
    return filters


def _as_dict(value: Any) -> dict[str, Any]:
    from .admin import as_dict

    return as_dict(value)


def _check(response: CyclesResponse, what: str) -> Any:
    from .errors import CyclesTransportError, ResponseFormatError, error_from_response

    if response.is_transport_error:
        raise CyclesTransportError(f"{what}: {response.error_message}", response.transport_error)
    if not response.is_success:
        raise error_from_response(response, f"{what} failed")
    if response.body is None:
        raise ResponseFormatError(f"{what}: the {response.status} answer has no JSON body")
    return response.body


def _filters(ctx: Context, client: CyclesClient) -> dict[str, str]:
    """Subject filters from ``--scope``, else ``--tenant``/``CYCLES_TENANT``, else the key's own tenant."""
    if ctx.args.scope:
        return subject_filters(ctx.args.scope)
    tenant = ctx.option("--tenant", "CYCLES_TENANT", required=False)
    if tenant is None:
        # The server names the key's tenant in X-Cycles-Tenant (optional in the spec, sent by the reference one).
        probe = client.list_reservations(limit=1)
        _check(probe, "list_reservations")
        tenant = probe.cycles_tenant
    if tenant is None:
        raise UsageError("give --scope or --tenant (or set CYCLES_TENANT)")
    return {"tenant": tenant}


def _n(value: Any) -> int | None:
    return None if value is None else int(value.amount)


def _balance_row(b: Balance) -> tuple[str, ...]:
    u = b.remaining.unit
    amounts = (b.allocated, b.remaining, b.reserved, b.spent, b.debt)
    return (b.scope_path, fmt.plain(u), *(fmt.cell(_n(x), u) for x in amounts))


def balances(ctx: Context) -> None:
    """``runcycles balances [--scope S]``."""
    with ctx.runtime() as client:
        rows = list(client.iter_balances(**_filters(ctx, client)))
    if ctx.json:
        ctx.emit([_as_dict(b) for b in rows])
        return
    headers = ("SCOPE", "UNIT", "ALLOCATED", "REMAINING", "RESERVED", "SPENT", "DEBT")
    fmt.table(ctx.out, headers, [_balance_row(b) for b in rows], "no balances")


def _reservation_row(r: ReservationSummary) -> tuple[str, ...]:
    u = r.reserved.unit
    return (
        r.reservation_id,
        fmt.plain(r.status),
        r.scope_path,
        fmt.amount_text(_n(r.reserved), u),
        fmt.epoch_ms(r.created_at_ms),
        fmt.epoch_ms(r.expires_at_ms),
    )


def reservations_list(ctx: Context) -> None:
    """``runcycles reservations list``."""
    filters: dict[str, Any] = subject_filters(ctx.args.scope) if ctx.args.scope else {}
    if ctx.args.status:
        filters["status"] = ctx.args.status
    with ctx.runtime() as client:
        rows = list(itertools.islice(client.iter_reservations(**filters), ctx.args.limit))
    if ctx.json:
        ctx.emit([_as_dict(r) for r in rows])
        return
    headers = ("RESERVATION", "STATUS", "SCOPE", "RESERVED", "CREATED", "EXPIRES")
    fmt.table(ctx.out, headers, [_reservation_row(r) for r in rows], "no reservations")


def reservations_show(ctx: Context) -> None:
    """``runcycles reservations show ID``."""
    from .mappers import reservation_detail_from_wire

    with ctx.runtime() as client:
        response = client.get_reservation(ctx.args.reservation_id)
        detail = reservation_detail_from_wire(_check(response, "get_reservation"))
    if ctx.json:
        ctx.emit(_as_dict(detail))
        return
    u = detail.reserved.unit
    fmt.block(
        ctx.out,
        [
            ("reservation", detail.reservation_id),
            ("status", fmt.plain(detail.status)),
            ("scope", detail.scope_path),
            ("action", f"{detail.action.kind}/{detail.action.name}"),
            ("reserved", fmt.amount_text(_n(detail.reserved), u)),
            ("committed", fmt.amount_text(_n(detail.committed), u)),
            ("created", fmt.epoch_ms(detail.created_at_ms)),
            ("expires", fmt.epoch_ms(detail.expires_at_ms)),
            ("finalized", fmt.epoch_ms(detail.finalized_at_ms)),
            ("idempotency key", fmt.plain(detail.idempotency_key)),
        ],
    )


def reservations_release(ctx: Context) -> None:
    """``runcycles reservations release ID``: returns the held amount to the budgets."""
    from .mappers import release_response_from_wire
    from .models import ReleaseRequest

    request = ReleaseRequest(idempotency_key=ctx.args.idempotency_key or str(uuid.uuid4()), reason=ctx.args.reason)
    rid = ctx.args.reservation_id
    with ctx.runtime() as client:
        result = release_response_from_wire(_check(client.release_reservation(rid, request), "release_reservation"))
    if ctx.json:
        ctx.emit(_as_dict(result))
        return
    print(f"released {rid}: {fmt.amount_text(_n(result.released), result.released.unit)} back", file=ctx.out)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``balances`` and ``reservations``; ``common`` holds ``--base-url``, ``--api-key``, ``--json``."""
    text = "show budget balances (tenant API key)"
    p = commands.add_parser("balances", parents=[common], help=text, description=text)
    p.add_argument("--scope", help="e.g. tenant:acme/workspace:eng (default: the tenant's budgets)")
    p.add_argument("--tenant", help="the tenant (default: $CYCLES_TENANT, else the key's tenant)")
    p.set_defaults(handler=balances)

    text = "list, show and release reservations (tenant API key)"
    group = commands.add_parser("reservations", help=text, description=text).add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = group.add_parser("list", parents=[common], help="list reservations (newest first)")
    p.add_argument("--status", type=str.upper, choices=("ACTIVE", "COMMITTED", "RELEASED", "EXPIRED"),
                   help="only this status")
    p.add_argument("--scope", help="only this subject, e.g. tenant:acme/agent:bot")
    p.add_argument("--limit", type=_positive, default=100, help="at most this many rows (default 100)")
    p.set_defaults(handler=reservations_list)
    p = group.add_parser("show", parents=[common], help="show one reservation")
    p.add_argument("reservation_id", help="the reservation id")
    p.set_defaults(handler=reservations_show)
    p = group.add_parser("release", parents=[common], help="release a reservation (no charge)")
    p.add_argument("reservation_id", help="the reservation id")
    p.add_argument("--reason", help="why (e.g. [INCIDENT_FORCE_RELEASE] stuck job)")
    p.add_argument("--idempotency-key", help="makes a retry safe (default: a fresh one)")
    p.set_defaults(handler=reservations_release)
