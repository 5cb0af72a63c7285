"""Run the official Python client's live-server suite against ``runcycles serve``.

Usage::

    .venv/bin/python scripts/run_official_live_suite.py [--venv DIR] [--version 0.5.3]

1. Makes (or reuses) a virtualenv, ``.venv-official/`` by default, holding PyPI ``runcycles==<version>`` (the
   official client: same import name as ours, hence its own venv), pytest and requests (which the suite needs).
2. Downloads that release's sdist and extracts only ``tests/integration/test_live_server.py``.
3. Starts ``runcycles serve`` (this checkout, run by the Python running this script) on a free loopback port
   with a seeded tenant and budget, and runs the suite with ``CYCLES_BASE_URL``, ``CYCLES_API_KEY`` and
   ``CYCLES_TENANT`` set, as the official nightly workflow does.

Exits 0 when every test passed (a skipped test counts as a failure: the suite skips itself when its
variables or ``requests`` are missing). If the package registry cannot be reached, prints that the run was
skipped and why, and exits 0. Any other failure exits 1.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import venv
import xml.etree.ElementTree as ET
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SUITE = "tests/integration/test_live_server.py"
TENANT = "integration-test"
BUDGET = 100_000_000_000  # $1,000 in USD_MICROCENTS: plenty for the suite's few reservations


class Skip(Exception):
    """The package registry cannot be reached."""


def _pip(python: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _why(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    useful = [line for line in lines if "ERROR" in line or "Error" in line] or lines
    return useful[-1].strip() if useful else f"pip exited {result.returncode}"


def _check_registry(python: Path, failed: subprocess.CompletedProcess[str], version: str) -> None:
    """After a failed pip call: raise :class:`Skip` if the registry is unreachable, else fail loudly.

    The probe asks pip for the versions of ``pip`` itself, which every reachable index lists.
    """
    probe = _pip(python, "index", "versions", "pip", "-vv", timeout=300)
    if probe.returncode != 0:
        fetch = [line for line in probe.stdout.splitlines() if line.startswith("Could not fetch URL")]
        reason = fetch[0][:300] if fetch else _why(probe)
        raise Skip(f"the package registry cannot be reached: {reason}")
    raise RuntimeError(f"pip failed although the registry answers (runcycles=={version}): {_why(failed)}")


def ensure_venv(path: Path, version: str) -> Path:
    """The venv's Python, with the official client ``version``, pytest and requests installed."""
    python = path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if not python.exists():
        print(f"creating {path}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(path)
    wanted = [f"runcycles=={version}", "pytest", "requests"]
    installed = _pip(python, "install", "-q", *wanted)
    if installed.returncode != 0:
        _check_registry(python, installed, version)
    return python


def fetch_suite(python: Path, version: str, into: Path) -> Path:
    """Download the release's sdist and extract its live-server test file into ``into``."""
    release = f"runcycles=={version}"
    downloaded = _pip(python, "download", "-q", "--no-binary", ":all:", "--no-deps", release, "-d", str(into))
    if downloaded.returncode != 0:
        _check_registry(python, downloaded, version)
    [sdist] = into.glob(f"runcycles-{version}.tar.gz")
    target = into / "test_live_server.py"
    with tarfile.open(sdist) as archive:
        member = archive.getmember(f"runcycles-{version}/{SUITE}")
        source = archive.extractfile(member)
        assert source is not None, f"{SUITE} is not a regular file in {sdist.name}"
        target.write_bytes(source.read())
    return target


def start_server(workdir: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """``runcycles serve`` on a free port; returns the process and the variables its banner exported."""
    command = [
        sys.executable, "-m", "runcycles", "serve", "--port", "0", "--db", str(workdir / "live.db"),
        "--tenant", TENANT, "--budget", str(BUDGET),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    assert process.stdout is not None
    for line in process.stdout:  # the banner is printed once the port is bound
        if "export " in line:
            exported = dict(item.split("=", 1) for item in line.split("export ", 1)[1].split())
            return process, exported
    process.wait(10)
    raise RuntimeError(f"runcycles serve exited ({process.returncode}) before printing its banner")


def run_suite(python: Path, suite: Path, exported: dict[str, str]) -> tuple[int, str]:
    """Run the suite in its own directory (no conftest or config of ours); returns (exit code, summary)."""
    report = suite.parent / "report.xml"
    (suite.parent / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CYCLES_", "PYTHON"))}
    env.update(exported)
    result = subprocess.run(
        [str(python), "-m", "pytest", "-v", "-p", "no:cacheprovider", f"--junitxml={report}", suite.name],
        cwd=suite.parent,
        env=env,
        timeout=600,
    )
    suites = ET.parse(report).getroot()
    node = suites if suites.tag == "testsuite" else suites.find("testsuite")
    assert node is not None, "pytest wrote no test suite report"
    total = int(node.get("tests", 0))
    bad = sum(int(node.get(k, 0)) for k in ("failures", "errors", "skipped"))
    summary = f"{total - bad}/{total} passed" + (f" ({bad} failed, errored or skipped)" if bad else "")
    return (0 if result.returncode == 0 and bad == 0 and total > 0 else 1), summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=REPO_ROOT / ".venv-official", help="venv for the official client")
    parser.add_argument("--version", default="0.5.3", help="official runcycles release (default: %(default)s)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cycles-official-") as tmp:
        workdir = Path(tmp)
        try:
            python = ensure_venv(args.venv, args.version)
            suite = fetch_suite(python, args.version, workdir)
        except Skip as why:
            print(f"official live suite SKIPPED: {why}")
            return 0
        except (RuntimeError, subprocess.TimeoutExpired, KeyError, ValueError) as exc:
            print(f"official live suite FAILED to set up: {exc}")
            return 1
        try:
            process, exported = start_server(workdir)
        except RuntimeError as exc:
            print(f"official live suite FAILED: {exc}")
            return 1
        try:
            code, summary = run_suite(python, suite, exported)
        finally:
            process.terminate()
            process.wait(20)
    print(f"official live suite (runcycles=={args.version}) against runcycles serve: {summary}")
    return code


if __name__ == "__main__":
    sys.exit(main())
