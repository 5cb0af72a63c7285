"""Fixtures for the provider-guard tests: the embedded server as the ledger, and the fake providers of
examples/fake_providers.py (put on ``sys.path`` here) behind the real ``openai`` / ``anthropic`` SDKs."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from provider_support import Ledger  # noqa: E402

from runcycles.pricing import ModelPrice, PriceTable  # noqa: E402

PRICES = PriceTable(
    {
        "gpt-4o-mini": ModelPrice(input="0.15", output="0.60", cached_input="0.075"),
        "claude-sonnet-4-5": ModelPrice(input="3", output="15", cached_input="0.30", cache_write="3.75"),
    }
)


@pytest.fixture
def prices() -> PriceTable:
    return PRICES


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    with Ledger.open() as opened:
        yield opened


@pytest.fixture(params=["sync", "async"])
def flavour(request: pytest.FixtureRequest) -> str:
    return str(request.param)
