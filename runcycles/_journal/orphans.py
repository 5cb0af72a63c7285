"""What a process that is gone left in a journal directory: its spare files (see `spares`).

Kept apart from `store` (which calls it from `Journal.load`) so that each module stays small.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import JournalError
from .locks import is_own_token, owner_alive
from .record import InvalidRecord, JournalBusyError, JournalRecord, decode, parse_record
from .spares import spare_owner

if TYPE_CHECKING:
    from .store import Journal

__all__ = ["load_spare"]

logger = logging.getLogger("runcycles.journal")


def load_spare(journal: Journal, path: Path, quarantined: list[Path]) -> JournalRecord | None:
    """A spare of a process that is gone: removed when empty, moved to its record's standard name when it
    holds a valid record (the record was durable, its rename was lost), quarantined when malformed."""
    token = spare_owner(path.name)
    directory = path.parent
    if token is None or is_own_token(directory, token) or owner_alive(directory, token):
        return None  # not a spare's name, or its process may still be using it
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.error("cannot read spare journal file %s: %s", path, exc)
        return None
    if not raw.strip():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return None
    try:
        record = parse_record(decode(raw))
    except InvalidRecord as exc:
        journal._quarantine_unless_changed(path, raw, str(exc), quarantined)
        return None
    reservation_id = record.reservation_id
    target = journal.path_for(reservation_id)
    lock = journal._lock(target)
    if lock is None:
        return None  # being worked on elsewhere; a later load sees the result
    try:
        existing = journal._read_claimed(reservation_id, target, quarantined, legacy=False)
        if not os.path.lexists(path):
            return existing  # another load moved it while we waited for the claim
        if existing is None:
            journal.write(record)
            logger.info("recovered journal record %s from spare file %s", target, path)
        os.unlink(path)  # the standard record is authoritative; the spare is a stale copy of it
        return existing if existing is not None else record
    except JournalBusyError:
        return None
    except OSError as exc:
        raise JournalError(f"cannot move spare journal file {path} to {target}: {exc}") from exc
    finally:
        lock.release(remove=not target.exists())
