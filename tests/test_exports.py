"""The public surface of ``runcycles``: one ``_EXPORTS`` table drives ``__all__``, the lazy ``__getattr__`` and
(checked here) the ``if TYPE_CHECKING:`` re-export block that type checkers read."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import runcycles

INIT = Path(runcycles.__file__)


def _type_checking_imports() -> dict[str, str]:
    """name -> module for every import inside the ``if TYPE_CHECKING:`` block of ``runcycles/__init__.py``."""
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    blocks = [
        node
        for node in tree.body
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
    ]
    assert len(blocks) == 1
    found: dict[str, str] = {}
    for stmt in blocks[0].body:
        assert isinstance(stmt, ast.ImportFrom) and stmt.level == 1 and stmt.module is not None
        for alias in stmt.names:
            # ``X as X`` marks an explicit re-export for mypy --strict and pyright.
            assert alias.asname == alias.name, f"{alias.name} must be imported as `{alias.name} as {alias.name}`"
            assert alias.name not in found, f"{alias.name} imported twice"
            found[alias.name] = stmt.module
    return found


def test_type_checking_block_matches_exports_table() -> None:
    assert _type_checking_imports() == runcycles._EXPORTS


def test_all_is_the_exports_table_plus_version() -> None:
    assert sorted(runcycles.__all__) == sorted([*runcycles._EXPORTS, "__version__"])
    assert len(set(runcycles.__all__)) == len(runcycles.__all__)
    assert dir(runcycles) == sorted(runcycles.__all__)


def test_every_public_name_resolves_to_its_module_and_has_a_docstring() -> None:
    import importlib

    for name, module in runcycles._EXPORTS.items():
        value = getattr(runcycles, name)
        assert value is getattr(importlib.import_module(f"runcycles.{module}"), name)
        assert (inspect.getdoc(value) or "").strip(), f"runcycles.{name} has no docstring"
    assert isinstance(runcycles.__version__, str) and runcycles.__version__


def test_unknown_name_raises_attribute_error() -> None:
    try:
        runcycles.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("expected AttributeError")
