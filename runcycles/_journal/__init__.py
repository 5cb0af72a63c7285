"""Durable settlement journal: one record per unsettled spend, written before the request leaves.

The journal implements the durable part of the client recovery profile: a record is persisted atomically
(written whole under another name, then renamed) before the first commit or event request is sent, survives
process restarts, retry exhaustion and authentication failures, and is deleted only after a valid settlement
or an understood terminal rejection. In ``full`` sync mode the record is durable first: a fresh record is
written into a spare file whose directory entry was synced ahead of time and fdatasynced (one barrier); a
rewrite, or a fresh record when no spare is ready, is fsynced and its directory too (two barriers).

Modules: `record` (the value type and its JSON), `paths` (fingerprint, roots, file names), `locks` (claims
and owner locks), `writer` (atomic writes and the group commit), `async_jobs` (async callers' batches on the
journal thread, deferred deletes), `spares` (pre-synced spare files),
`orphans` (spares left by a process that is gone), `store` (the `Journal` of one partition).
"""

from __future__ import annotations

from ..errors import JournalError
from .async_jobs import defer_async as defer_async_job
from .async_jobs import run_async as run_async_job
from .paths import default_journal_root, fallback_root, journal_filename, journal_fingerprint
from .record import JOURNAL_VERSION, JournalBusyError, JournalRecord, LoadResult, Mode
from .store import Journal
from .writer import GROUP, SyncMode

__all__ = [
    "GROUP",
    "JOURNAL_VERSION",
    "Journal",
    "JournalBusyError",
    "JournalError",
    "JournalRecord",
    "LoadResult",
    "Mode",
    "SyncMode",
    "default_journal_root",
    "defer_async_job",
    "fallback_root",
    "journal_filename",
    "journal_fingerprint",
    "run_async_job",
]
