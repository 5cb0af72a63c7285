"""`AdminConfig`: where the admin server is and the admin key, from arguments or ``CYCLES_*`` variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import attrs
import httpx

from .._version import __version__
from .._worded import POSITIVE_MS, http_url, int_at_least, not_blank

__all__ = ["AdminConfig"]

USER_AGENT = f"runcycles-python/{__version__} (admin)"


@attrs.frozen
class AdminConfig:
    """The admin server's ``base_url`` and the ``X-Admin-API-Key`` secret (never shown by ``repr``)."""

    base_url: str = attrs.field(validator=http_url())
    admin_key: str = attrs.field(validator=not_blank(), repr=False)
    connect_timeout_ms: int = attrs.field(default=2000, kw_only=True, validator=int_at_least(1, POSITIVE_MS))
    read_timeout_ms: int = attrs.field(default=10_000, kw_only=True, validator=int_at_least(1, POSITIVE_MS))

    @classmethod
    def from_env(
        cls,
        base_url: str | None = None,
        admin_key: str | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        **options: Any,
    ) -> AdminConfig:
        """The given values, the missing ones from ``CYCLES_BASE_URL`` and ``CYCLES_ADMIN_API_KEY``.

        Raises ``ValueError`` naming the variable when a value is neither given nor set.
        """
        env = os.environ if environ is None else environ
        values: dict[str, str] = {}
        wanted = (("base_url", base_url, "CYCLES_BASE_URL"), ("admin_key", admin_key, "CYCLES_ADMIN_API_KEY"))
        for field, given, var in wanted:
            value = given if given is not None else env.get(var) or None
            if value is None:
                raise ValueError(f"{field} is required: pass it or set {var}")
            values[field] = value
        return cls(values["base_url"], values["admin_key"], **options)

    def http_options(self) -> dict[str, Any]:
        """Keyword arguments of the ``httpx`` client talking to the admin server."""
        connect, read = self.connect_timeout_ms / 1000, self.read_timeout_ms / 1000
        return {
            "base_url": self.base_url,
            "timeout": httpx.Timeout(connect=connect, read=read, write=read, pool=connect),
            "headers": {"X-Admin-API-Key": self.admin_key, "User-Agent": USER_AGENT},
            "follow_redirects": False,
        }
