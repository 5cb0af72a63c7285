"""Spare httpcore a failed ``import sniffio`` on every async request.

httpcore (1.x) asks which async library runs by trying ``import sniffio`` each time it sets up a lock, an
event or a cancellation shield, which is two or three times per request. anyio 4 no longer installs sniffio,
and Python does not remember a failed import, so without it every attempt searches the whole ``sys.path``
again (about 0.1 ms each). When sniffio is not installed, httpcore's answer is "asyncio" either way; this
records the absence once, as ``sys.modules["sniffio"] = None``, which makes later attempts fail at once with
the same ``ImportError``. Nothing changes when sniffio is installed (trio depends on it, so trio users always
have it): then the entry is never set.
"""

from __future__ import annotations

import importlib.util
import sys

__all__ = ["remember_missing_sniffio"]

_checked = False


def remember_missing_sniffio() -> None:
    """Record once per process that sniffio is not installed (a no-op when it is, or when already imported)."""
    global _checked
    if _checked:
        return
    _checked = True
    if "sniffio" in sys.modules:
        return
    try:
        missing = importlib.util.find_spec("sniffio") is None
    except ModuleNotFoundError:
        missing = True
    except (ImportError, ValueError):  # an import system we do not understand: leave it alone
        return
    if missing:
        sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]
