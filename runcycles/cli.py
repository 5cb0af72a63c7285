"""The ``runcycles`` command: ``runcycles serve`` runs the embedded Cycles server over HTTP; the operator
commands (``tenants``, ``keys``, ``budgets``, ``balances``, ``reservations``) live in ``_cli_ops``."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
import socket
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs

from . import _cli_ops

EXIT_OK = 0
EXIT_BAD_DATABASE = 1
EXIT_USAGE = 2
EXIT_CANNOT_LISTEN = 3
SERVE_EXIT_CODES = """exit codes:
  0  stopped (Ctrl+C or SIGTERM, after a graceful shutdown)
  1  the --db file cannot be used (damaged, not a Cycles database, unreadable); it was not modified
  2  usage error: bad options, the server extra missing, seeding refused, or --budget differing
     from the tenant budget already in --db (without --reset-budget)
  3  cannot listen on --host/--port (e.g. the port is in use); nothing was printed to stdout"""


def _parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="runcycles", description="Cycles protocol tools.")
    parser.add_argument("--version", action="version", version=f"runcycles {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the embedded Cycles server over HTTP (needs runcycles[server])",
        description="Run the embedded Cycles server (runtime and admin planes, health probes, /metrics) over HTTP.",
        epilog=SERVE_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--db",
        default=None,
        metavar="PATH",
        help="SQLite database file, created if missing; several processes may share it (default: in memory)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    serve.add_argument(
        "--port", type=int, default=7878, help="TCP port to listen on; 0 picks a free one (default: %(default)s)"
    )
    serve.add_argument(
        "--admin-key", default=None, metavar="KEY", help="the X-Admin-API-Key secret (default: a fresh one, printed)"
    )
    serve.add_argument(
        "--tenant", default=None, metavar="T", help="create tenant T if missing and print a new API key for it"
    )
    serve.add_argument(
        "--budget",
        type=int,
        default=None,
        metavar="AMOUNT",
        help="create a budget of AMOUNT (in --unit) at scope tenant:<T> if missing; a different amount "
        "already in --db is an error (exit 2) unless --reset-budget",
    )
    serve.add_argument(
        "--reset-budget",
        action="store_true",
        help="when --db holds the tenant budget with another amount, set its allocated amount to --budget "
        "(a RESET funding operation: spent, reserved and debt are kept)",
    )
    serve.add_argument(
        "--unit",
        default="USD_MICROCENTS",
        help="unit of --budget (default: %(default)s; 1 USD = 100,000,000 USD_MICROCENTS)",
    )
    serve.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=1024 * 1024,
        metavar="N",
        help="reject request bodies larger than N bytes with 413 (default: 1 MiB)",
    )
    serve.add_argument(
        "--durability",
        choices=("full", "normal"),
        default="full",
        help="full: an acknowledged write survives power loss (default); normal: it survives a process crash",
    )
    serve.add_argument(
        "--http",
        choices=("builtin", "uvicorn"),
        default="builtin",
        help="HTTP server: builtin (httptools, calls the server core directly; the fastest) or uvicorn "
        "(serving the ASGI app) (default: %(default)s)",
    )
    serve.add_argument(
        "--max-connections",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="answer 503 to connections beyond N open ones (default: %(default)s)",
    )
    serve.add_argument(
        "--keep-alive-timeout",
        type=_positive_float,
        default=5.0,
        metavar="SECONDS",
        help="close a connection idle for this long (default: %(default)s)",
    )
    _cli_ops.register(commands)
    return parser


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


class BudgetMismatchError(Exception):
    """``--budget`` differs from the tenant budget already in the database (and ``--reset-budget`` is not set)."""


@attrs.frozen
class Seeded:
    """What :func:`seed` did: the new API key (``None`` without a tenant) and a note when a budget was reset."""

    api_key: str | None
    note: str | None = None


def seed(server: Any, tenant: str | None, budget: int | None, unit: str, *, reset_budget: bool = False) -> Seeded:
    """Create the tenant (if new), its budget when asked (checking one already there) and an API key.

    A budget already at ``tenant:<T>`` in ``unit`` with another allocated amount raises
    :class:`BudgetMismatchError`, or is RESET to ``budget`` when ``reset_budget`` is true.
    """
    if tenant is None:
        return Seeded(api_key=None)
    from .local import LocalServerError

    server.create_tenant(tenant)
    note = None
    if budget is not None:
        scope = f"tenant:{tenant}"
        try:
            server.create_budget(scope, unit, budget)
        except LocalServerError as exc:
            if exc.code != "DUPLICATE_RESOURCE":
                raise
            existing = server.get_budget(scope, unit)
            if existing["allocated"] != budget:
                if not reset_budget:
                    raise BudgetMismatchError(
                        f"--budget {budget} differs from the budget already in the database: {scope} has "
                        f"allocated {existing['allocated']} {unit} (spent {existing['spent']}, reserved "
                        f"{existing['reserved']}, debt {existing['debt']}); pass --reset-budget to set it to "
                        f"{budget}, or leave out --budget to keep it"
                    ) from None
                server.fund_budget(scope, unit, "RESET", budget)
                note = f"budget {scope} reset: allocated {existing['allocated']} -> {budget} {unit}"
    return Seeded(api_key=str(server.create_api_key(tenant, name="cli")), note=note)


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening (``OSError`` when the address is busy or invalid)."""
    family, kind, proto, _name, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        if os.name != "nt":  # on Windows SO_REUSEADDR would let two servers share the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


