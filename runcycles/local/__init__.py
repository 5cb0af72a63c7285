"""The embedded Cycles server: SQLite ledger, runtime and admin planes, in-process transports, ASGI app."""

from ._base import LocalServerError
from .server import LocalCyclesServer

__all__ = ["LocalCyclesServer", "LocalServerError"]
