"""runcycles: a budget guard for AI and other metered work, speaking the Cycles protocol."""

from ._version import __version__

__all__ = ["__version__"]