def serve(args: argparse.Namespace) -> int:
    """Bind the port, seed, print connection details and serve HTTP until interrupted (see the exit codes)."""
    missing = [name for name in ("uvicorn", "httptools") if importlib.util.find_spec(name) is None]
    if missing:
        print(f"runcycles serve needs {' and '.join(missing)}: pip install 'runcycles[server]'", file=sys.stderr)
        return EXIT_USAGE
    from .local import LocalCyclesServer, LocalDatabaseError, LocalServerError

    if args.budget is not None and args.tenant is None:
        print("--budget needs --tenant", file=sys.stderr)
        return EXIT_USAGE
    if args.reset_budget and args.budget is None:
        print("--reset-budget needs --budget", file=sys.stderr)
        return EXIT_USAGE
    try:
        sock = listen(args.host, args.port)
    except OSError as exc:
        print(f"runcycles serve: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN
    with sock:
        try:
            server = LocalCyclesServer(
                args.db, admin_key=args.admin_key, max_body_bytes=args.max_body_bytes, durability=args.durability
            )
        except LocalDatabaseError as exc:
            print(f"runcycles serve: {exc}", file=sys.stderr)
            return EXIT_BAD_DATABASE
        except sqlite3.Error as exc:
            print(f"runcycles serve: cannot open the database {args.db}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        try:
            try:
                seeded = seed(server, args.tenant, args.budget, args.unit, reset_budget=args.reset_budget)
            except BudgetMismatchError as exc:
                print(f"runcycles serve: {exc}", file=sys.stderr)
                return EXIT_USAGE
            except LocalServerError as exc:
                print(f"runcycles serve: cannot seed: {exc}", file=sys.stderr)
                return EXIT_USAGE
            if args.http == "uvicorn":
                _run_uvicorn(args, server, seeded, sock)
            else:
                _run_builtin(args, server, seeded, sock)
        finally:
            server.close()
    return EXIT_OK


def _run_uvicorn(args: argparse.Namespace, server: Any, seeded: Seeded, sock: socket.socket) -> None:
    import uvicorn

    config = uvicorn.Config(
        server.asgi_app,
        log_level="warning",
        limit_concurrency=args.max_connections,
        timeout_keep_alive=max(1, round(args.keep_alive_timeout)),
    )
    userver = uvicorn.Server(config)

    def stop() -> None:
        userver.should_exit = True

    with _graceful_stop(stop):
        _banner(args, server, seeded, sock.getsockname()[1])
        userver.run(sockets=[sock])


def _run_builtin(args: argparse.Namespace, server: Any, seeded: Seeded, sock: socket.socket) -> None:
    from .local._front import Front, FrontLimits, StopRequest, run

    front = Front(server, FrontLimits(max_connections=args.max_connections, keep_alive_timeout=args.keep_alive_timeout))
    stop = StopRequest()
    with _graceful_stop(stop.request):
        _banner(args, server, seeded, sock.getsockname()[1])
        run(front, sock, stop)


def _banner(args: argparse.Namespace, server: Any, seeded: Seeded, port: int) -> None:
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{port}"
    print(f"Cycles server on {url}  (database: {args.db or 'in memory'})")
    print(f"  admin key (X-Admin-API-Key): {server.admin_key}")
    if seeded.note is not None:
        print(f"  {seeded.note}")
    if seeded.api_key is not None:
        print(f"  tenant {args.tenant} API key (X-Cycles-API-Key): {seeded.api_key}")
        print(f"  export CYCLES_BASE_URL={url} CYCLES_API_KEY={seeded.api_key} CYCLES_TENANT={args.tenant}")
    metrics = "  metrics: /metrics" if server.asgi_app.metrics is not None else ""
    print(f"  health: /actuator/health/liveness, /actuator/health/readiness{metrics}")
    sys.stdout.flush()


@contextlib.contextmanager
def _graceful_stop(request_stop: Callable[[], None]) -> Iterator[None]:
    """Ctrl+C and SIGTERM call ``request_stop`` (a graceful shutdown), also before the server runs.

    (uvicorn installs its own handlers and re-raises a captured signal after shutting down, which lands
    here again: harmless.)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(_signum: int, _frame: Any) -> None:
        request_stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``runcycles`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    code = _cli_ops.dispatch(args)
    if code is not None:
        return code
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
