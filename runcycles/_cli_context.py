"""What every operator command shares: its `Context` (arguments, output, clients built on first use), the
usage error, and the ``--unit`` option. The bottom of the CLI: `_cli_ops` (parsers, dispatch, exit codes),
`_cli_admin` and `_cli_runtime` (the commands) import it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TextIO

import httpx

if TYPE_CHECKING:
    from .admin import CyclesAdminClient
    from .client import CyclesClient

__all__ = ["UNITS", "Context", "Handler", "UsageError", "add_unit", "unit_arg"]

UNITS = ("USD_MICROCENTS", "TOKENS", "CREDITS", "RISK_POINTS")

Handler = Callable[["Context"], None]


class UsageError(ValueError):
    """A command line that cannot run (exit 2)."""


class Context:
    """What a command needs: its arguments, where to print, and the clients (built on first use)."""

    def __init__(
        self,
        args: argparse.Namespace,
        *,
        transport: httpx.BaseTransport | None = None,
        environ: Mapping[str, str] | None = None,
        out: TextIO | None = None,
    ) -> None:
        self.args = args
        self.json: bool = bool(getattr(args, "json", False))
        self.out = out or sys.stdout
        self._transport = transport
        self._environ = os.environ if environ is None else environ

    def option(self, flag: str, variable: str, *, required: bool = True) -> str | None:
        """The flag's value, else the variable's; a usage error names both when required and missing."""
        value = getattr(self.args, flag.lstrip("-").replace("-", "_"), None) or self._environ.get(variable) or None
        if value is None and required:
            raise UsageError(f"{flag} or {variable} is required")
        return value

    def admin(self) -> CyclesAdminClient:
        """The admin client (``--base-url``/``CYCLES_BASE_URL``, ``--admin-key``/``CYCLES_ADMIN_API_KEY``)."""
        from .admin import CyclesAdminClient

        base_url = self.option("--base-url", "CYCLES_BASE_URL")
        admin_key = self.option("--admin-key", "CYCLES_ADMIN_API_KEY")
        return CyclesAdminClient(base_url, admin_key, transport=self._transport)

    def runtime(self) -> CyclesClient:
        """The runtime client (``--base-url``, ``--api-key``/``CYCLES_API_KEY``); no journal."""
        from .client import CyclesClient
        from .config import CyclesConfig

        config = CyclesConfig(
            base_url=str(self.option("--base-url", "CYCLES_BASE_URL")),
            api_key=str(self.option("--api-key", "CYCLES_API_KEY")),
            journal_enabled=False,
        )
        return CyclesClient(config, transport=self._transport)

    def emit(self, value: Any) -> None:
        """Print ``value`` as JSON."""
        from ._cli_format import emit_json

        emit_json(self.out, value)


def unit_arg(text: str) -> str:
    """``--unit`` values, case-insensitive."""
    value = text.strip().upper()
    if value not in UNITS:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(UNITS)}")
    return value


def add_unit(parser: argparse.ArgumentParser) -> None:
    """The ``--unit`` option (default USD_MICROCENTS)."""
    parser.add_argument(
        "--unit", type=unit_arg, default="USD_MICROCENTS", help="budget unit (default: USD_MICROCENTS)"
    )
