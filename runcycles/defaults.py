"""The process-wide default client and config (`set_default_client`, `set_default_config`)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .client import AsyncCyclesClient, CyclesClient
    from .config import CyclesConfig

__all__ = ["resolve_client", "set_default_client", "set_default_config"]

_lock = threading.Lock()
_default_client: CyclesClient | AsyncCyclesClient | None = None
_default_config: CyclesConfig | None = None
# Clients built from the default config, one per flavour, rebuilt when the config changes.
_built: dict[bool, tuple[CyclesConfig, CyclesClient | AsyncCyclesClient]] = {}

NO_CLIENT = (
    "No Cycles client available. Either pass client= to with_cycles / reserve_for_stream, "
    "call runcycles.set_default_client(), call runcycles.set_default_config(), "
    "or set the CYCLES_BASE_URL and CYCLES_API_KEY environment variables"
)


def set_default_client(client: CyclesClient | AsyncCyclesClient | None) -> None:
    """The client guarded calls use when they are given none (``None`` clears it)."""
    global _default_client
    with _lock:
        _default_client = client


def set_default_config(config: CyclesConfig | None) -> None:
    """A config from which guarded calls build their own client, sync or async as each needs."""
    global _default_config
    with _lock:
        _default_config = config


def resolve_client(
    explicit: object, *, want_async: bool, required: bool = False
) -> CyclesClient | AsyncCyclesClient:
    """``explicit`` → the default client → a client of the wanted flavour built from the default config → one
    built from ``CYCLES_*`` environment variables (`CyclesConfig.from_env`). ``required``: ``explicit`` came
    from a ``client=`` callable and must be a client (no fallback)."""
    from .client import AsyncCyclesClient, CyclesClient

    flavour = AsyncCyclesClient if want_async else CyclesClient
    kind = "an AsyncCyclesClient" if want_async else "a CyclesClient"
    where = "async def functions and `async with`" if want_async else "plain functions and `with`"
    if explicit is not None or required:
        if not isinstance(explicit, flavour):
            source = "the client= callable returned" if required else "got"
            raise TypeError(f"{where} need {kind}, {source} {type(explicit).__name__}")
        return explicit
    with _lock:
        default = _default_client
        config = _default_config
        if default is not None and isinstance(default, flavour):
            return default
    if config is None:
        if default is not None:
            raise TypeError(f"{where} need {kind}; the default client is a {type(default).__name__}")
        config = _config_from_env()
    with _lock:
        cached = _built.get(want_async)
        if cached is not None and (cached[0] is config or cached[0] == config):
            return cached[1]
        client: CyclesClient | AsyncCyclesClient = flavour(config)
        _built[want_async] = (config, client)
        return client


def _config_from_env() -> CyclesConfig:
    from .config import CyclesConfig

    try:
        return CyclesConfig.from_env()
    except ValueError as exc:
        raise RuntimeError(f"{NO_CLIENT}: {exc}") from exc
