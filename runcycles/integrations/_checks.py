"""Argument checks shared by the provider guards and the framework integrations."""

from __future__ import annotations

from ..pricing import PriceTable

__all__ = ["require_price_table", "require_pricing"]


def require_price_table(prices: object) -> None:
    """Refuse anything but a `PriceTable` as ``prices``."""
    if not isinstance(prices, PriceTable):
        raise TypeError(f"prices must be a PriceTable, got {type(prices).__name__}")


def require_pricing(prices: object, default_max_output_tokens: int) -> None:
    """`require_price_table`, and a positive ``default_max_output_tokens``."""
    require_price_table(prices)
    if default_max_output_tokens < 1:
        raise ValueError("default_max_output_tokens must be positive")
