"""The README's Python examples pass ``mypy --strict`` as written (issue 8).

Every ```python block of README.md is extracted, in order, into one module (the blocks read as one continuing
example: later ones may use names earlier ones defined) and type-checked with the repository's mypy settings.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(300)


def python_blocks(markdown: str) -> list[str]:
    """The bodies of the ```python fenced blocks, in order."""
    return [match.group(1) for match in re.finditer(r"^```python[ \t]*\n(.*?)^```", markdown, re.M | re.S)]


def test_python_blocks_are_found() -> None:
    assert python_blocks("x\n```python\na = 1\n```\n```bash\nls\n```\n```python\nb = 2\n```\n") == [
        "a = 1\n",
        "b = 2\n",
    ]


def test_readme_python_blocks_pass_mypy_strict(tmp_path: Path) -> None:
    blocks = python_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    assert blocks, "README.md has no ```python blocks"
    module = tmp_path / "readme_examples.py"
    module.write_text("\n\n".join(blocks), encoding="utf-8")
    completed = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--show-error-codes", str(module)],
        capture_output=True, text=True, cwd=REPO, timeout=280,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
