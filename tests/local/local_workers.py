"""Worker bodies for the concurrency tests (importable by spawned child processes)."""

from __future__ import annotations

import random
import threading

import httpx

from runcycles.local import LocalCyclesServer

USD = "USD_MICROCENTS"


def reserve_commit_loop(client: httpx.Client, tag: str, rounds: int, seed: int) -> int:
    """Reserve and settle ``rounds`` times under REJECT; returns the total charged (0 for denied rounds)."""
    rng = random.Random(seed)
    charged = 0
    for i in range(rounds):
        estimate = rng.randint(1, 400)
        created = client.post(
            "/v1/reservations",
            json={
                "idempotency_key": f"{tag}-r{i}",
                "subject": {"tenant": "acme", "agent": f"a{seed % 3}"},
                "action": {"kind": "llm.completion", "name": "m"},
                "estimate": {"unit": USD, "amount": estimate},
                "overage_policy": "REJECT",
            },
        )
        if created.status_code == 409:
            assert created.json()["error"] == "BUDGET_EXCEEDED", created.text
            continue
        assert created.status_code == 200, created.text
        rid = created.json()["reservation_id"]
        choice = rng.random()
        if choice < 0.15:
            response = client.post(f"/v1/reservations/{rid}/release", json={"idempotency_key": f"{tag}-l{i}"})
            assert response.status_code == 200, response.text
            continue
        # Sometimes try to overspend: REJECT must refuse, then settle within the estimate.
        actual = estimate + rng.randint(1, 50) if choice < 0.3 else rng.randint(0, estimate)
        body = {"idempotency_key": f"{tag}-c{i}", "actual": {"unit": USD, "amount": actual}}
        response = client.post(f"/v1/reservations/{rid}/commit", json=body)
        if actual > estimate:
            assert response.status_code == 409 and response.json()["error"] == "BUDGET_EXCEEDED"
            body = {"idempotency_key": f"{tag}-c{i}b", "actual": {"unit": USD, "amount": estimate}}
            response = client.post(f"/v1/reservations/{rid}/commit", json=body)
        assert response.status_code == 200, response.text
        charged += response.json()["charged"]["amount"]
    return charged


def process_worker(args: tuple[str, str, int, int, int]) -> int:
    """One child process: its own server on the shared file, ``threads`` clients; returns total charged."""
    path, key, index, threads, rounds = args
    server = LocalCyclesServer(path)
    try:
        return run_threads(server, key, f"p{index}", threads, rounds, seed=index * 100)
    finally:
        server.close()


def run_threads(server: LocalCyclesServer, key: str, tag: str, threads: int, rounds: int, seed: int = 0) -> int:
    """Run :func:`reserve_commit_loop` on ``threads`` threads (one client each); re-raises a worker failure."""
    totals = [0] * threads
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def run(t: int) -> None:
        try:
            headers = {"X-Cycles-API-Key": key}
            with httpx.Client(transport=server.transport(), base_url="http://local", headers=headers) as client:
                start.wait()
                totals[t] = reserve_commit_loop(client, f"{tag}t{t}", rounds, seed + t)
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    return sum(totals)
