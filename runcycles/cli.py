"""The ``runcycles`` command: ``runcycles serve`` runs the embedded Cycles server over HTTP."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runcycles", description="Cycles protocol tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the embedded Cycles server (needs runcycles[server])")
    serve.add_argument("--db", default=None, help="SQLite database file (default: in memory)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=7878)
    serve.add_argument("--admin-key", default=None, help="X-Admin-API-Key secret (default: generated)")
    serve.add_argument("--tenant", default=None, help="seed this tenant and print an API key for it")
    serve.add_argument("--budget", type=int, default=None, help="seed a budget of this amount at tenant:<T>")
    serve.add_argument("--unit", default="USD_MICROCENTS")
    serve.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=1024 * 1024,
        help="reject request bodies larger than this with 413 (default: 1 MiB)",
    )
    serve.add_argument(
        "--durability",
        choices=("full", "normal"),
        default="full",
        help="full: an acknowledged write survives power loss (default); normal: it survives a process crash",
    )
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def seed(server: Any, tenant: str | None, budget: int | None, unit: str) -> str | None:
    """Create the tenant (if new), an API key and, when asked, the tenant budget; returns the key."""
    if tenant is None:
        return None
    from .local import LocalServerError

    server.create_tenant(tenant)
    if budget is not None:
        try:
            server.create_budget(f"tenant:{tenant}", unit, budget)
        except LocalServerError as exc:
            if exc.code != "DUPLICATE_RESOURCE":
                raise
    return str(server.create_api_key(tenant, name="cli"))


def serve(args: argparse.Namespace) -> int:
    """Seed, print connection details and run uvicorn until interrupted."""
    try:
        import uvicorn
    except ImportError:
        print("runcycles serve needs uvicorn: pip install 'runcycles[server]'", file=sys.stderr)
        return 2
    from .local import LocalCyclesServer, LocalDatabaseError, LocalServerError

    if args.budget is not None and args.tenant is None:
        print("--budget needs --tenant", file=sys.stderr)
        return 2
    try:
        server = LocalCyclesServer(
            args.db, admin_key=args.admin_key, max_body_bytes=args.max_body_bytes, durability=args.durability
        )
    except LocalDatabaseError as exc:
        print(f"runcycles serve: {exc}", file=sys.stderr)
        return 1
    try:
        try:
            api_key = seed(server, args.tenant, args.budget, args.unit)
        except LocalServerError as exc:
            print(f"cannot seed: {exc}", file=sys.stderr)
            return 2
        print(f"Cycles server on http://{args.host}:{args.port}  (database: {args.db or 'in memory'})")
        print(f"  admin key (X-Admin-API-Key): {server.admin_key}")
        if api_key is not None:
            print(f"  tenant {args.tenant} API key (X-Cycles-API-Key): {api_key}")
            print(f"  export CYCLES_BASE_URL=http://{args.host}:{args.port} CYCLES_API_KEY={api_key}")
        sys.stdout.flush()
        uvicorn.run(server.asgi_app, host=args.host, port=args.port, log_level="warning")
    finally:
        server.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``runcycles`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
