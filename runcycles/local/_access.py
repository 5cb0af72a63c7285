"""What a tenant API key may do: its ``permissions`` and its ``scope_filter`` (admin spec, ApiKey).

Permissions follow the admin spec's ``Permission`` enum and wildcard rules: ``admin:write`` satisfies any
``*:write`` requirement and ``admin:read`` any ``*:read`` one (never a write); a granular legacy
``admin:<x>:<op>`` satisfies ``<x>:<op>``. A key created without ``permissions`` gets the spec's default
tenant set; ``permissions: []`` grants nothing.

A scope filter is a list of ``level:value`` entries (``value`` may be ``*``). Entries of the same level are
alternatives; different levels must all hold. ``["workspace:eng", "agent:*"]`` therefore admits scopes in
workspace ``eng`` that name an agent. A key with no (or an empty) filter is not narrowed.
"""

from __future__ import annotations

from typing import Any

import attrs

from ._validate import SCOPE_LEVELS, SUBJECT_VALUE, SchemaError

PERMISSIONS = (
    "reservations:create",
    "reservations:commit",
    "reservations:release",
    "reservations:extend",
    "reservations:list",
    "balances:read",
    "budgets:read",
    "budgets:write",
    "policies:read",
    "policies:write",
    "webhooks:read",
    "webhooks:write",
    "events:read",
    "admin:read",
    "admin:write",
    "admin:tenants:read",
    "admin:tenants:write",
    "admin:budgets:read",
    "admin:budgets:write",
    "admin:policies:read",
    "admin:policies:write",
    "admin:apikeys:read",
    "admin:apikeys:write",
    "admin:webhooks:read",
    "admin:webhooks:write",
    "admin:events:read",
    "admin:audit:read",
)
DEFAULT_PERMISSIONS = [
    "reservations:create",
    "reservations:commit",
    "reservations:release",
    "reservations:extend",
    "reservations:list",
    "balances:read",
    "budgets:read",
    "budgets:write",
    "policies:read",
    "policies:write",
]


def check_permissions(value: Any, path: str) -> None:
    """Schema check: an array of known ``Permission`` names."""
    if not isinstance(value, list):
        raise SchemaError(f"{path} must be an array")
    for index, item in enumerate(value):
        if item not in PERMISSIONS:
            shown = item[:64] if isinstance(item, str) else type(item).__name__
            raise SchemaError(f"{path}[{index}] is not a known permission: {shown!r}")


def check_scope_filter(value: Any, path: str) -> None:
    """Schema check: an array of ``level:value`` / ``level:*`` entries."""
    if not isinstance(value, list):
        raise SchemaError(f"{path} must be an array")
    if len(value) > 64:
        raise SchemaError(f"{path} must have at most 64 items")
    for index, item in enumerate(value):
        level, sep, wanted = item.partition(":") if isinstance(item, str) else ("", "", "")
        if not sep or level not in SCOPE_LEVELS or not (wanted == "*" or SUBJECT_VALUE.match(wanted)):
            raise SchemaError(f"{path}[{index}] must be level:value or level:* (levels: {', '.join(SCOPE_LEVELS)})")
        if len(wanted) > 128:
            raise SchemaError(f"{path}[{index}] must be at most 128 characters after the level")


@attrs.frozen
class Grant:
    """The effective rights of one authenticated tenant key."""

    permissions: frozenset[str]
    scope_filter: dict[str, frozenset[str]]

    @classmethod
    def of(cls, doc: dict[str, Any]) -> Grant:
        """The grant stored in an API key document (defaults when ``permissions`` was never set)."""
        permissions = doc.get("permissions")
        if not isinstance(permissions, list):
            permissions = DEFAULT_PERMISSIONS
        levels: dict[str, set[str]] = {}
        for entry in doc.get("scope_filter") or []:
            level, _, wanted = str(entry).partition(":")
            levels.setdefault(level, set()).add(wanted.lower())
        return cls(
            permissions=frozenset(str(p) for p in permissions),
            scope_filter={level: frozenset(values) for level, values in levels.items()},
        )

    def allows(self, permission: str) -> bool:
        """Whether the key holds ``permission`` directly or through an admin wildcard."""
        if permission in self.permissions or f"admin:{permission}" in self.permissions:
            return True
        operation = permission.rsplit(":", 1)[-1]
        return operation in ("read", "write") and f"admin:{operation}" in self.permissions

    def covers(self, scope_path: str) -> bool:
        """Whether a scope path (``tenant:a/workspace:b/...``) lies inside the key's scope filter."""
        if not self.scope_filter:
            return True
        segments: dict[str, str] = {}
        for segment in scope_path.lower().split("/"):
            level, _, value = segment.partition(":")
            segments[level] = value
        for level, allowed in self.scope_filter.items():
            found = segments.get(level)
            if found is None or not ("*" in allowed or found in allowed):
                return False
        return True

    def reservation_filter(self) -> tuple[list[str], list[Any]]:
        """SQL conditions (on the ``s_<level>`` columns) and parameters selecting covered reservations."""
        where: list[str] = []
        params: list[Any] = []
        for level, allowed in sorted(self.scope_filter.items()):
            column = f"s_{level}"  # lower-cased subject values, as in the reservation's scope_path
            if "*" in allowed:
                where.append(f"{column} IS NOT NULL")
            else:
                where.append(f"{column} IN ({','.join('?' * len(allowed))})")
                params.extend(sorted(allowed))
        return where, params
