"""Client resolution: explicit client, default client, clients built per flavour from the default config."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runcycles import (
    AsyncCyclesClient,
    CyclesClient,
    CyclesConfig,
    set_default_client,
    set_default_config,
    with_cycles,
)
from runcycles.defaults import resolve_client


@pytest.fixture(autouse=True)
def _clean_defaults() -> Iterator[None]:
    set_default_client(None)
    set_default_config(None)
    yield
    set_default_client(None)
    set_default_config(None)


def config(name: str = "a") -> CyclesConfig:
    return CyclesConfig(base_url=f"http://{name}.invalid", api_key="k", journal_enabled=False)


def test_no_client_anywhere_is_a_runtime_error_at_call_time() -> None:
    @with_cycles(estimate=1)
    def work() -> int:
        return 1

    with pytest.raises(RuntimeError, match="No Cycles client available"):
        work()


def test_default_config_builds_one_client_per_flavour() -> None:
    set_default_config(config())
    sync_client = resolve_client(None, want_async=False)
    async_client = resolve_client(None, want_async=True)
    assert isinstance(sync_client, CyclesClient)
    assert isinstance(async_client, AsyncCyclesClient)
    assert resolve_client(None, want_async=False) is sync_client  # cached while the config is the same


def test_a_later_default_config_is_honoured_by_new_resolutions() -> None:
    set_default_config(config("a"))
    first = resolve_client(None, want_async=False)
    set_default_config(config("b"))
    second = resolve_client(None, want_async=False)
    assert first is not second
    assert second.config.base_url == "http://b.invalid"


def test_default_client_of_the_other_flavour_falls_back_to_the_config() -> None:
    sync_client = CyclesClient(config())
    set_default_client(sync_client)
    with pytest.raises(TypeError, match="AsyncCyclesClient"):
        resolve_client(None, want_async=True)
    set_default_config(config("c"))
    assert isinstance(resolve_client(None, want_async=True), AsyncCyclesClient)
    assert resolve_client(None, want_async=False) is sync_client


def test_explicit_client_of_the_wrong_flavour_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="need a CyclesClient"):
        resolve_client(AsyncCyclesClient(config()), want_async=False)
