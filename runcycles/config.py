"""Client configuration: :class:`CyclesConfig` and :meth:`CyclesConfig.from_env`."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs
from attrs import validators as av

from ._worded import POSITIVE_MS, Worded, http_url, int_at_least, not_blank, not_bool
from .validation import STANDARD_SUBJECT_FIELDS as _SUBJECT_FIELDS

__all__ = ["CyclesConfig"]

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})

_URL = http_url()
_KEY = not_blank()
_POSITIVE_MS = int_at_least(1, POSITIVE_MS)
_POSITIVE_BYTES = int_at_least(1, "must be a positive integer (bytes), got {value!r}")
_NON_NEGATIVE = int_at_least(0, "must be a non-negative integer, got {value!r}")
_MULTIPLIER = Worded(
    None,
    (not_bool, "must be a number >= 1, got {value!r}"),
    (av.instance_of((int, float)), "must be a number >= 1, got {value!r}"),
    (av.ge(1), "must be a number >= 1, got {value!r}"),
)
_BOOL = Worded(None, (av.instance_of(bool), "must be a bool, got {value!r}"))
_OPTIONAL_STR = av.optional(Worded(None, (av.instance_of(str), "must be a string or None, got {type}")))
_JOURNAL_SYNC = Worded(None, (av.in_(("full", "process")), "must be 'full' or 'process', got {value!r}"))
_EXTEND_TIMEOUT = av.optional(int_at_least(1, "must be a positive integer (milliseconds) or None, got {value!r}"))


@attrs.frozen(kw_only=False)
class CyclesConfig:
    """Where the Cycles server is, who is calling, and how patient to be.

    Times are in milliseconds. The subject fields (``tenant`` … ``toolset``) are the defaults used by
    guarded calls that do not name their own. ``repr()`` never shows ``api_key``.

    ``extend_timeout_ms`` (optional) is a tighter deadline for heartbeat extend requests; when unset the
    heartbeat derives one from the lease so that short leases survive (see the README).

    Every attempt (reserve, extend, commit, event, release, reads) is bounded as a whole by
    ``connect_timeout_ms + read_timeout_ms`` (`request_timeout_budget_ms`), however slowly the server
    trickles its answer; a blown budget is a transport failure. ``max_response_bytes`` (default 1 MiB) is
    how much of a response body is read: a longer one is cut and read as a malformed (ambiguous) answer.
    ``replay_verify_after_ms`` (default 6 days, inside the reference server's 7-day idempotency window) is
    the age past which a journaled settlement is verified with a GET of its reservation before anything
    is resent: committed means settled; otherwise the record is quarantined and reported, never resent blind.

    ``journal_sync`` is how durable a journal record is before the settlement request leaves: ``"full"``
    (default) fsyncs the record and its directory, so it survives a power cut or an OS crash; ``"process"``
    does no fsync: the record survives a crash or kill of this process (it is in the OS page cache), not of
    the machine.
    """

    base_url: str = attrs.field(validator=_URL)
    api_key: str = attrs.field(validator=_KEY, repr=False)
    tenant: str | None = attrs.field(default=None, validator=_OPTIONAL_STR)
    workspace: str | None = attrs.field(default=None, validator=_OPTIONAL_STR)
    app: str | None = attrs.field(default=None, validator=_OPTIONAL_STR)
    workflow: str | None = attrs.field(default=None, validator=_OPTIONAL_STR)
    agent: str | None = attrs.field(default=None, validator=_OPTIONAL_STR)
    toolset: str | None = attrs.field(default=None, validator=_OPTIONAL_STR)
    connect_timeout_ms: int = attrs.field(default=2000, validator=_POSITIVE_MS)
    read_timeout_ms: int = attrs.field(default=5000, validator=_POSITIVE_MS)
    retry_enabled: bool = attrs.field(default=True, validator=_BOOL)
    retry_max_attempts: int = attrs.field(default=5, validator=_NON_NEGATIVE)
    retry_initial_delay_ms: int = attrs.field(default=500, validator=_NON_NEGATIVE)
    retry_multiplier: float = attrs.field(default=2.0, validator=_MULTIPLIER)
    retry_max_delay_ms: int = attrs.field(default=30000, validator=_NON_NEGATIVE)
    flush_timeout_ms: int = attrs.field(default=10000, validator=_NON_NEGATIVE)
    journal_enabled: bool = attrs.field(default=True, validator=_BOOL)
    journal_dir: str | None = attrs.field(default=None, validator=_OPTIONAL_STR)
    extend_timeout_ms: int | None = attrs.field(default=None, validator=_EXTEND_TIMEOUT)
    max_response_bytes: int = attrs.field(default=1_048_576, validator=_POSITIVE_BYTES)
    replay_verify_after_ms: int = attrs.field(default=518_400_000, validator=_POSITIVE_MS)
    journal_sync: Literal["full", "process"] = attrs.field(default="full", validator=_JOURNAL_SYNC)

    @property
    def request_timeout_budget_ms(self) -> int:
        """The enforced upper bound of one whole attempt (connect, send, headers, body): connect plus read
        timeout."""
        return self.connect_timeout_ms + self.read_timeout_ms

    def default_subject(self) -> dict[str, str]:
        """The configured subject fields that are set, in canonical order."""
        return {name: value for name in _SUBJECT_FIELDS if (value := getattr(self, name))}

    @classmethod
    def from_env(cls, prefix: str = "CYCLES_", environ: Mapping[str, str] | None = None) -> CyclesConfig:
        """Build a config from ``<prefix>BASE_URL``, ``<prefix>API_KEY`` and the optional variables.

        Raises ``ValueError`` naming the variable when a required one is missing or a value is malformed.
        """
        env = os.environ if environ is None else environ
        kwargs: dict[str, Any] = {}
        for var, field in _REQUIRED_ENV:
            value = env.get(prefix + var)
            if not value:
                raise ValueError(f"{prefix}{var} environment variable is required")
            kwargs[field] = value
        for var, field, parse in _OPTIONAL_ENV:
            if value := env.get(prefix + var):
                kwargs[field] = parse(value, prefix + var)
        try:
            return cls(**kwargs)
        except ValueError as exc:
            raise ValueError(f"{exc} (from {prefix}* environment variables)") from None


# ---------------------------------------------------------------------------------------------------------
# Environment variables: <prefix>VAR -> field, with the parser of its text (errors name the variable).
# ---------------------------------------------------------------------------------------------------------


def _text(value: str, _var: str) -> str:
    return value


def _parser(convert: Callable[[str], Any], expected: str) -> Callable[[str, str], Any]:
    def parse(value: str, var: str) -> Any:
        try:
            return convert(value.strip())
        except ValueError:
            raise ValueError(f"{var} must be {expected}, got {value!r}") from None

    return parse


_milliseconds = _parser(int, "an integer (milliseconds)")
_count = _parser(int, "an integer")
_bytes = _parser(int, "an integer (bytes)")
_number = _parser(float, "a number")


def _flag(value: str, var: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{var} must be true/false/1/0/yes/no, got {value!r}")


def _keyword(value: str, _var: str) -> str:
    return value.strip().lower()


_REQUIRED_ENV = (("BASE_URL", "base_url"), ("API_KEY", "api_key"))
_OPTIONAL_ENV: tuple[tuple[str, str, Callable[[str, str], Any]], ...] = (
    *((name.upper(), name, _text) for name in _SUBJECT_FIELDS),
    ("CONNECT_TIMEOUT", "connect_timeout_ms", _milliseconds),
    ("READ_TIMEOUT", "read_timeout_ms", _milliseconds),
    ("RETRY_MAX_ATTEMPTS", "retry_max_attempts", _count),
    ("RETRY_INITIAL_DELAY", "retry_initial_delay_ms", _milliseconds),
    ("RETRY_MAX_DELAY", "retry_max_delay_ms", _milliseconds),
    ("FLUSH_TIMEOUT", "flush_timeout_ms", _milliseconds),
    ("EXTEND_TIMEOUT", "extend_timeout_ms", _milliseconds),
    ("REPLAY_VERIFY_AFTER", "replay_verify_after_ms", _milliseconds),
    ("MAX_RESPONSE_BYTES", "max_response_bytes", _bytes),
    ("RETRY_MULTIPLIER", "retry_multiplier", _number),
    ("RETRY_ENABLED", "retry_enabled", _flag),
    ("JOURNAL_ENABLED", "journal_enabled", _flag),
    ("JOURNAL_DIR", "journal_dir", _text),
    ("JOURNAL_SYNC", "journal_sync", _keyword),
)
