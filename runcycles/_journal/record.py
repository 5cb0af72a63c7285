"""Journal records: the value type, its on-disk JSON (version 2, and the legacy version 1) and its parser."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from .._protocol.states import SettleMode
from ..errors import CyclesError, JournalError

__all__ = [
    "JOURNAL_VERSION",
    "InvalidRecord",
    "JournalBusyError",
    "JournalRecord",
    "LoadResult",
    "Mode",
    "Stamp",
    "decode",
    "encode",
    "now_ms",
    "parse_record",
    "read_json",
]

JOURNAL_VERSION = 2
"""The record format version this library writes."""

_LEGACY_VERSION = 1
_MAX_INT = 2**63 - 1

Mode = SettleMode
"""The record's settle mode (``commit`` or ``event``)."""


class JournalBusyError(CyclesError):
    """Another worker (thread or process) holds the claim on this record; skip it for now.

    Not a :class:`JournalError`: nothing failed, the record is simply being settled elsewhere.
    """

    def __init__(self, reservation_id: str) -> None:
        super().__init__(f"journal record for reservation {reservation_id!r} is claimed by another worker")
        self.reservation_id = reservation_id


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_non_empty_str = attrs.validators.and_(attrs.validators.instance_of(str), attrs.validators.min_len(1))
def _not_bool(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    # What attrs.validators.not_(instance_of(bool)) says, without its exception per passing check (~10 us).
    if isinstance(value, bool):
        raise ValueError(f"'{attribute.name}' must be an integer, not a bool")


_count = attrs.validators.and_(  # an int, not a bool, in 0..2**63-1
    attrs.validators.instance_of(int), _not_bool, attrs.validators.ge(0), attrs.validators.le(_MAX_INT)
)
_body = attrs.validators.instance_of(dict)


def _settle_mode(value: Any) -> Any:
    """``commit`` / ``event`` as `SettleMode`; anything else is left for the validator to reject by name."""
    if value.__class__ is SettleMode:
        return value
    try:
        return SettleMode(value)
    except (TypeError, ValueError):
        return value


@attrs.frozen(kw_only=True)
class JournalRecord:
    """One unsettled spend: what a settlement, its retries and a replay need, never the API key.

    The lifecycle's settle steps carry it (``attrs.evolve`` for the next attempt) and the journal persists
    it as is. ``commit_body`` is the exact commit request body as sent; ``event_body`` the event-fallback
    body (same idempotency key, the original subject, action, actual, metrics and metadata plus recovery
    markers). ``mode`` is ``event`` once the reservation was found expired. ``not_before_ms`` is the
    absolute wall-clock time before which no retry may be sent (from a 429). ``base_url`` and
    ``recorded_at_ms`` are filled by the journal owner when the record is first written.
    """

    reservation_id: str = attrs.field(validator=_non_empty_str)
    mode: SettleMode = attrs.field(
        default=SettleMode.COMMIT, converter=_settle_mode, validator=attrs.validators.in_(tuple(SettleMode))
    )
    idempotency_key: str = attrs.field(validator=_non_empty_str)
    commit_body: dict[str, Any] = attrs.field(validator=_body)
    event_body: dict[str, Any] | None = attrs.field(default=None, validator=attrs.validators.optional(_body))
    base_url: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
    recorded_at_ms: int = attrs.field(factory=now_ms, validator=_count)
    not_before_ms: int | None = attrs.field(default=None, validator=attrs.validators.optional(_count))
    attempts: int = attrs.field(default=0, validator=_count)
    version: int = attrs.field(
        default=JOURNAL_VERSION,
        validator=attrs.validators.and_(attrs.validators.instance_of(int), attrs.validators.in_((JOURNAL_VERSION,))),
    )

    def __attrs_post_init__(self) -> None:
        if self.mode is SettleMode.EVENT and self.event_body is None:
            raise ValueError("event_body is required in event mode")

    def to_json_dict(self) -> dict[str, Any]:
        """The on-disk JSON object (format version 2)."""
        return {
            "version": JOURNAL_VERSION,
            "reservation_id": self.reservation_id,
            "mode": self.mode.value,
            "idempotency_key": self.idempotency_key,
            "base_url": self.base_url,
            "commit_body": self.commit_body,
            "event_body": self.event_body,
            "recorded_at_ms": self.recorded_at_ms,
            "not_before_ms": self.not_before_ms,
            "attempts": self.attempts,
        }


@attrs.frozen(kw_only=True)
class LoadResult:
    """What :meth:`Journal.load` found: the valid records (oldest first) and the files moved aside."""

    records: list[JournalRecord] = attrs.field(factory=list)
    quarantined: list[Path] = attrs.field(factory=list)


class InvalidRecord(Exception):
    """A journal file that cannot be read as a record (reason in the message)."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON constant {name}")


def read_json(path: Path) -> dict[str, Any]:
    """Read a journal file; ``FileNotFoundError`` passes through, unreadable content is ``InvalidRecord``."""
    return decode(path.read_bytes())


def decode(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRecord(f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidRecord("top-level JSON value is not an object")
    return data


def parse_record(data: Mapping[str, Any]) -> JournalRecord:
    """Build a record from either on-disk format; raises ``InvalidRecord``."""
    version = data.get("version")
    if not _is_int(version) or version not in (_LEGACY_VERSION, JOURNAL_VERSION):
        raise InvalidRecord(f"unsupported record version {version!r}")
    fields = _v2_fields(data) if version == JOURNAL_VERSION else _legacy_fields(data)
    for name in ("reservation_id", "base_url", "recorded_at_ms", "not_before_ms"):
        fields[name] = data.get(name)
    try:
        return JournalRecord(**fields)
    except (TypeError, ValueError) as exc:
        raise InvalidRecord(str(exc)) from exc


def _v2_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "mode": data.get("mode"),
        "idempotency_key": data.get("idempotency_key"),
        "commit_body": data.get("commit_body"),
        "event_body": data.get("event_body"),
        "attempts": data.get("attempts"),
    }


def _legacy_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """Version 1: an absent mode means commit; the key lives in the bodies; no attempt counter."""
    mode = data.get("mode", "commit")
    commit_body = data.get("commit_body")
    event_body = data.get("event_fallback_body")
    bodies = [body for body in (commit_body, event_body) if isinstance(body, dict)]
    keys = [body["idempotency_key"] for body in bodies if isinstance(body.get("idempotency_key"), str)]
    keys = [key for key in keys if key]
    if not keys:
        raise InvalidRecord("no idempotency_key in the record bodies")
    if mode == "event" and commit_body is None:
        commit_body = {}
    return {
        "mode": mode,
        "idempotency_key": keys[0],
        "commit_body": commit_body,
        "event_body": event_body,
        "attempts": 0,
    }


Stamp = tuple[str, int]
"""What the journal owner stamps on a record it writes: (``base_url``, ``recorded_at_ms``)."""

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode(record: JournalRecord, *, owner: str | None = None, stamp: Stamp | None = None) -> bytes:
    """The file content of ``record``; ``owner`` is the token of the process settling it (see `locks`);
    ``stamp`` replaces its ``base_url`` and ``recorded_at_ms``."""
    data = record.to_json_dict()
    if stamp is not None:
        data["base_url"], data["recorded_at_ms"] = stamp
    if owner is not None:
        data["owner"] = owner
    try:
        text = _ENCODER.encode(data)
    except (TypeError, ValueError) as exc:
        rid = record.reservation_id
        raise JournalError(f"journal record for reservation {rid!r} is not JSON: {exc}") from exc
    return text.encode("utf-8")
