"""httpcore tries ``import sniffio`` on every async request; without sniffio installed, each failed attempt
searched ``sys.path`` again. An `AsyncCyclesClient` records the absence once (and leaves an installed
sniffio alone)."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType

import anyio
import httpx
import pytest
from fixtures_local import uvicorn_switch  # noqa: F401

import runcycles._sniffio as probe
from runcycles import AsyncCyclesClient, CyclesConfig
from runcycles.local import LocalCyclesServer

REQUESTS = 5


class _NoSniffio(importlib.abc.MetaPathFinder):
    """Makes sniffio look uninstalled and counts how often the import system goes looking for it."""

    def __init__(self) -> None:
        self.attempts = 0

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "sniffio":
            self.attempts += 1
            raise ModuleNotFoundError("No module named 'sniffio'", name="sniffio")
        return None


@pytest.fixture
def served(uvicorn_switch: tuple[str, object]) -> Iterator[tuple[str, str]]:  # noqa: F811
    base_url, switch = uvicorn_switch
    server = LocalCyclesServer()
    server.create_tenant("acme")
    key = server.create_api_key("acme")
    server.create_budget("tenant:acme", "USD_MICROCENTS", allocated=1000)
    switch.target = server.asgi_app  # type: ignore[attr-defined]
    yield base_url, key
    server.close()


@pytest.fixture
def no_sniffio(monkeypatch: pytest.MonkeyPatch) -> Iterator[_NoSniffio]:
    finder = _NoSniffio()
    saved = sys.modules.pop("sniffio", None)
    monkeypatch.setattr(probe, "_checked", False)
    sys.meta_path.insert(0, finder)
    try:
        yield finder
    finally:
        sys.meta_path.remove(finder)
        if saved is not None:
            sys.modules["sniffio"] = saved
        else:
            sys.modules.pop("sniffio", None)


def test_missing_sniffio_is_looked_for_once(served: tuple[str, str], no_sniffio: _NoSniffio) -> None:
    """On asyncio only: trio depends on sniffio, so it is never missing there (see the next test)."""
    base_url, key = served

    async def main() -> None:
        async with httpx.AsyncClient(base_url=base_url) as plain:  # the cost being avoided
            for _ in range(REQUESTS):
                await plain.get("/v1/balances", params={"tenant": "acme"}, headers={"X-Cycles-API-Key": key})
        assert no_sniffio.attempts >= REQUESTS

        no_sniffio.attempts = 0
        config = CyclesConfig(base_url=base_url, api_key=key, tenant="acme", journal_enabled=False)
        async with AsyncCyclesClient(config) as client:
            for _ in range(REQUESTS):
                response = await client.get_balances(tenant="acme")
                assert response.is_success
        assert no_sniffio.attempts == 1  # the one look when the client was built

    anyio.run(main, backend="asyncio")
    assert sys.modules["sniffio"] is None
    with pytest.raises(ImportError):
        import sniffio  # noqa: F401


def test_installed_but_not_imported_sniffio_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe, "_checked", False)
    installed = sys.modules.pop("sniffio", None)
    try:
        probe.remember_missing_sniffio()
        assert sys.modules.get("sniffio", "absent") is not None
    finally:
        if installed is not None:
            sys.modules["sniffio"] = installed


@pytest.mark.anyio
async def test_installed_sniffio_is_left_alone(
    anyio_backend: str, served: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probe, "_checked", False)
    import sniffio

    base_url, key = served
    config = CyclesConfig(base_url=base_url, api_key=key, tenant="acme", journal_enabled=False)
    async with AsyncCyclesClient(config) as client:
        response = await client.get_balances(tenant="acme")
        assert response.is_success
    assert sys.modules["sniffio"] is sniffio
    assert sniffio.current_async_library() == anyio_backend
