"""The built-in HTTP front of ``runcycles serve`` over real sockets on 127.0.0.1: keep-alive, HTTP/1.0,
pipelining in order, framing errors, head/body/connection limits, timeouts (short configured values) and
graceful shutdown, on an in-memory database (answered inline) and on a file (batched on worker threads)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from front_support import USD, Reader, Served, count_batches, decide_body, front, request
from serve_process import Serve

from runcycles.local import LocalCyclesServer
from runcycles.local._front_threads import Batches, ThreadPool

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["memory", "file"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    with front(None if request.param == "memory" else tmp_path / "c.db") as serving:
        yield serving


def test_keep_alive_serves_several_requests_on_one_connection(served: Served) -> None:
    with served.connect() as sock:
        reader = Reader(sock)
        for i in range(3):
            sock.sendall(request("POST", "/v1/decide", {"X-Cycles-API-Key": served.key}, decide_body(f"k{i}")))
            answer = reader.response()
            assert answer.status == 200 and answer.json()["decision"] == "ALLOW"
            assert answer.headers["content-type"] == "application/json" and "connection" not in answer.headers
            assert answer.headers["x-request-id"] and answer.headers["x-cycles-tenant"] == "acme"


def test_pipelined_requests_are_answered_in_order(served: Served) -> None:
    auth = {"X-Cycles-API-Key": served.key}
    batch = [
        request("GET", "/actuator/health/liveness"),
        request("POST", "/v1/decide", auth, decide_body()),
        request("GET", "/no/such/path", auth),
        request("GET", "/v1/balances?tenant=acme", auth),
        request("POST", "/v1/decide", {}, decide_body()),
    ] * 4
    with served.connect() as sock:
        sock.sendall(b"".join(batch))
        reader = Reader(sock)
        answers = [reader.response() for _ in batch]
    assert [a.status for a in answers] == [200, 200, 404, 200, 401] * 4
    assert answers[0].json() == {"status": "UP"}
    assert answers[3].json()["balances"][0]["scope"] == "tenant:acme"
    assert len({a.headers["x-request-id"] for a in answers if "x-request-id" in a.headers}) == 16


def test_pipelining_beyond_the_read_ahead_bound_still_answers_everything(tmp_path: Path) -> None:
    with front(tmp_path / "c.db", max_pipelined=2) as served, served.connect() as sock:
        auth = {"X-Cycles-API-Key": served.key}
        batch = [request("POST", "/v1/decide", auth, decide_body(f"p{i}")) for i in range(40)]
        sock.sendall(b"".join(batch))
        reader = Reader(sock)
        assert [reader.response().status for _ in batch] == [200] * 40


def test_connection_close_is_honoured_and_later_pipelined_requests_are_not_read(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(request("GET", "/actuator/health", {"Connection": "close"}) + request("GET", "/actuator/health"))
        reader = Reader(sock)
        answer = reader.response()
        assert answer.status == 200 and answer.headers["connection"] == "close"
        assert reader.closed()


def test_http_1_0_closes_unless_keep_alive_is_asked(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(b"GET /actuator/health/liveness HTTP/1.0\r\n\r\n")
        reader = Reader(sock)
        assert reader.response().status == 200
        assert reader.closed()
    with served.connect() as sock:
        reader = Reader(sock)
        for _ in range(2):
            sock.sendall(b"GET /actuator/health/liveness HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            answer = reader.response()
            assert answer.status == 200 and answer.headers["connection"] == "keep-alive"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (
            b"POST /v1/decide HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            400,
        ),
        (b"POST /v1/decide HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),
        (b"POST /v1/decide HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
        (b"POST /v1/decide HTTP/1.1\r\nContent-Length: -3\r\n\r\nabc", 400),
        (b"POST /v1/decide HTTP/1.1\r\nContent-Length: 1x\r\n\r\nabc", 400),
        (b"POST /v1/decide HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        (b"POST /v1/decide HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nabc", 501),
        (b"POST /v1/decide HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
        (b"GET / HTTP/1.1\r\n Folded: header\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nBare: lf\nX: y\r\n\r\n", 400),
        (b"BREW /pot HTTP/1.1\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
    ],
    ids=[
        "cl+te",
        "dup-cl",
        "two-cl",
        "negative-cl",
        "bad-cl",
        "gzip",
        "te-not-chunked",
        "te-gzip-then-chunked",
        "folding",
        "bare-lf",
        "method",
        "tls",
    ],
)
def test_ambiguous_or_malformed_framing_is_refused_and_the_connection_closed(
    served: Served, raw: bytes, status: int
) -> None:
    with served.connect() as sock:
        sock.sendall(raw)
        reader = Reader(sock)
        answer = reader.response()
        assert answer.status == status and answer.headers["connection"] == "close"
        assert answer.json()["error"] == "INVALID_REQUEST"
        assert reader.closed()


def test_a_refusal_comes_after_the_answers_to_requests_read_before_it(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(request("GET", "/actuator/health/liveness") + b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n")
        reader = Reader(sock)
        assert [reader.response().status, reader.response().status] == [200, 400]
        assert reader.closed()


def test_an_oversized_head_is_431_even_before_it_ends(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
        reader = Reader(sock)
        assert reader.response().status == 431
        assert reader.closed()
    with front(max_head_bytes=1000) as small, small.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")
        for i in range(20):  # never finished: refused once over the bound, not buffered without end
            try:
                sock.sendall(b"X-H%d: %s\r\n" % (i, b"v" * 100))
            except OSError:
                break
        reader = Reader(sock)
        answer = reader.response()
        assert answer.status == 431 and "1000 bytes" in answer.json()["message"]


def test_body_limits_declared_chunked_and_a_chunked_body_within_them(served: Served) -> None:
    auth = f"X-Cycles-API-Key: {served.key}\r\n".encode()
    with served.connect() as sock:  # declared too large: answered before a byte of the body is sent
        sock.sendall(b"POST /v1/decide HTTP/1.1\r\n" + auth + b"Content-Length: 5000\r\n\r\n")
        reader = Reader(sock)
        answer = reader.response()
        assert answer.status == 413 and "4096 bytes" in answer.json()["message"]
        assert reader.closed()
    chunk = b"x" * 1500
    with served.connect() as sock:
        sock.sendall(b"POST /v1/decide HTTP/1.1\r\n" + auth + b"Transfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(4):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass  # the server may close before reading it all
        assert Reader(sock).response().status == 413
    body = decide_body("chunked")
    with served.connect() as sock:
        half = len(body) // 2
        sock.sendall(b"POST /v1/decide HTTP/1.1\r\n" + auth + b"Transfer-Encoding: chunked\r\n\r\n")
        sock.sendall(b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, body[:half], len(body) - half, body[half:]))
        answer = Reader(sock).response()
        assert answer.status == 200 and answer.json()["decision"] == "ALLOW"


def test_expect_100_continue_is_answered_before_the_body(served: Served) -> None:
    body = decide_body()
    with served.connect() as sock:
        head = f"POST /v1/decide HTTP/1.1\r\nX-Cycles-API-Key: {served.key}\r\nExpect: 100-continue\r\n"
        sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode())
        reader = Reader(sock)
        assert reader.response().status == 100
        sock.sendall(body)
        assert reader.response().status == 200


def test_head_answers_headers_without_a_body(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(request("HEAD", "/actuator/health/readiness") + request("GET", "/actuator/health/readiness"))
        reader = Reader(sock)
        head = reader.response(head_only=True)
        assert head.status == 200 and int(head.headers["content-length"]) > 0
        assert reader.response().json() == {"status": "UP"}


def test_an_absolute_form_target_is_served(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(request("GET", "http://test/v1/balances?tenant=acme", {"X-Cycles-API-Key": served.key}))
        assert Reader(sock).response().json()["balances"][0]["scope"] == "tenant:acme"


def test_idle_connections_are_closed_after_the_keep_alive_timeout() -> None:
    with front(keep_alive_timeout=0.2) as served:
        with served.connect() as sock:  # never sends anything
            assert Reader(sock).closed()
        with served.connect() as sock:
            sock.sendall(request("GET", "/actuator/health/liveness"))
            reader = Reader(sock)
            assert reader.response().status == 200
            assert reader.closed()


def test_a_request_arriving_too_slowly_gets_408_and_the_connection_closed() -> None:
    with front(request_timeout=0.3, keep_alive_timeout=30) as served, served.connect() as sock:
        sock.sendall(b"POST /v1/decide HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")  # the rest never comes
        reader = Reader(sock)
        answer = reader.response()
        assert answer.status == 408 and answer.headers["connection"] == "close"
        assert reader.closed()


def test_connections_beyond_the_limit_get_503() -> None:
    with front(max_connections=2) as served:
        first, second = served.connect(), served.connect()
        try:
            for sock in (first, second):  # both accepted and served
                sock.sendall(request("GET", "/actuator/health/liveness"))
                assert Reader(sock).response().status == 200
            with served.connect() as third:
                reader = Reader(third)
                answer = reader.response()
                assert answer.status == 503 and answer.headers["connection"] == "close"
                assert reader.closed()
        finally:
            first.close()
            second.close()


def test_requests_are_counted_in_the_metrics(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(
            request("GET", "/v1/reservations/r1", {"X-Cycles-API-Key": served.key}) + request("GET", "/metrics")
        )
        reader = Reader(sock)
        assert reader.response().status == 404
        text = reader.response().body.decode()
    line = 'cycles_http_requests_total{method="GET",route="/v1/reservations/{id}",status="404"} 1.0'
    assert line in text


def test_stop_answers_the_request_in_progress_then_closes(tmp_path: Path) -> None:
    with front(tmp_path / "c.db") as served:
        app: Any = served.front.handler.app
        entered, release = threading.Event(), threading.Event()
        handle = app.handle

        def slow(*args: Any, **kwargs: Any) -> Any:
            entered.set()
            assert release.wait(10)
            return handle(*args, **kwargs)

        app.handle = slow
        busy, idle = served.connect(), served.connect()
        try:
            busy.sendall(request("POST", "/v1/decide", {"X-Cycles-API-Key": served.key}, decide_body()))
            assert entered.wait(10)
            stopper = threading.Thread(target=served.shutdown)
            stopper.start()
            assert Reader(idle).closed()  # an idle connection closes at once
            release.set()
            reader = Reader(busy)
            answer = reader.response()
            assert answer.status == 200 and answer.headers["connection"] == "close"
            assert reader.closed()
            stopper.join(20)
            assert not stopper.is_alive()
            with pytest.raises(OSError):
                served.connect(timeout=2).close()  # no longer listening
        finally:
            busy.close()
            idle.close()


def test_serve_uses_the_builtin_front_by_default_and_uvicorn_on_request(tmp_path: Path) -> None:
    for args, server_header in (((), None), (("--http", "uvicorn"), "uvicorn")):
        with Serve(tmp_path / f"{server_header}.db", *args) as serve, serve.client() as client:
            answer = client.get("/actuator/health/liveness")
            assert answer.status_code == 200 and answer.headers.get("server") == server_header
            assert client.get("/v1/balances", params={"tenant": "acme"}).status_code == 200


def test_serve_rejects_bad_front_options() -> None:
    for bad in (("--http", "h2"), ("--max-connections", "0"), ("--keep-alive-timeout", "-1")):
        result = subprocess.run(
            [sys.executable, "-m", "runcycles", "serve", *bad], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 2 and bad[0] in result.stderr


def test_an_upgrade_request_is_answered_without_switching_protocols(served: Served) -> None:
    with served.connect() as sock:
        upgrade = {"Connection": "Upgrade", "Upgrade": "websocket"}
        sock.sendall(request("GET", "/actuator/health/liveness", upgrade) + b"\x81\x05hello")
        reader = Reader(sock)
        answer = reader.response()
        assert answer.status == 200 and answer.headers["connection"] == "close"
        assert reader.closed()


def test_a_client_leaving_its_responses_unread_is_dropped_after_the_request_timeout() -> None:
    with front(request_timeout=0.3, keep_alive_timeout=30) as served, served.connect() as sock:
        sock.sendall(request("GET", "/actuator/health/liveness"))
        reader = Reader(sock)
        assert reader.response().status == 200
        [connection] = served.front.connections
        # What the transport signals when its write buffer stays full (forcing a full loopback buffer would
        # take megabytes of unread responses).
        connection._loop.call_soon_threadsafe(connection.pause_writing)
        assert reader.closed()


def _reserve_body(key: str) -> bytes:
    body = json.loads(decide_body(key))
    return json.dumps(body).encode()


def test_requests_of_many_connections_on_a_file_share_batches_and_all_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with front(tmp_path / "c.db") as served:
        ledger = served.server._env.ledger
        groups, syncs = count_batches(ledger, monkeypatch)
        sockets = [served.connect() for _ in range(20)]
        try:
            for index, sock in enumerate(sockets):  # two pipelined reserves on each connection
                auth = {"X-Cycles-API-Key": served.key}
                sock.sendall(
                    b"".join(request("POST", "/v1/reservations", auth, _reserve_body(f"k{index}-{n}")) for n in (0, 1))
                )
            readers = [Reader(sock) for sock in sockets]
            answers = [reader.response() for reader in readers for _ in (0, 1)]
        finally:
            for sock in sockets:
                sock.close()
        assert [a.status for a in answers] == [200] * 40
        assert len({a.json()["reservation_id"] for a in answers}) == 40
        assert 1 <= len(groups) < 40 and len(syncs) == len(groups)  # requests shared batches
        assert served.server.get_budget("tenant:acme", USD)["reserved"] == 40


def test_a_batch_whose_commit_cannot_be_made_durable_answers_500_over_http(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with front(tmp_path / "c.db") as served:

        def broken_sync() -> None:
            raise OSError("disk gone")

        monkeypatch.setattr(served.server._env.ledger, "sync", broken_sync)
        auth = {"X-Cycles-API-Key": served.key}
        with served.connect() as sock:
            reader = Reader(sock)
            sock.sendall(b"".join(request("POST", "/v1/reservations", auth, _reserve_body(f"k{n}")) for n in range(3)))
            answers = [reader.response() for _ in range(3)]
            assert [(a.status, a.json()["error"]) for a in answers] == [(500, "INTERNAL_ERROR")] * 3
            assert all(a.headers["x-request-id"] for a in answers)
            monkeypatch.undo()
            sock.sendall(request("POST", "/v1/reservations", auth, _reserve_body("k0")))  # the retry
            retried = reader.response()
            assert retried.status == 200 and retried.json()["decision"] == "ALLOW"


def test_a_batch_that_gets_no_worker_thread_answers_500_and_the_next_batch_runs(tmp_path: Path) -> None:
    server = LocalCyclesServer(str(tmp_path / "c.db"))
    answers: list[tuple[str, int]] = []

    class Job:
        def __init__(self, name: str) -> None:
            self.name = name

        def __call__(self) -> Any:
            return (200, [], b"")

        def failed(self) -> Any:
            return (500, [], b"")

        def answer(self, response: Any) -> None:
            answers.append((self.name, response[0]))
            if len(answers) == 4:
                done.set()

    class NoThreads(ThreadPool):
        refusals = 1

        def submit(self, call: Any, on_done: Any) -> None:
            if self.refusals:
                self.refusals -= 1
                raise RuntimeError("can't start new thread")
            super().submit(call, on_done)

    async def main() -> None:
        batches = Batches(server._app, pool)
        for name in ("a", "b", "c"):
            batches.submit(Job(name))  # one batch: its thread cannot start
        await asyncio.sleep(0)  # one loop iteration: the batch starts (and fails) on the next
        batches.submit(Job("d"))  # the next batch runs
        await asyncio.wait_for(done.wait(), 10)

    pool = NoThreads()
    done = asyncio.Event()
    try:
        asyncio.run(main())
    finally:
        pool.close(10)
        server.close()
    assert answers == [("a", 500), ("b", 500), ("c", 500), ("d", 200)]
