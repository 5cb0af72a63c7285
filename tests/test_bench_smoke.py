"""Every benchmark script runs with tiny parameters and prints its figures (no timing is asserted: figures are
for people; this only keeps the scripts from rotting)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"

pytestmark = pytest.mark.timeout(300)


def run(script: str, *args: str) -> str:
    completed = subprocess.run(
        [sys.executable, str(BENCH / script), *args], cwd=ROOT, capture_output=True, text=True, timeout=280,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    return completed.stdout


def test_every_bench_script_is_covered_here() -> None:
    source = Path(__file__).read_text()
    skipped = ("soak_flapping_server.py",)  # a soak, run by its own marker, not a benchmark
    scripts = sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_") and p.name not in skipped)
    assert [s for s in scripts if f'"{s}"' not in source] == []


def test_bench_import() -> None:
    assert "import runcycles" in run("bench_import.py", "--runs", "2", "--top", "3")


def test_bench_lifecycle() -> None:
    out = run("bench_lifecycle.py", "--calls", "5")
    assert re.search(r"\d+(\.\d+)? ms", out), out


def test_bench_journal() -> None:
    out = run("bench_journal.py", "--calls", "3", "--concurrent", "2")
    # process mode never fsyncs; full mode pays its barriers (the counts are exact, the times are not asserted)
    assert re.search(r"sync  guarded call, journal process:\s+\d+\.\d+ ms/call, 0\.00 fsyncs/call", out), out
    assert re.search(r"sync  guarded call, journal full   :\s+\d+\.\d+ ms/call, [1-9]\d*\.\d+ fsyncs/call", out), out


def test_bench_server() -> None:
    out = run("bench_server.py", "--quick")
    assert re.search(r"loopback HTTP \(raw asyncio load gen\)\s+\d+ cycles/s", out), out
    assert "in process, in-memory SQLite" in out
    if sys.platform.startswith("linux"):
        assert re.search(r"server CPU: \d+\.\d+ ms per request", out), out


def test_bench_overhead() -> None:
    for flavour in ("sync", "async"):
        out = run("bench_overhead.py", "--flavour", flavour, "--batches", "3", "--batch", "2")
        assert f"{flavour}, journal off" in out
        assert "guarded - raw at p10:" in out
    out = run("bench_overhead.py", "--batches", "3", "--batch", "2", "--journal", "--journal-sync", "process")
    assert "sync, journal on (process)" in out


def test_bench_memory() -> None:
    out = run("bench_memory.py", "--quick")
    assert re.search(r"200 live async guarded reservations.* KB per reservation", out), out
    assert "client side per live reservation" in out


def test_compare_official() -> None:
    # --no-install: use the official client's venv when it exists, else say so and measure our side only.
    out = run(
        "compare_official.py", "--reps", "1", "--calls", "5", "--warmup", "2", "--small", "4", "--large", "8",
        "--cap", "30", "--import-reps", "1", "--no-install",
    )
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    for label in ("sync, default (journal on)", "async, default (journal on)", "sync, journal off",
                  "async, journal off", "4 concurrent async 200 ms calls, journal on",
                  "8 concurrent async calls, journal on", "import"):
        assert label in rows, out
        ours = rows[label].split("|")[3].strip()
        assert re.fullmatch(r"\d+\.\d+ m?s", ours), rows[label]
    official_present = "WARNING" not in out
    assert ("n/a" not in rows["sync, journal off"].split("|")[2]) is official_present, out


def test_profile_call() -> None:
    for flavour in ("sync", "async"):
        out = run("profile_call.py", "--server", "mock", "--flavour", flavour, "--calls", "5", "--warmup", "2",
                  "--cprofile", "3")
        assert re.search(r'"median_us": \d+(\.\d+)?', out), out
        assert "function calls" in out, out


def test_ab_trees() -> None:
    out = run("ab_trees.py", "--a", ".", "--b", ".", "--reps", "2", "--", "--server", "mock", "--calls", "5",
              "--warmup", "2")
    assert re.search(r"B/A: median \d+\.\d+ +p10 \d+\.\d+ +cpu \d+\.\d+", out), out
