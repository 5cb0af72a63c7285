"""`import runcycles` stays light: no server, no test tooling, no second event-loop library."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HEAVY = ["uvicorn", "runcycles.local", "trio", "pytest", "hypothesis", "jsonschema", "yaml"]

PROBE = """
import json, sys
import runcycles
print(json.dumps({name: name in sys.modules for name in %r}))
"""


def _probe(statement: str) -> dict[str, bool]:
    completed = subprocess.run(
        [sys.executable, "-c", PROBE.replace("import runcycles", statement) % (HEAVY,)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, bool] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def test_import_runcycles_does_not_import_heavy_modules() -> None:
    loaded = _probe("import runcycles")
    assert loaded == {name: False for name in HEAVY}


def test_import_of_the_wire_client_modules_stays_light() -> None:
    loaded = _probe("import runcycles.client, runcycles.errors, runcycles.response, runcycles._protocol.outcomes")
    assert loaded == {name: False for name in HEAVY}


def test_the_probe_detects_an_import() -> None:
    # Guards the test above against passing vacuously (e.g. a probe that never sees sys.modules).
    loaded = _probe("import runcycles, trio")
    assert loaded["trio"] is True
