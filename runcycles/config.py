"""Client configuration: :class:`CyclesConfig` and :meth:`CyclesConfig.from_env`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

import attrs

__all__ = ["CyclesConfig"]

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
_SUBJECT_FIELDS = ("tenant", "workspace", "app", "workflow", "agent", "toolset")


def _check_url(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{attribute.name} must not be empty")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{attribute.name} must be an http(s) URL, got {value!r}")


def _check_key(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{attribute.name} must not be empty")


def _positive(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{attribute.name} must be a positive integer (milliseconds), got {value!r}")


def _positive_bytes(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{attribute.name} must be a positive integer (bytes), got {value!r}")


def _non_negative(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{attribute.name} must be a non-negative integer, got {value!r}")


def _multiplier(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 1:
        raise ValueError(f"{attribute.name} must be a number >= 1, got {value!r}")


def _optional_str(_: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{attribute.name} must be a string or None, got {type(value).__name__}")


def _check_journal_sync(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in ("full", "process"):
        raise ValueError(f"{attribute.name} must be 'full' or 'process', got {value!r}")


def _bool(_: object, attribute: attrs.Attribute[bool], value: bool) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{attribute.name} must be a bool, got {value!r}")


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

    base_url: str = attrs.field(validator=_check_url)
    api_key: str = attrs.field(validator=_check_key, repr=False)
    tenant: str | None = attrs.field(default=None, validator=_optional_str)
    workspace: str | None = attrs.field(default=None, validator=_optional_str)
    app: str | None = attrs.field(default=None, validator=_optional_str)
    workflow: str | None = attrs.field(default=None, validator=_optional_str)
    agent: str | None = attrs.field(default=None, validator=_optional_str)
    toolset: str | None = attrs.field(default=None, validator=_optional_str)
    connect_timeout_ms: int = attrs.field(default=2000, validator=_positive)
    read_timeout_ms: int = attrs.field(default=5000, validator=_positive)
    retry_enabled: bool = attrs.field(default=True, validator=_bool)
    retry_max_attempts: int = attrs.field(default=5, validator=_non_negative)
    retry_initial_delay_ms: int = attrs.field(default=500, validator=_non_negative)
    retry_multiplier: float = attrs.field(default=2.0, validator=_multiplier)
    retry_max_delay_ms: int = attrs.field(default=30000, validator=_non_negative)
    flush_timeout_ms: int = attrs.field(default=10000, validator=_non_negative)
    journal_enabled: bool = attrs.field(default=True, validator=_bool)
    journal_dir: str | None = attrs.field(default=None, validator=_optional_str)
    extend_timeout_ms: int | None = attrs.field(default=None)
    max_response_bytes: int = attrs.field(default=1_048_576, validator=_positive_bytes)
    replay_verify_after_ms: int = attrs.field(default=518_400_000, validator=_positive)
    journal_sync: Literal["full", "process"] = attrs.field(default="full", validator=_check_journal_sync)

    def __attrs_post_init__(self) -> None:
        value = self.extend_timeout_ms
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ValueError(f"extend_timeout_ms must be a positive integer (milliseconds) or None, got {value!r}")

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

        def get(name: str) -> str | None:
            value = env.get(prefix + name)
            return value if value not in (None, "") else None

        kwargs: dict[str, Any] = {}
        for required, field in (("BASE_URL", "base_url"), ("API_KEY", "api_key")):
            value = get(required)
            if value is None:
                raise ValueError(f"{prefix}{required} environment variable is required")
            kwargs[field] = value
        for name in _SUBJECT_FIELDS:
            if (value := get(name.upper())) is not None:
                kwargs[name] = value
        ints = {
            "CONNECT_TIMEOUT": "connect_timeout_ms",
            "READ_TIMEOUT": "read_timeout_ms",
            "RETRY_MAX_ATTEMPTS": "retry_max_attempts",
            "RETRY_INITIAL_DELAY": "retry_initial_delay_ms",
            "RETRY_MAX_DELAY": "retry_max_delay_ms",
            "FLUSH_TIMEOUT": "flush_timeout_ms",
            "EXTEND_TIMEOUT": "extend_timeout_ms",
            "REPLAY_VERIFY_AFTER": "replay_verify_after_ms",
        }
        for var, field in ints.items():
            if (value := get(var)) is not None:
                try:
                    kwargs[field] = int(value.strip())
                except ValueError:
                    raise ValueError(f"{prefix}{var} must be an integer (milliseconds), got {value!r}") from None
        if (value := get("MAX_RESPONSE_BYTES")) is not None:
            try:
                kwargs["max_response_bytes"] = int(value.strip())
            except ValueError:
                raise ValueError(f"{prefix}MAX_RESPONSE_BYTES must be an integer (bytes), got {value!r}") from None
        if (value := get("RETRY_MULTIPLIER")) is not None:
            try:
                kwargs["retry_multiplier"] = float(value.strip())
            except ValueError:
                raise ValueError(f"{prefix}RETRY_MULTIPLIER must be a number, got {value!r}") from None
        for var, field in (("RETRY_ENABLED", "retry_enabled"), ("JOURNAL_ENABLED", "journal_enabled")):
            if (value := get(var)) is not None:
                lowered = value.strip().lower()
                if lowered in _TRUE:
                    kwargs[field] = True
                elif lowered in _FALSE:
                    kwargs[field] = False
                else:
                    raise ValueError(f"{prefix}{var} must be true/false/1/0/yes/no, got {value!r}")
        if (value := get("JOURNAL_DIR")) is not None:
            kwargs["journal_dir"] = value
        if (value := get("JOURNAL_SYNC")) is not None:
            kwargs["journal_sync"] = value.strip().lower()
        try:
            return cls(**kwargs)
        except ValueError as exc:
            raise ValueError(f"{exc} (from {prefix}* environment variables)") from None
