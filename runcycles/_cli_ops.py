"""The operator commands of ``runcycles``: ``tenants``, ``keys``, ``budgets`` (admin key), ``balances`` and
``reservations`` (tenant API key).

:func:`register` adds their parsers to the ``runcycles`` parser; :func:`dispatch` runs one. Options come from
flags or the ``CYCLES_*`` variables. Exit codes: 0 done; 1 the server said no (its message is printed);
2 usage error (bad flags or values, missing URL or key); 3 no usable answer (server unreachable, or an answer
that does not follow the spec).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

import httpx

from . import _cli_admin, _cli_runtime
from ._cli_context import Context, Handler
from .errors import CyclesProtocolError, CyclesTransportError, ResponseFormatError

__all__ = ["EXIT_NO_ANSWER", "EXIT_OK", "EXIT_REFUSED", "EXIT_USAGE", "GROUPS", "Context", "dispatch", "register"]

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_NO_ANSWER = 3

GROUPS = ("tenants", "keys", "budgets", "balances", "reservations")
def _common(auth: str) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--base-url", help="server URL (default: $CYCLES_BASE_URL)")
    if auth == "admin":
        parent.add_argument("--admin-key", help="X-Admin-API-Key secret (default: $CYCLES_ADMIN_API_KEY)")
    else:
        parent.add_argument("--api-key", help="tenant X-Cycles-API-Key (default: $CYCLES_API_KEY)")
    parent.add_argument("--json", action="store_true", help="print JSON for scripts instead of tables")
    return parent


def register(commands: Any) -> None:
    """Add ``tenants``, ``keys``, ``budgets``, ``balances`` and ``reservations`` to the ``runcycles`` parser's
    sub-commands (``commands`` is the object ``add_subparsers()`` returned)."""
    admin, runtime = _common("admin"), _common("runtime")
    _cli_admin.register(commands, admin)
    _cli_runtime.register(commands, runtime)


def _code_of(exc: CyclesProtocolError) -> str | None:
    code = getattr(exc, "code", None)
    if isinstance(code, str):
        return code
    return exc.error_code.value if exc.error_code is not None else None


def _refused(ctx: Context, exc: CyclesProtocolError) -> int:
    code = _code_of(exc)
    if ctx.json:
        message = getattr(exc, "server_message", None) or exc.message
        body = {"error": code, "message": message, "status": exc.status, "request_id": exc.request_id}
        print(json.dumps(body), file=sys.stderr)
    else:
        print(f"runcycles: {exc.message} [{code or 'error'}, HTTP {exc.status}]", file=sys.stderr)
    return EXIT_REFUSED


def dispatch(
    args: argparse.Namespace,
    *,
    transport: httpx.BaseTransport | None = None,
    environ: Mapping[str, str] | None = None,
) -> int | None:
    """Run an operator command and return its exit code; ``None`` when ``args`` is not one of them.

    ``transport`` (tests, in-process servers) replaces the network for both clients.
    """
    if getattr(args, "command", None) not in GROUPS:
        return None
    ctx = Context(args, transport=transport, environ=environ)
    handler: Handler = args.handler
    try:
        handler(ctx)
    except CyclesProtocolError as exc:
        return _refused(ctx, exc)
    except (CyclesTransportError, ResponseFormatError) as exc:
        print(f"runcycles: no usable answer from the server: {exc}", file=sys.stderr)
        return EXIT_NO_ANSWER
    except ValueError as exc:  # UsageError and the clients' argument checks
        print(f"runcycles {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `runcycles ... | head`: the reader is gone, which is not a failure
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK
