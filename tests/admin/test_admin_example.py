"""examples/admin_setup.py runs as documented, without network, and does what it prints."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT


def test_admin_setup_example_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "admin_setup.py")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "tenant acme: ACTIVE"
    assert "credited: allocated $10.00 -> $15.00" in lines
    assert "refused while frozen: BUDGET_FROZEN" in lines
    assert any(line.startswith("tenant:acme ") and line.endswith("remaining $15.00") for line in lines)
    assert lines[-1] == "the agents' key sees 2 budgets"
    assert done.stderr == ""
