"""The public API's static types, checked with ``mypy --strict`` (issue 8): `assert_type` lines that must hold
(tests/typing/public_api.py) and mistakes that must be reported (tests/typing/public_api_errors.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TYPING = REPO / "tests" / "typing"

pytestmark = pytest.mark.timeout(300)


def mypy(*files: Path) -> tuple[int, str]:
    """Run ``mypy --strict`` on ``files`` (the repository's configuration) and return (exit code, output)."""
    completed = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--hide-error-context",
         "--show-error-codes", *map(str, files)],
        capture_output=True, text=True, cwd=REPO, timeout=280,
    )
    return completed.returncode, completed.stdout + completed.stderr


def test_public_api_types_hold_under_mypy_strict() -> None:
    code, output = mypy(TYPING / "public_api.py")
    assert code == 0, output


def test_mistakes_are_mypy_errors() -> None:
    path = TYPING / "public_api_errors.py"
    expected = {n for n, line in enumerate(path.read_text().splitlines(), 1) if "# E:" in line}
    code, output = mypy(path)
    assert code == 1, output
    reported = {int(n) for n in re.findall(rf"{re.escape(path.name)}:(\d+): error", output)}
    assert reported == expected, output
