"""Journal records: the value type, its on-disk JSON (version 2, and the legacy version 1) and its parser."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from ..errors import CyclesError, JournalError

__all__ = [
    "JOURNAL_VERSION",
    "InvalidRecord",
    "JournalBusyError",
    "JournalRecord",
    "LoadResult",
    "Mode",
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

Mode = Literal["commit", "event"]
_MODES = ("commit", "event")


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


def _check_non_negative(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_INT:
        raise ValueError(f"{attribute.name} must be a non-negative integer, got {value!r}")


def _check_optional_non_negative(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _check_non_negative(inst, attribute, value)


def _check_non_empty_str(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{attribute.name} must be a non-empty string")


def _check_mode(_inst: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in _MODES:
        raise ValueError(f"mode must be 'commit' or 'event', got {value!r}")


def _check_dict(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{attribute.name} must be a dict")


def _check_optional_dict(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _check_dict(inst, attribute, value)


def _check_version(_inst: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if value != JOURNAL_VERSION or not _is_int(value):
        raise ValueError(f"version must be {JOURNAL_VERSION}, got {value!r}")


@attrs.frozen(kw_only=True)
class JournalRecord:
    """One unsettled spend.

    ``commit_body`` is the exact commit request body as sent; ``event_body`` the event-fallback body (same
    idempotency key, the original subject, action, actual, metrics and metadata plus recovery markers).
    ``mode`` is ``"event"`` once the reservation was found expired. ``not_before_ms`` is the absolute
    wall-clock time before which no retry may be sent (from a 429). Update with ``attrs.evolve`` and
    :meth:`Journal.update`.
    """

    reservation_id: str = attrs.field(validator=_check_non_empty_str)
    mode: Mode = attrs.field(default="commit", validator=_check_mode)
    idempotency_key: str = attrs.field(validator=_check_non_empty_str)
    commit_body: dict[str, Any] = attrs.field(validator=_check_dict)
    event_body: dict[str, Any] | None = attrs.field(default=None, validator=_check_optional_dict)
    base_url: str = attrs.field(validator=attrs.validators.instance_of(str))
    recorded_at_ms: int = attrs.field(factory=now_ms, validator=_check_non_negative)
    not_before_ms: int | None = attrs.field(default=None, validator=_check_optional_non_negative)
    attempts: int = attrs.field(default=0, validator=_check_non_negative)
    version: int = attrs.field(default=JOURNAL_VERSION, validator=_check_version)

    def __attrs_post_init__(self) -> None:
        if self.mode == "event" and self.event_body is None:
            raise ValueError("event_body is required in event mode")

    def to_json_dict(self) -> dict[str, Any]:
        """The on-disk JSON object (format version 2)."""
        return {
            "version": JOURNAL_VERSION,
            "reservation_id": self.reservation_id,
            "mode": self.mode,
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


def _field_str(data: Mapping[str, Any], name: str, *, non_empty: bool = True) -> str:
    value = data.get(name)
    if not isinstance(value, str) or (non_empty and not value):
        raise InvalidRecord(f"{name} must be a {'non-empty ' if non_empty else ''}string")
    return value


def _field_int(data: Mapping[str, Any], name: str, *, optional: bool = False) -> int | None:
    value = data.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_INT:
        raise InvalidRecord(f"{name} must be a non-negative integer")
    return value


def _field_body(data: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRecord(f"{name} must be an object or null")
    return value


def parse_record(data: Mapping[str, Any]) -> JournalRecord:
    """Build a record from either on-disk format; raises ``InvalidRecord``."""
    version = data.get("version")
    if not _is_int(version) or version not in (_LEGACY_VERSION, JOURNAL_VERSION):
        raise InvalidRecord(f"unsupported record version {version!r}")
    reservation_id = _field_str(data, "reservation_id")
    base_url = _field_str(data, "base_url", non_empty=False)
    if version == JOURNAL_VERSION:
        mode = data.get("mode")
        commit_body = _field_body(data, "commit_body")
        event_body = _field_body(data, "event_body")
        idempotency_key = _field_str(data, "idempotency_key")
        attempts = _field_int(data, "attempts")
    else:
        # Legacy format: absent mode means commit; the key lives in the bodies; no attempt counter.
        mode = data.get("mode", "commit")
        commit_body = _field_body(data, "commit_body")
        event_body = _field_body(data, "event_fallback_body")
        key: object = None
        for body in (commit_body, event_body):
            if body is not None and isinstance(body.get("idempotency_key"), str) and body["idempotency_key"]:
                key = body["idempotency_key"]
                break
        if not isinstance(key, str):
            raise InvalidRecord("no idempotency_key in the record bodies")
        idempotency_key = key
        attempts = 0
        if mode == "event" and commit_body is None:
            commit_body = {}
    if mode not in _MODES:
        raise InvalidRecord(f"unknown mode {mode!r}")
    if commit_body is None:
        raise InvalidRecord("commit_body is required")
    if mode == "event" and event_body is None:
        raise InvalidRecord("event mode requires an event body")
    recorded_at_ms = _field_int(data, "recorded_at_ms")
    not_before_ms = _field_int(data, "not_before_ms", optional=True)
    try:
        return JournalRecord(
            reservation_id=reservation_id,
            mode=mode,
            idempotency_key=idempotency_key,
            commit_body=commit_body,
            event_body=event_body,
            base_url=base_url,
            recorded_at_ms=recorded_at_ms if recorded_at_ms is not None else 0,
            not_before_ms=not_before_ms,
            attempts=attempts if attempts is not None else 0,
        )
    except (TypeError, ValueError) as exc:
        raise InvalidRecord(str(exc)) from exc


def encode(record: JournalRecord, *, owner: str | None = None) -> bytes:
    """The file content of ``record``; ``owner`` is the token of the process settling it (see `locks`)."""
    data = record.to_json_dict()
    if owner is not None:
        data["owner"] = owner
    try:
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        rid = record.reservation_id
        raise JournalError(f"journal record for reservation {rid!r} is not JSON: {exc}") from exc
    return text.encode("utf-8")


