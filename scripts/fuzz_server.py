"""Fuzz ``runcycles serve`` with schemathesis against the Cycles runtime spec (bounded in time).

Starts the real server (a subprocess on a free 127.0.0.1 port, seeded tenant ``fuzz`` with a large budget)
and runs ``st run`` with the checks that must always hold: no 5xx, and every response conforms to the
schema the spec gives for it (status codes and content types included). Exits non-zero on any failure, or
if the server logged an internal error.

Usage::

    python scripts/fuzz_server.py [--spec ../shared/spec/cycles-protocol-v0.yaml] [--max-time 100]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPEC = REPO_ROOT.parent / "shared" / "spec" / "cycles-protocol-v0.yaml"
CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("runcycles serve exited during start-up")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("runcycles serve did not start listening")


def main() -> int:
    """Run the fuzz session; returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--max-time", type=int, default=100, help="seconds of fuzzing (default 100)")
    args = parser.parse_args()
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    if st is None:
        raise SystemExit("schemathesis is not installed (pip install -e '.[dev]')")
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "fuzz.db"
        log = (Path(tmp) / "serve.log").open("w+")
        serve_command = [sys.executable, "-m", "runcycles", "serve", "--port", str(port), "--db", str(db)]
        serve = subprocess.Popen(
            [*serve_command, "--tenant", "fuzz", "--budget", str(10**15)],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        try:
            assert serve.stdout is not None
            key = ""
            for line in serve.stdout:
                if "X-Cycles-API-Key" in line:
                    key = line.split()[-1]
                    break
            _wait_listening(port, serve)
            env = {
                **os.environ,
                "SCHEMATHESIS_HOOKS": "fuzz_hooks",
                "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "scripts"), os.environ.get("PYTHONPATH", "")]),
            }
            command = [st, "run", str(args.spec.resolve()), "--url", f"http://127.0.0.1:{port}"]
            command += ["-H", f"X-Cycles-API-Key: {key}", "--checks", CHECKS, "--max-time", str(args.max_time)]
            command += ["--generation-database", "none", "--no-color", "--request-timeout", "10"]
            command += ["--output-sanitize", "true", "--workers", "1"]
            # In the temporary directory, so that schemathesis' own cache stays out of the repository.
            status = subprocess.run(command, env=env, cwd=tmp, timeout=args.max_time + 120).returncode
        finally:
            serve.send_signal(signal.SIGINT)
            try:
                serve.wait(15)
            except subprocess.TimeoutExpired:
                serve.kill()
        log.seek(0)
        server_log = log.read()
        log.close()
    internal = [line for line in server_log.splitlines() if "internal error" in line]
    if internal:
        print(f"runcycles serve logged {len(internal)} internal errors, e.g.: {internal[0]}", file=sys.stderr)
        return 1
    print(f"fuzz: schemathesis exit status {status}")
    return status


if __name__ == "__main__":
    sys.exit(main())
