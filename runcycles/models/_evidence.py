"""References to the signed CyclesEvidence envelopes a server emits for its operations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .. import _wire as w
from ._fields import extension, extra

__all__ = ["CyclesEvidenceRef", "ReservationEvidence"]


@attrs.frozen(kw_only=True)
class CyclesEvidenceRef:
    """Reference to the signed CyclesEvidence envelope emitted for an operation."""

    evidence_id: str = attrs.field(metadata=w.STR)
    cycles_evidence_url: str = attrs.field(metadata=w.STR)
    extra: Mapping[str, Any] = extra()


@attrs.frozen(kw_only=True)
class ReservationEvidence:
    """Evidence references of a reservation's operations, keyed by artifact type."""

    reserve: CyclesEvidenceRef | None = attrs.field(default=None, **extension(CyclesEvidenceRef))
    commit: CyclesEvidenceRef | None = attrs.field(default=None, **extension(CyclesEvidenceRef))
    release: CyclesEvidenceRef | None = attrs.field(default=None, **extension(CyclesEvidenceRef))
    extra: Mapping[str, Any] = extra()
