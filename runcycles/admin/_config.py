"""`AdminConfig`: where the admin server is and the admin key, from arguments or ``CYCLES_*`` variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs
import httpx

from .._version import __version__

__all__ = ["AdminConfig"]

USER_AGENT = f"runcycles-python/{__version__} (admin)"


def _url(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{attribute.name} must not be empty")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{attribute.name} must be an http(s) URL, got {value!r}")


def _key(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{attribute.name} must not be empty")


def _positive(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{attribute.name} must be a positive integer (milliseconds), got {value!r}")


@attrs.frozen
class AdminConfig:
    """The admin server's ``base_url`` and the ``X-Admin-API-Key`` secret (never shown by ``repr``)."""

    base_url: str = attrs.field(validator=_url)
    admin_key: str = attrs.field(validator=_key, repr=False)
    connect_timeout_ms: int = attrs.field(default=2000, kw_only=True, validator=_positive)
    read_timeout_ms: int = attrs.field(default=10_000, kw_only=True, validator=_positive)

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
