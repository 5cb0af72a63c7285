"""Schemathesis hooks for ``scripts/fuzz_server.py`` (loaded through ``SCHEMATHESIS_HOOKS=fuzz_hooks``).

Generated subjects and tenant filters name the seeded tenant most of the time, so that the fuzzer gets past
the 403 tenant check into the reserve/commit/event logic instead of only probing authentication.
"""

from __future__ import annotations

import zlib
from typing import Any

import schemathesis

TENANT = "fuzz"


def _mostly(value: dict[str, Any]) -> bool:
    """True for about 4 values in 5, decided by the value itself (Hypothesis needs deterministic maps)."""
    return zlib.crc32(repr(sorted(value.items(), key=str)).encode("utf-8", "replace")) % 5 != 0


@schemathesis.hook
def map_body(ctx: Any, body: Any) -> Any:
    """Point most generated subjects at the seeded tenant."""
    if isinstance(body, dict) and isinstance(body.get("subject"), dict) and _mostly(body):
        body["subject"]["tenant"] = TENANT
    return body


@schemathesis.hook
def map_query(ctx: Any, query: Any) -> Any:
    """Point most ``tenant`` query filters at the seeded tenant."""
    if isinstance(query, dict) and "tenant" in query and _mostly(query):
        query["tenant"] = TENANT
    return query
