"""Pieces of the per-call hot path that were made cheaper: they must still say the same thing."""

from __future__ import annotations

import uuid

from runcycles._lifecycle import new_key
from runcycles._protocol import requests as rq


def test_idempotency_keys_are_distinct_version_4_uuids() -> None:
    keys = [new_key() for _ in range(2000)]
    assert len(set(keys)) == len(keys)
    for key in keys:
        parsed = uuid.UUID(key)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == key  # canonical lowercase 8-4-4-4-12 text
    assert rq.new_idempotency_key() != rq.new_idempotency_key()
