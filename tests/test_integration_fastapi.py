"""runcycles.integrations.fastapi with the real FastAPI, over real uvicorn on 127.0.0.1 and with TestClient,
against the embedded server: commits on the ledger, 402 problem+json with Retry-After, 503 when the Cycles
server is down, and a client that disconnects mid-stream leaving exactly the streamed usage committed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from fixtures_local import start_uvicorn
from integration_support import TENANT, Ledger, closed_port_url
from pydantic import BaseModel

from runcycles import AsyncCyclesClient, CyclesConfig
from runcycles.integrations.fastapi import (
    PROBLEM_JSON,
    CyclesBudget,
    RequestBudget,
    from_header,
    install_exception_handlers,
)

COST = 1_000  # per streamed chunk


class Ask(BaseModel):
    estimate: int = 50_000
    actual: int = 12_345
    chunks: int = 3
    hang_after: int | None = None  # the stream waits forever after this many chunks
    fail_after: int | None = None  # the stream raises after this many chunks


class Source:
    """A fake provider stream; remembers whether it was closed."""

    def __init__(self) -> None:
        self.closed = False

    async def chunks(self, ask: Ask) -> AsyncIterator[tuple[str, int]]:
        try:
            for i in range(ask.chunks):
                if ask.hang_after is not None and i == ask.hang_after:
                    await anyio.sleep_forever()
                if ask.fail_after is not None and i == ask.fail_after:
                    raise RuntimeError("provider stream broke")
                yield f"c{i};", (i + 1) * COST
        finally:
            self.closed = True


def make_app(client: AsyncCyclesClient, source: Source) -> FastAPI:
    app = FastAPI()
    install_exception_handlers(app)
    budget = CyclesBudget(client, tenant=from_header("X-Tenant"))

    @app.post("/complete")
    async def complete(ask: Ask, spend: RequestBudget = Depends(budget)) -> dict[str, Any]:  # noqa: B008
        @spend.guard(estimate=ask.estimate, actual=lambda reply: reply["cost"], action_kind="llm.completion")
        async def run() -> dict[str, Any]:
            return {"cost": ask.actual, "tenant": spend.subject["tenant"]}

        return await run()

    @app.post("/stream")
    async def stream(ask: Ask, spend: RequestBudget = Depends(budget)) -> StreamingResponse:  # noqa: B008
        return await spend.streaming_response(
            source.chunks(ask), estimate=ask.estimate, meter=lambda chunk: chunk[1], render=lambda chunk: chunk[0],
            media_type="text/plain", action_kind="llm.stream",
        )

    return app


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(tmp_path, funds=1_000_000)
    yield ledger
    ledger.close()


class App:
    """The test app served one way or the other; ``call`` returns the httpx response (body read)."""

    def __init__(self, way: str, app: FastAPI) -> None:
        self.way = way
        self._stop: Callable[[], None]
        if way == "testclient":
            self._tc = TestClient(app, raise_server_exceptions=False)
            self._tc.__enter__()
            self.http: httpx.Client = self._tc
            self._stop = lambda: self._tc.__exit__(None, None, None)
        else:
            base_url, server, thread = start_uvicorn(app)
            self.http = httpx.Client(base_url=base_url, timeout=10)

            def stop() -> None:
                self.http.close()
                server.should_exit = True
                thread.join(10)

            self._stop = stop

    def post(self, path: str, body: dict[str, Any], tenant: str | None = TENANT) -> httpx.Response:
        headers = {"X-Tenant": tenant} if tenant else {}
        return self.http.post(path, json=body, headers=headers)

    def close(self) -> None:
        self._stop()


@pytest.fixture(params=["testclient", "uvicorn"])
def way(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def serve(way: str) -> Iterator[Callable[[AsyncCyclesClient, Source], App]]:
    started: list[tuple[App, AsyncCyclesClient]] = []

    def start(client: AsyncCyclesClient, source: Source) -> App:
        app = App(way, make_app(client, source))
        started.append((app, client))
        return app

    yield start
    for app, client in started:
        app.close()
        anyio.run(client.aclose)


def test_guarded_endpoint_commits_the_actual(ledger: Ledger, serve: Callable[..., App]) -> None:
    app = serve(ledger.async_client(), Source())
    reply = app.post("/complete", {"estimate": 50_000, "actual": 12_345})
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"cost": 12_345, "tenant": TENANT}
    assert (ledger.spent(), ledger.reserved()) == (12_345, 0)
    [(_, _, create)] = ledger.recorder.ops("create")
    assert create["subject"]["tenant"] == TENANT and create["estimate"]["amount"] == 50_000


def test_denial_is_402_problem_json_with_retry_after(ledger: Ledger, serve: Callable[..., App]) -> None:
    ledger.recorder.retry_after = "7"
    app = serve(ledger.async_client(), Source())
    reply = app.post("/complete", {"estimate": 5_000_000})
    assert reply.status_code == 402, reply.text
    assert reply.headers["content-type"] == PROBLEM_JSON
    assert reply.headers["retry-after"] == "7"
    body = reply.json()
    assert body["status"] == 402 and body["title"] == "Budget exceeded"
    assert body["type"] == "urn:runcycles:problem:budget-exceeded"
    assert body["reason_code"] == "BUDGET_EXCEEDED" and body["retry_after_ms"] == 7000
    assert (ledger.spent(), ledger.reserved()) == (0, 0)


def test_denial_without_retry_after_sends_none(ledger: Ledger, serve: Callable[..., App]) -> None:
    app = serve(ledger.async_client(), Source())
    reply = app.post("/complete", {"estimate": 5_000_000})
    assert reply.status_code == 402
    assert "retry-after" not in reply.headers
    assert "retry_after_ms" not in reply.json()


def test_cycles_server_down_is_503(tmp_path: Path, serve: Callable[..., App]) -> None:
    config = CyclesConfig(
        base_url=closed_port_url(), api_key="key", tenant=TENANT, journal_dir=str(tmp_path / "journal"),
        connect_timeout_ms=500,
    )
    source = Source()
    app = serve(AsyncCyclesClient(config), source)
    reply = app.post("/complete", {})
    assert reply.status_code == 503
    assert reply.headers["content-type"] == PROBLEM_JSON
    assert reply.json()["title"] == "Budget service unavailable"
    assert "retry-after" not in reply.headers
    # A stream is refused before its first byte too.
    assert app.post("/stream", {}).status_code == 503


def test_missing_tenant_header_is_400_naming_it(ledger: Ledger, serve: Callable[..., App]) -> None:
    app = serve(ledger.async_client(), Source())
    reply = app.post("/complete", {}, tenant=None)
    assert reply.status_code == 400
    assert "X-Tenant" in reply.json()["detail"]
    assert ledger.recorder.calls == []


def test_completed_stream_commits_the_metered_cost(ledger: Ledger, serve: Callable[..., App]) -> None:
    app = serve(ledger.async_client(), Source())
    reply = app.post("/stream", {"chunks": 4})
    assert reply.status_code == 200 and reply.text == "c0;c1;c2;c3;"
    assert (ledger.spent(), ledger.reserved()) == (4 * COST, 0)


def test_stream_denied_before_the_first_byte(ledger: Ledger, serve: Callable[..., App]) -> None:
    source = Source()
    app = serve(ledger.async_client(), source)
    reply = app.post("/stream", {"estimate": 5_000_000})
    assert reply.status_code == 402 and reply.headers["content-type"] == PROBLEM_JSON
    assert not source.closed  # the content was never started


def test_uvicorn_client_disconnect_commits_exactly_the_streamed_usage(ledger: Ledger) -> None:
    source = Source()
    client = ledger.async_client()
    app = App("uvicorn", make_app(client, source))
    try:
        with app.http.stream("POST", "/stream", json={"chunks": 10, "hang_after": 3},
                             headers={"X-Tenant": TENANT}) as reply:
            assert reply.status_code == 200
            received = b""
            for piece in reply.iter_raw():
                received += piece
                if received == b"c0;c1;c2;":
                    break
        # The connection is closed; the server notices, stops the content and commits what it metered.
        ledger.recorder.wait_for("commit")
        assert ledger.recorder.ops("release") == []
        [(_, status, commit)] = ledger.recorder.ops("commit")
        assert status == 200 and commit["actual"]["amount"] == 3 * COST
        assert (ledger.spent(), ledger.reserved()) == (3 * COST, 0)
        assert source.closed
    finally:
        app.close()
        anyio.run(client.aclose)


# ------------------------------------------------------------- the ASGI app driven directly (asyncio and trio)


async def _drive(app: FastAPI, body: dict[str, Any], *, disconnect_after: int | None) -> list[bytes]:
    """Run one POST /stream through the ASGI app; the client goes away after ``disconnect_after`` chunks."""
    chunks: list[bytes] = []
    gone = anyio.Event()
    payload = json.dumps(body).encode()
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": payload, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and disconnect_after == 0:
            gone.set()
        if message["type"] == "http.response.body" and message.get("body"):
            chunks.append(message["body"])
            if disconnect_after is not None and len(chunks) == disconnect_after:
                gone.set()
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            gone.set()

    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": "POST", "path": "/stream", "raw_path": b"/stream", "query_string": b"", "root_path": "",
        "scheme": "http", "server": ("test", 80), "client": ("test", 1),
        "headers": [(b"content-type", b"application/json"), (b"x-tenant", TENANT.encode())],
    }
    await app(scope, receive, send)
    return chunks


@pytest.mark.anyio
async def test_asgi_disconnect_commits_the_streamed_usage(ledger: Ledger, anyio_backend: str) -> None:
    source = Source()
    async with ledger.async_client() as client:
        chunks = await _drive(make_app(client, source), {"chunks": 10, "hang_after": 2}, disconnect_after=2)
    assert chunks == [b"c0;", b"c1;"]
    assert source.closed
    assert (ledger.spent(), ledger.reserved()) == (2 * COST, 0)
    assert ledger.recorder.ops("release") == []


@pytest.mark.anyio
async def test_asgi_disconnect_before_any_usage_releases(ledger: Ledger, anyio_backend: str) -> None:
    source = Source()
    async with ledger.async_client() as client:
        chunks = await _drive(make_app(client, source), {"chunks": 10, "hang_after": 0}, disconnect_after=0)
    assert chunks == [] and source.closed
    [(_, status, release)] = ledger.recorder.ops("release")
    assert status == 200 and release["reason"] == "client_disconnected"
    assert (ledger.spent(), ledger.reserved()) == (0, 0)


@pytest.mark.anyio
async def test_asgi_content_failure_commits_what_was_metered(ledger: Ledger, anyio_backend: str) -> None:
    source = Source()
    async with ledger.async_client() as client:
        with pytest.raises(RuntimeError, match="provider stream broke"):
            await _drive(make_app(client, source), {"chunks": 10, "fail_after": 2}, disconnect_after=None)
    assert (ledger.spent(), ledger.reserved()) == (2 * COST, 0)
    assert ledger.recorder.ops("release") == []


@pytest.mark.anyio
async def test_asgi_completed_stream_without_meter_commits_the_estimate(ledger: Ledger, anyio_backend: str) -> None:
    async def words() -> AsyncIterator[str]:
        yield "a"
        yield "b"

    app = FastAPI()
    async with ledger.async_client() as client:
        budget = CyclesBudget(client)

        @app.post("/stream")
        async def stream(spend: RequestBudget = Depends(budget)) -> StreamingResponse:  # noqa: B008
            return await spend.streaming_response(words(), estimate=777)

        assert await _drive(app, {}, disconnect_after=None) == [b"a", b"b"]
    [(_, _, commit)] = ledger.recorder.ops("commit")
    assert commit["actual"]["amount"] == 777 and commit["metadata"] == {"actual_source": "estimate"}
    assert ledger.spent() == 777


@pytest.mark.anyio
async def test_subject_and_client_resolved_per_request(ledger: Ledger, anyio_backend: str) -> None:
    async def principal(request: Any) -> str:  # e.g. the authenticated principal's organisation
        return str(request.headers["X-Org"])

    async with ledger.async_client() as client:
        chosen: list[str] = []

        def client_for(request: Any) -> AsyncCyclesClient:
            chosen.append(request.headers["X-Org"])
            return client

        app = FastAPI()
        budget = CyclesBudget(client_for, tenant=principal, workflow="support", dimensions=lambda r: {"region": "eu"})

        @app.post("/complete")
        async def complete(spend: RequestBudget = Depends(budget)) -> dict[str, Any]:  # noqa: B008
            @spend.guard(estimate=300, actual=120, action_kind="llm.completion")
            async def run() -> dict[str, Any]:
                return {"subject": spend.subject}

            return await run()

        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")
        async with http:
            reply = await http.post("/complete", headers={"X-Org": TENANT})
    assert reply.status_code == 200
    assert reply.json() == {"subject": {"tenant": TENANT, "workflow": "support"}}
    assert chosen == [TENANT]
    [(_, _, create)] = ledger.recorder.ops("create")
    assert create["subject"] == {"tenant": TENANT, "workflow": "support", "dimensions": {"region": "eu"}}
    assert ledger.spent() == 120


@pytest.mark.anyio
async def test_rejected_stream_commit_is_logged_and_the_answer_completes(
    ledger: Ledger, anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def pricey() -> AsyncIterator[tuple[str, int]]:
        yield "a", 10
        yield "b", 50_000_000  # more than the tenant has; REJECT refuses the overage

    app = FastAPI()
    async with ledger.async_client() as client:
        budget = CyclesBudget(client)

        @app.post("/stream")
        async def stream(spend: RequestBudget = Depends(budget)) -> StreamingResponse:  # noqa: B008
            return await spend.streaming_response(pricey(), estimate=1_000, meter=lambda c: c[1],
                                                  render=lambda c: c[0], overage_policy="REJECT")

        assert await _drive(app, {}, disconnect_after=None) == [b"a", b"b"]
    [(_, status, _)] = ledger.recorder.ops("commit")
    assert status == 409
    assert any("rejected the stream's commit" in r.getMessage() for r in caplog.records)
    assert ledger.spent() == 0


@pytest.mark.anyio
async def test_a_usage_meter_object_is_observed(ledger: Ledger, anyio_backend: str) -> None:
    class WordMeter:
        """Like OpenAIStreamMeter: observe(chunk) and a cost property."""

        def __init__(self) -> None:
            self.words = 0

        def observe(self, chunk: str) -> None:
            self.words += 1

        @property
        def cost(self) -> int:
            return 100 + 7 * self.words

    async def words() -> AsyncIterator[str]:
        for word in ("one ", "two ", "three "):
            yield word

    app = FastAPI()
    async with ledger.async_client() as client:
        budget = CyclesBudget(client)

        @app.post("/stream")
        async def stream(spend: RequestBudget = Depends(budget)) -> StreamingResponse:  # noqa: B008
            return await spend.streaming_response(words(), estimate=1_000, meter=WordMeter())

        assert b"".join(await _drive(app, {}, disconnect_after=None)) == b"one two three "
    assert ledger.spent() == 121
