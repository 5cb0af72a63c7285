"""`import runcycles` does not load the admin client; the admin client and the CLI stay light themselves."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT

WATCH = ["runcycles.admin", "runcycles._cli_admin", "runcycles.local", "uvicorn", "trio"]


def _loaded(statement: str) -> dict[str, bool]:
    probe = f"import json, sys\n{statement}\nprint(json.dumps({{n: n in sys.modules for n in {WATCH!r}}}))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result: dict[str, bool] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_runcycles_does_not_import_the_admin_client() -> None:
    assert _loaded("import runcycles") == dict.fromkeys(WATCH, False)


def test_admin_client_and_cli_do_not_import_the_server() -> None:
    loaded = _loaded("import runcycles.admin, runcycles.cli")
    assert loaded["runcycles.admin"] is True
    assert not loaded["runcycles.local"] and not loaded["uvicorn"] and not loaded["trio"]
