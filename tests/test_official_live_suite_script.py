"""scripts/run_official_live_suite.py without the registry: its server start and its verdict on a suite run.

(CI runs the script itself against the real official release; here a stand-in suite exercises the parts
that must not go false-green: a skipped test is a failure, and the exported variables reach the suite.)
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "run_official_live_suite.py"

pytestmark = pytest.mark.timeout(120)


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_official_live_suite", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STAND_IN = '''
import os
import httpx
import pytest

BASE = os.environ["CYCLES_BASE_URL"]
HEADERS = {"X-Cycles-API-Key": os.environ["CYCLES_API_KEY"]}


def test_readiness():
    assert httpx.get(f"{BASE}/actuator/health/readiness").status_code == 200


def test_balances_of_the_exported_tenant():
    response = httpx.get(f"{BASE}/v1/balances", params={"tenant": os.environ["CYCLES_TENANT"]}, headers=HEADERS)
    assert response.status_code == 200 and response.json()["balances"]
'''


def test_started_server_exports_what_the_suite_reads_and_a_skip_is_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # our venv's plugins only slow the stand-in down
    script = _script()
    process, exported = script.start_server(tmp_path)
    try:
        assert set(exported) == {"CYCLES_BASE_URL", "CYCLES_API_KEY", "CYCLES_TENANT"}
        assert exported["CYCLES_TENANT"] == script.TENANT
        assert httpx.get(f"{exported['CYCLES_BASE_URL']}/actuator/health/liveness").json() == {"status": "UP"}

        suite_dir = tmp_path / "suite"
        suite_dir.mkdir()
        suite = suite_dir / "test_live_server.py"
        suite.write_text(STAND_IN)
        python = Path(sys.executable)
        assert script.run_suite(python, suite, exported) == (0, "2/2 passed")

        suite.write_text(STAND_IN + "\n\n@pytest.mark.skip(reason='no server')\ndef test_skipped():\n    pass\n")
        code, summary = script.run_suite(python, suite, exported)
        assert (code, summary) == (1, "2/3 passed (1 failed, errored or skipped)")
    finally:
        process.terminate()
        assert process.wait(20) == 0
