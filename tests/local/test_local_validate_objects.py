"""The embedded server's object rules (runcycles.local._validate.obj): required names, property counts,
one-of-required and unknown keys, each failure with its own message, in that order."""

from __future__ import annotations

from typing import Any

import pytest

from runcycles.local._validate import SUBJECT, Check, SchemaError, integer, obj

_STANDARD = "Subject must have at least one standard field (tenant, workspace, app, workflow, agent, or toolset)"
_COUNTED = obj({"a": integer(), "b": integer()}, required=("a",), min_props=2, max_props=3, additional=integer())

# case: (checker, value, expected message; None: accepted)
_CASES: dict[str, tuple[Check, Any, str | None]] = {
    "subject with a standard field": (SUBJECT, {"tenant": "acme", "dimensions": {"k": "v"}}, None),
    "empty subject": (SUBJECT, {}, _STANDARD),
    "subject with only dimensions": (SUBJECT, {"dimensions": {"k": "v"}}, _STANDARD),
    "too many dimensions": (
        SUBJECT,
        {"tenant": "acme", "dimensions": {f"k{i}": "v" for i in range(17)}},
        "dimensions must have at most 16 properties",
    ),
    "required before counts": (_COUNTED, {}, "a is required"),
    "too few properties": (_COUNTED, {"a": 1}, "body must have at least 2 properties"),
    "too many properties": (_COUNTED, {"a": 1, "b": 2, "c": 3, "d": 4}, "body must have at most 3 properties"),
    "counts before values": (_COUNTED, {"a": "x"}, "body must have at least 2 properties"),
    "additional values checked": (_COUNTED, {"a": 1, "c": "x"}, "c must be an integer"),
    "within the counts": (_COUNTED, {"a": 1, "b": 2, "c": 3}, None),
    "not an object": (_COUNTED, [1, 2], "body must be an object"),
    "unknown key without additional": (obj({"a": integer()}), {"a": 1, "z": 2}, "z is not a known field"),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_object_rules(case: str) -> None:
    check, value, message = _CASES[case]
    if message is None:
        check(value, "")
        return
    with pytest.raises(SchemaError) as caught:
        check(value, "")
    assert str(caught.value) == message
