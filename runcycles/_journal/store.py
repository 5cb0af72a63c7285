"""The journal store: one (server, principal) partition directory of records.

Layout: ``<root>/<fingerprint>/v2-<sha256 of the exact UTF-8 reservation id>.json`` (see `paths`), files
0600, directories 0700, invalid files moved into ``quarantine/``. Records written by the earlier clients
(version 1, legacy file names) are read and migrated. Ownership (see `locks`): the settlement that writes a
record owns it in process (`Journal.own`, plus the owner token in the file); a replay claims a record with
`Journal.claim`. Writes go through the process-wide group commit (see `writer`); in ``full`` mode a fresh
record goes into a pre-synced spare file (see `spares`), so it costs one sync barrier instead of two.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import JournalError
from .locks import LOCK_SUFFIX, Lock, hold, owner_alive, process_owner, sweep_owners, try_lock, unhold
from .orphans import load_spare
from .paths import V2_NAME, journal_filename, journal_fingerprint, legacy_filename, makedirs, resolve_partition
from .record import (
    JOURNAL_VERSION,
    InvalidRecord,
    JournalBusyError,
    JournalRecord,
    LoadResult,
    Stamp,
    decode,
    encode,
    now_ms,
    parse_record,
    read_json,
)
from .spares import SPARE_SUFFIX, SparePool, fill, pool_for, release, retain
from .writer import GROUP, TEMP_SUFFIX, Job, SyncMode, fsync_dir, write_file

__all__ = ["Journal"]

logger = logging.getLogger("runcycles.journal")

_STALE_TEMP_SECONDS = 3600.0
_PATHS_KEPT = 4096
_QUARANTINE_DIR = "quarantine"


class Journal:
    """The settlement journal of one (server, principal) partition.

    ``root`` is the journal root (``None``: :func:`default_journal_root`, with a temp-dir fallback when it is
    not writable); records live in ``<root>/<fingerprint>/``. ``api_key`` only derives the fingerprint when
    no tenant is configured; it is never stored. Directories are created on first use. ``sync`` is how
    durable a write is when it returns (see `SyncMode`). All methods are thread-safe; I/O failures raise
    :class:`JournalError`.
    """

    __slots__ = ("_base_url", "_dir_lock", "_directory", "_fingerprint", "_paths", "_root", "_spares", "_sync")

    def __init__(
        self,
        root: Path | str | None,
        *,
        base_url: str,
        tenant: str | None,
        api_key: str,
        sync: SyncMode = "full",
    ) -> None:
        if sync not in ("full", "process"):
            raise ValueError(f"sync must be 'full' or 'process', got {sync!r}")
        self._sync: SyncMode = sync
        self._root = Path(os.path.abspath(root)) if root is not None else None
        self._base_url = base_url
        self._fingerprint = journal_fingerprint(base_url, tenant=tenant, api_key=api_key)
        self._directory: Path | None = None
        self._dir_lock = threading.Lock()
        # reservation id -> (record path, its lock path): a settlement asks for them several times
        self._paths: dict[str, tuple[Path, str]] = {}
        self._spares: SparePool | None = None  # this process's spare pool of the directory, for this mode

    def __repr__(self) -> str:
        where = self._directory if self._directory is not None else self._root
        return (
            f"Journal(directory={str(where)!r}, base_url={self._base_url!r}, "
            f"fingerprint={self._fingerprint!r})"
        )

    @property
    def base_url(self) -> str:
        """The server URL this journal's records belong to."""
        return self._base_url

    @property
    def sync(self) -> SyncMode:
        """How durable a write is when it returns: ``full`` (fsynced) or ``process`` (no fsync)."""
        return self._sync

    @property
    def fingerprint(self) -> str:
        """The partition name derived from (server, principal)."""
        return self._fingerprint

    @property
    def directory(self) -> Path:
        """The partition directory, created (0700) on first access; raises :class:`JournalError`."""
        directory = self._directory
        if directory is not None:
            return directory
        with self._dir_lock:
            if self._directory is None:
                self._directory = resolve_partition(self._root, self._fingerprint)
                self._spares = retain(self._directory, synced=self._sync == "full")
                self._spares.request_refill()  # spares ready before the first settlement (``full`` mode)
            return self._directory

    def close(self) -> None:
        """Stop preparing spare files for this journal; the last open journal of a directory in this process
        removes its unused spares (a later write prepares new ones)."""
        with self._dir_lock:
            directory, self._directory = self._directory, None
            self._spares = None
            self._paths.clear()  # a later use resolves the directory again
        if directory is not None:
            release(directory, synced=self._sync == "full")

    def path_for(self, reservation_id: str) -> Path:
        """The record file of ``reservation_id`` (whether or not it exists)."""
        return self._names(reservation_id)[0]

    def _names(self, reservation_id: str) -> tuple[Path, str]:
        """The record's path and its lock file's path as text (the key of `hold`)."""
        names = self._paths.get(reservation_id)
        if names is None:
            target = self.directory / journal_filename(reservation_id)
            names = (target, f"{target}{LOCK_SUFFIX}")
            if len(self._paths) >= _PATHS_KEPT:
                self._paths.clear()
            self._paths[reservation_id] = names
        return names

    # ------------------------------------------------------------------------------------ writing

    def write(self, record: JournalRecord, *, owned: bool = False) -> None:
        """Persist ``record`` atomically (durably in ``full`` mode); complete when this returns.

        ``owned``: stamp it with this process's owner token, so that replays elsewhere leave it alone while
        this process lives (the caller holds it with `own`).
        """
        GROUP.run_one(self.write_job(record, owned=owned))

    def write_job(
        self, record: JournalRecord, *, owned: bool = False, stamp: Stamp | None = None, fresh: bool = False
    ) -> Job:
        """The `writer` job of `write` (its directory fsync is left to the batch); ``stamp`` overrides the
        record's (``base_url``, ``recorded_at_ms``) in the file (see `encode`). ``fresh``: the first write of
        a record by the settlement that owns it (see `own`), so no file of it can exist yet (a reservation id
        is new to the process that created it; any other writer reaches a record through `claim`)."""
        return lambda: self._install(record, owned=owned, stamp=stamp, fresh=fresh)

    def _install(
        self,
        record: JournalRecord,
        *,
        owned: bool,
        sync: bool | None = None,
        stamp: Stamp | None = None,
        fresh: bool = False,
    ) -> Path | None:
        full = self._sync == "full" if sync is None else sync
        directory = self.directory
        target = self.path_for(record.reservation_id)
        try:
            owner = process_owner(directory) if owned else None
            data = encode(record, owner=owner, stamp=stamp)
            if sync is None and (fresh or not os.path.lexists(target)):
                # A fresh record: ``full``: one barrier in a spare whose directory entry is durable already;
                # ``process``: a recycled file, so none is created. A rewrite (and a write with a mode of its
                # own, see `_clear_owner`) keeps the plain path: in ``full`` mode two barriers, so that a power
                # loss never leaves two versions of one record.
                spare = self._pool(directory).take()
                if spare is not None:
                    try:
                        fill(spare, target, data, sync=full)
                        return None
                    except OSError as exc:
                        logger.debug("spare journal file %s unusable (%s); writing %s anew", spare, exc, target)
            write_file(target, data, sync=full)
        except OSError as exc:
            raise JournalError(
                f"failed to journal settlement for reservation {record.reservation_id!r} at {target}: {exc}"
            ) from exc
        return directory if full else None

    def _pool(self, directory: Path) -> SparePool:
        """This process's spare pool of ``directory`` for this journal's mode (the one kept, while current)."""
        return pool_for(directory, self._spares, synced=self._sync == "full")

    def update(self, record: JournalRecord) -> None:
        """Replace the stored record (same as :meth:`write`)."""
        self.write(record)

    def own(self, reservation_id: str) -> None:
        """Hold the record of ``reservation_id`` for this process's settlement, without a lock file.

        Claims in this process report busy until `disown`; other processes see the owner token that
        ``write(..., owned=True)`` stamps. Raises :class:`JournalBusyError` when it is held here already.
        """
        if not hold(self._names(reservation_id)[1]):
            raise JournalBusyError(reservation_id)

    def disown(self, reservation_id: str, *, keep: bool = False) -> None:
        """Stop holding a record taken with `own`. ``keep``: it stays unresolved, so its owner token is
        removed (rewritten without a sync) and another process may replay it while this one lives."""
        target, lock = self._names(reservation_id)
        try:
            if keep:
                self._clear_owner(reservation_id, target)
        finally:
            self._paths.pop(reservation_id, None)
            unhold(lock)

    def _clear_owner(self, reservation_id: str, target: Path) -> None:
        try:
            data = read_json(target)
            record = parse_record(data)
        except (FileNotFoundError, InvalidRecord):
            return
        except OSError as exc:
            raise JournalError(f"cannot read journal record {target}: {exc}") from exc
        if data.get("owner") is not None and record.reservation_id == reservation_id:
            self._install(record, owned=False, sync=False)

    def delete(self, reservation_id: str, *, owned: bool = False) -> None:
        """Remove the record (and a legacy-named file whose stored id is exactly this id). Missing is fine.

        Not synced: a deletion lost to a power cut only replays a settled record with its idempotency key,
        which the server answers idempotently. The file becomes a spare of this mode's pool when the pool
        wants it (see `SparePool.recycle`). ``owned``: the record was written by this process's settlement
        (`own`), so no legacy file and no claim's lock file can belong to it.
        """
        directory = self.directory
        target = self.path_for(reservation_id)
        try:
            with contextlib.suppress(FileNotFoundError):
                if not self._pool(directory).recycle(target):
                    os.unlink(target)
            if owned:
                return
            legacy = directory / legacy_filename(reservation_id)
            if legacy.name != target.name and self._stored_id(legacy) == reservation_id:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(legacy)
        except OSError as exc:
            raise JournalError(
                f"failed to delete journal record for reservation {reservation_id!r}: {exc}"
            ) from exc
        # Clean the lock file of a replay's claim unless it is held (the holder removes it when it releases).
        self._remove_lock_if_free(target)

    @staticmethod
    def _lock_path(record_path: Path) -> Path:
        return record_path.with_name(record_path.name + LOCK_SUFFIX)

    @staticmethod
    def _remove_lock_if_free(record_path: Path) -> None:
        lock_path = Journal._lock_path(record_path)
        if not lock_path.exists():
            return
        try:
            lock = try_lock(lock_path)
        except OSError:
            return
        if lock is not None:
            lock.release(remove=not record_path.exists())

    @staticmethod
    def _stored_id(path: Path) -> str | None:
        try:
            value = read_json(path).get("reservation_id")
        except (FileNotFoundError, InvalidRecord):
            return None
        return value if isinstance(value, str) else None

    # ------------------------------------------------------------------------------------ claiming

    @contextlib.contextmanager
    def claim(self, reservation_id: str) -> Iterator[JournalRecord | None]:
        """Exclusively claim the record of ``reservation_id`` (non-blocking).

        Yields the freshly re-read record, or ``None`` when there is none (never written, or settled
        meanwhile; an invalid file is quarantined and gives ``None``). Raises :class:`JournalBusyError` when
        another thread or process holds the claim, when this process `own`s it, or when the record carries
        the owner token of another live process.
        """
        target = self.path_for(reservation_id)
        lock = self._lock(target)
        if lock is None:
            raise JournalBusyError(reservation_id)
        try:
            record = self._read_claimed(reservation_id, target)
        except BaseException:
            lock.release(remove=True)  # e.g. its owner is alive: leave no lock file behind
            raise
        try:
            yield record
        finally:
            lock.release(remove=not target.exists())

    def _lock(self, target: Path) -> Lock | None:
        try:
            return try_lock(self._lock_path(target))
        except OSError as exc:
            raise JournalError(f"cannot lock journal record {target}: {exc}") from exc

    def _read_claimed(
        self, reservation_id: str, target: Path, quarantined: list[Path] | None = None, *, legacy: bool = True
    ) -> JournalRecord | None:
        try:
            data = read_json(target)
        except FileNotFoundError:
            return self._migrate_legacy_claimed(reservation_id, quarantined) if legacy else None
        except InvalidRecord as exc:
            self._quarantine(target, str(exc), quarantined)
            return None
        except OSError as exc:
            raise JournalError(f"cannot read journal record {target}: {exc}") from exc
        try:
            record = parse_record(data)
            if record.reservation_id != reservation_id:
                raise InvalidRecord("stored reservation_id does not match the file name")
        except InvalidRecord as exc:
            self._quarantine(target, str(exc), quarantined)
            return None
        if owner_alive(target.parent, data.get("owner")):
            raise JournalBusyError(reservation_id)
        if data.get("version") != JOURNAL_VERSION:
            self.write(record)
        return record

    def migrate_legacy(self, reservation_id: str) -> JournalRecord | None:
        """Migrate the legacy-named file of ``reservation_id`` to the standard name, under the claim.

        Only a file whose stored reservation id is exactly ``reservation_id`` is migrated and removed; a
        colliding legacy file of another id is left untouched. Returns the (standard) record, if any.
        Raises :class:`JournalBusyError` when the record is claimed.
        """
        with self.claim(reservation_id) as record:
            return record

    def _migrate_legacy_claimed(
        self, reservation_id: str, quarantined: list[Path] | None = None
    ) -> JournalRecord | None:
        directory = self.directory
        legacy = directory / legacy_filename(reservation_id)
        target = directory / journal_filename(reservation_id)
        if legacy.name == target.name:
            return None
        try:
            data = read_json(legacy)
        except FileNotFoundError:
            return None
        except InvalidRecord:
            return None  # cannot tell whose it is: never touch it from a lookup by id
        except OSError as exc:
            raise JournalError(f"cannot read legacy journal record {legacy}: {exc}") from exc
        if data.get("reservation_id") != reservation_id:
            return None
        try:
            record = parse_record(data)
        except InvalidRecord as exc:
            self._quarantine(legacy, str(exc), quarantined)
            return None
        self.write(record)
        try:
            os.unlink(legacy)
            fsync_dir(directory)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise JournalError(
                f"migrated {legacy} to {target} but cannot remove the legacy file: {exc}"
            ) from exc
        logger.info("migrated legacy journal record %s to %s", legacy, target)
        return record

    # ------------------------------------------------------------------------------------ loading

    def quarantine(self, reservation_id: str, reason: str) -> Path | None:
        """Move the record of ``reservation_id`` into ``quarantine/`` (kept for an operator, never replayed).

        For a record that cannot be settled safely (e.g. too old to resend without risking a double
        charge). Call it while holding the record's claim. Returns where it went (``None``: no record).
        """
        return self._quarantine(self.path_for(reservation_id), reason, label="unsettled")

    def _quarantine(
        self, path: Path, reason: str, quarantined: list[Path] | None = None, *, label: str = "corrupt"
    ) -> Path | None:
        quarantine = path.parent / _QUARANTINE_DIR
        try:
            makedirs(quarantine)
            destination = quarantine / f"{path.name}.{label}-{now_ms()}"
            if destination.exists():
                destination = destination.with_name(f"{destination.name}-{secrets.token_hex(4)}")
            os.replace(path, destination)
            fsync_dir(path.parent)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise JournalError(f"cannot quarantine invalid journal record {path}: {exc}") from exc
        what = "invalid" if label == "corrupt" else label
        logger.error("quarantined %s journal record %s (%s) as %s", what, path, reason, destination)
        if quarantined is not None:
            quarantined.append(destination)
        return destination

    def load(self) -> LoadResult:
        """Read every record of this partition (oldest first) for replay.

        Invalid files (bad JSON, unknown version, missing or invalid fields) are moved into ``quarantine/``,
        logged at ERROR and listed; the other records still load. Version 1 records are rewritten in
        version 2 format; legacy-named files are migrated to the standard name (only under their own stored
        id). Temp files older than one hour are removed. Records being claimed by another worker are still
        listed (their claim will report busy); records of another ``base_url`` are skipped. The lock files
        of owners that are gone are removed.
        """
        directory = self.directory
        sweep_owners(directory)
        try:
            names = sorted(os.listdir(directory))
        except OSError as exc:
            raise JournalError(f"cannot list journal directory {directory}: {exc}") from exc
        records: list[JournalRecord] = []
        quarantined: list[Path] = []
        present = set(names)
        for name in names:
            path = directory / name
            if name.endswith(TEMP_SUFFIX):
                self._remove_stale_temp(path)
            elif name.endswith(SPARE_SUFFIX):
                record = load_spare(self, path, quarantined)
                if record is not None and record.base_url == self._base_url:
                    records.append(record)
            elif name.endswith(LOCK_SUFFIX):
                if name[: -len(LOCK_SUFFIX)] not in present:
                    self._remove_lock_if_free(path.with_name(name[: -len(LOCK_SUFFIX)]))
            elif name.endswith(".json"):
                record = self._load_one(path, quarantined)
                if record is None:
                    continue
                if record.base_url != self._base_url:
                    logger.warning(
                        "skipping journal record %s: base_url %r is not %r",
                        path,
                        record.base_url,
                        self._base_url,
                    )
                    continue
                records.append(record)
        unique: dict[str, JournalRecord] = {}
        for record in records:
            unique.setdefault(record.reservation_id, record)
        ordered = sorted(unique.values(), key=lambda r: (r.recorded_at_ms, r.reservation_id))
        return LoadResult(records=ordered, quarantined=quarantined)

    def _load_one(self, path: Path, quarantined: list[Path]) -> JournalRecord | None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            # One unreadable entry must not stop the replay of the others; it stays for a later load.
            logger.error("cannot read journal record %s: %s", path, exc)
            return None
        try:
            data = decode(raw)
            record = parse_record(data)
        except InvalidRecord as exc:
            self._quarantine_unless_changed(path, raw, str(exc), quarantined)
            return None
        reservation_id = record.reservation_id
        standard = path.name == journal_filename(reservation_id)
        if not standard and path.name != legacy_filename(reservation_id):
            if V2_NAME.match(path.name) is None:
                # A legacy-looking file whose id does not map to its name: not provably ours, leave it.
                logger.warning(
                    "leaving journal file %s alone: its reservation_id does not match the name", path
                )
                return None
            reason = "reservation_id does not match the file name"
            self._quarantine_unless_changed(path, raw, reason, quarantined)
            return None
        if standard and data.get("version") == JOURNAL_VERSION:
            return record
        # A version 1 record to rewrite, or a legacy name to migrate: done under the record's claim.
        target = self.path_for(reservation_id)
        lock = self._lock(target)
        if lock is None:
            return None  # being worked on elsewhere; a later load sees the result
        try:
            if standard:
                return self._read_claimed(reservation_id, target, quarantined)
            existing = self._read_claimed(reservation_id, target, quarantined, legacy=False)
            if existing is None:
                return self._migrate_legacy_claimed(reservation_id, quarantined)
            # The standard record is authoritative; the legacy file is a stale copy of the same id.
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise JournalError(f"cannot remove migrated legacy journal record {path}: {exc}") from exc
            return existing
        except JournalBusyError:
            return None  # a live process owns the standard record; a later load sees the result
        finally:
            lock.release(remove=not target.exists())

    def _quarantine_unless_changed(
        self, path: Path, raw: bytes, reason: str, quarantined: list[Path]
    ) -> None:
        lock = self._lock(path)
        if lock is None:
            return
        try:
            # Re-check under the lock: a worker may have replaced the file with a valid record meanwhile.
            try:
                if path.read_bytes() != raw:
                    return
            except FileNotFoundError:
                return
            except OSError as exc:
                raise JournalError(f"cannot read journal record {path}: {exc}") from exc
            self._quarantine(path, reason, quarantined)
        finally:
            lock.release(remove=not path.exists())

    @staticmethod
    def _remove_stale_temp(path: Path) -> None:
        try:
            if time.time() - path.stat().st_mtime > _STALE_TEMP_SECONDS:
                os.unlink(path)
                logger.info("removed stale journal temp file %s", path)
        except OSError:
            pass
