"""FastAPI: a per-request budget dependency, problem+json error handlers and a metered streaming response.

Needs the ``fastapi`` extra (``pip install 'runcycles[fastapi]'``)::

    budget = CyclesBudget(cycles_client, tenant=from_header("X-Tenant"))
    install_exception_handlers(app)

    @app.post("/summarize")
    async def summarize(body: Body, cycles: RequestBudget = Depends(budget)) -> dict:
        @cycles.guard(estimate=2_000_000, actual=lambda reply: reply["cost"], action_kind="llm.completion")
        async def run() -> dict: ...
        return await run()

A denial becomes a 402 ``application/problem+json`` answer (with ``Retry-After`` when the server gave one), an
unreachable Cycles server a 503. `RequestBudget.streaming_response` reserves before the response starts and
commits the usage streamed so far when the client goes away (known spend is never released).
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, ParamSpec, Protocol, TypeVar, runtime_checkable

import anyio

try:
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.types import Receive, Scope, Send
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "runcycles.integrations.fastapi needs the 'fastapi' extra: pip install 'runcycles[fastapi]'"
    ) from exc

from ..client import AsyncCyclesClient
from ..decorator import with_cycles
from ..defaults import resolve_client
from ..errors import (
    BudgetExceededError,
    CyclesProtocolError,
    CyclesTransportError,
    DebtOutstandingError,
    OverdraftLimitExceededError,
)
from ..streaming import AsyncStreamReservation, reserve_for_stream
from ..validation import STANDARD_SUBJECT_FIELDS as SUBJECT_FIELDS

__all__ = [
    "PROBLEM_JSON",
    "CyclesBudget",
    "RequestBudget",
    "UsageMeter",
    "budget_problem_handler",
    "from_header",
    "install_exception_handlers",
    "transport_problem_handler",
]

log = logging.getLogger("runcycles.integrations.fastapi")

PROBLEM_JSON = "application/problem+json"
CLIENT_DISCONNECTED = "client_disconnected"
STREAM_FAILED = "stream_failed"

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")
SubjectSource = str | Callable[[Request], "str | Awaitable[str | None] | None"] | None


@runtime_checkable
class UsageMeter(Protocol):
    """Anything that reads stream chunks and knows what they cost so far (e.g. ``OpenAIStreamMeter``)."""

    cost: int

    def observe(self, chunk: Any, /) -> Any:
        """Take one chunk into account."""


def from_header(name: str, *, required: bool = True) -> Callable[[Request], str | None]:
    """A subject source reading header ``name``; a missing header is a 400 naming it when ``required``."""

    def read(request: Request) -> str | None:
        value = request.headers.get(name)
        if value is None or not value.strip():
            if required:
                raise HTTPException(status_code=400, detail=f"missing required header {name}")
            return None
        return value.strip()

    read.__name__ = f"from_header_{name}"
    return read


async def _resolve(source: Any, request: Request) -> Any:
    if not callable(source):
        return source
    value = source(request)
    if inspect.isawaitable(value):
        value = await value
    return value


class RequestBudget:
    """The Cycles client and subject of one request: guard calls and streams under that subject."""

    def __init__(
        self, client: AsyncCyclesClient, subject: Mapping[str, str], dimensions: Mapping[str, str] | None = None
    ) -> None:
        self.client = client
        """The `AsyncCyclesClient` serving this request."""
        self.subject: dict[str, str] = dict(subject)
        """The resolved subject fields (``tenant``, ``workspace``, ...); unset ones fall back to the config."""
        self.dimensions = dict(dimensions) if dimensions else None
        """Extra subject dimensions for this request."""

    def _options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {**self.subject, "client": self.client}
        if self.dimensions is not None:
            merged["dimensions"] = self.dimensions
        merged.update(options)
        return merged

    def guard(
        self, estimate: int | Callable[..., int], **options: Any
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """`with_cycles` bound to this request's client and subject (any option may override them)."""
        decorate: Callable[[Callable[P, R]], Callable[P, R]] = with_cycles(estimate, **self._options(options))
        return decorate

    def stream(self, *, estimate: int, **options: Any) -> Any:
        """`reserve_for_stream` bound to this request's client and subject."""
        return reserve_for_stream(estimate=estimate, **self._options(options))

    async def streaming_response(
        self,
        content: AsyncIterable[T],
        *,
        estimate: int,
        meter: UsageMeter | Callable[[T], int | None] | None = None,
        render: Callable[[T], str | bytes] | None = None,
        media_type: str | None = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        **options: Any,
    ) -> StreamingResponse:
        """Reserve ``estimate`` now (a denial raises before any byte is sent), then stream ``content``.

        ``meter`` turns chunks into the cumulative cost so far: a `UsageMeter` (``observe`` + ``cost``), or a
        callable of each chunk returning the cost of everything received so far (``None``: unchanged).
        ``render`` turns a chunk into ``str``/``bytes`` (default: the chunk itself). Settlement, once:

        - the content ran to its end: commit the metered cost (the estimate when nothing was metered);
        - the client disconnected, or the content raised: commit the metered cost when any chunk was metered,
          else release. The content iterator is closed, so a provider stream stops.
        """
        handle: AsyncStreamReservation = await reserve_for_stream(estimate=estimate, **self._options(options))
        try:
            return _MeteredStreamingResponse(
                content,
                handle=handle,
                meter=meter,
                render=render,
                status_code=status_code,
                headers=dict(headers) if headers else None,
                media_type=media_type,
            )
        except BaseException:
            await handle.release(STREAM_FAILED)
            raise


class _MeteredStreamingResponse(StreamingResponse):
    """A `StreamingResponse` that settles its reservation exactly once, whatever ends the stream."""

    def __init__(
        self,
        content: AsyncIterable[Any],
        *,
        handle: AsyncStreamReservation,
        meter: UsageMeter | Callable[[Any], int | None] | None,
        render: Callable[[Any], str | bytes] | None,
        **kwargs: Any,
    ) -> None:
        self._source = content
        self._handle = handle
        self._meter = meter
        self._render = render
        self._completed = False
        super().__init__(self._body(), **kwargs)

    def _observe(self, chunk: Any) -> None:
        meter = self._meter
        if meter is None:
            return
        if isinstance(meter, UsageMeter):
            meter.observe(chunk)
            self._handle.actual = meter.cost
            return
        value = meter(chunk)
        if value is not None:
            self._handle.actual = value

    async def _body(self) -> AsyncIterator[str | bytes]:
        async for chunk in self._source:
            self._observe(chunk)
            yield self._render(chunk) if self._render is not None else chunk
        self._completed = True

    async def stream_response(self, send: Send) -> None:
        """Stream the content; settle before the last (empty) body message, so that a client that has read
        the whole answer finds the spend on the ledger."""
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for chunk in self.body_iterator:
            if not isinstance(chunk, bytes | memoryview):
                chunk = chunk.encode(self.charset)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        with anyio.CancelScope(shield=True):
            await self._settle()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        failure: Exception | None = None
        try:
            # Listen for the disconnect whatever the ASGI version, so a client that goes away stops the
            # (possibly slow, possibly paid) content at once instead of at the next chunk.
            async with anyio.create_task_group() as tg:

                async def stream() -> None:
                    nonlocal failure
                    try:
                        await self.stream_response(send)
                    except OSError:  # ASGI 2.4: sending to a client that has gone
                        pass
                    except Exception as exc:  # re-raised below, unwrapped from the task group
                        failure = exc
                    tg.cancel_scope.cancel()

                async def listen() -> None:
                    await self.listen_for_disconnect(receive)
                    tg.cancel_scope.cancel()

                tg.start_soon(stream)
                tg.start_soon(listen)
        finally:
            with anyio.CancelScope(shield=True):
                await self._settle()
        if failure is not None:
            raise failure
        if self.background is not None:
            await self.background()

    async def _settle(self) -> None:
        closer = getattr(self._source, "aclose", None)
        if closer is not None and not self._completed:
            try:
                await closer()
            except Exception:  # the content's own cleanup failing must not lose the settlement
                log.warning("closing the streamed content failed", exc_info=True)
        handle = self._handle
        if handle.finalized:
            return
        try:
            if handle.actual is not None:
                await handle.commit(handle.actual)
            elif self._completed:
                await handle.commit(handle.context.estimate, metadata={"actual_source": "estimate"})
            else:
                await handle.release(CLIENT_DISCONNECTED)
        except CyclesProtocolError:  # the response has started: nothing to tell the client, so say it here
            log.exception("the server rejected the stream's commit: reservation_id=%s", handle.reservation_id)


class CyclesBudget:
    """A FastAPI dependency resolving the Cycles subject of each request; yields a `RequestBudget`.

    ``client`` is an `AsyncCyclesClient`, a callable of the `Request` returning one (one client per tenant,
    say), or ``None`` for the default client. Each subject field (``tenant`` … ``toolset``) is a constant, or a
    callable of the `Request` (sync or async) such as ``from_header("X-Tenant")`` or
    ``lambda request: request.state.principal.org_id``; ``None`` falls back to the client's config.
    """

    def __init__(
        self,
        client: AsyncCyclesClient | Callable[[Request], AsyncCyclesClient] | None = None,
        *,
        tenant: SubjectSource = None,
        workspace: SubjectSource = None,
        app: SubjectSource = None,
        workflow: SubjectSource = None,
        agent: SubjectSource = None,
        toolset: SubjectSource = None,
        dimensions: Mapping[str, str] | Callable[[Request], Mapping[str, str] | None] | None = None,
    ) -> None:
        self._client = client
        self._sources: dict[str, Any] = {
            name: value
            for name, value in zip(SUBJECT_FIELDS, (tenant, workspace, app, workflow, agent, toolset), strict=True)
            if value is not None
        }
        self._dimensions = dimensions

    async def __call__(self, request: Request) -> RequestBudget:
        """Resolve the client and subject for ``request``."""
        explicit = self._client
        if explicit is not None and not isinstance(explicit, AsyncCyclesClient):
            explicit = explicit(request)
        client = resolve_client(explicit, want_async=True)
        assert isinstance(client, AsyncCyclesClient)
        subject: dict[str, str] = {}
        for name, source in self._sources.items():
            value = await _resolve(source, request)
            if value is not None:
                subject[name] = str(value)
        dimensions = await _resolve(self._dimensions, request)
        return RequestBudget(client, subject, dimensions)


# --------------------------------------------------------------------------- exception handlers

_TITLES = {
    BudgetExceededError: ("budget-exceeded", "Budget exceeded"),
    OverdraftLimitExceededError: ("overdraft-limit-exceeded", "Overdraft limit exceeded"),
    DebtOutstandingError: ("debt-outstanding", "Debt outstanding"),
}


def _problem(
    status: int, slug: str, title: str, detail: str, extra: Mapping[str, Any], headers: Mapping[str, str]
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"urn:runcycles:problem:{slug}", "title": title, "status": status, "detail": detail,
    }
    body.update({key: value for key, value in extra.items() if value is not None})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=dict(headers))


async def budget_problem_handler(request: Request, exc: Exception) -> JSONResponse:
    """402 ``application/problem+json`` for a budget denial; ``Retry-After`` (seconds, rounded up) when the
    server said when to retry. The body carries ``reason_code``, ``error_code``, ``request_id`` and
    ``retry_after_ms`` when known."""
    assert isinstance(exc, CyclesProtocolError)
    slug, title = next(
        (value for cls, value in _TITLES.items() if isinstance(exc, cls)), ("budget-denied", "Budget denied")
    )
    headers: dict[str, str] = {}
    if exc.retry_after_ms is not None:
        headers["Retry-After"] = str(max(0, math.ceil(exc.retry_after_ms / 1000)))
    extra = {
        "reason_code": exc.reason_code,
        "error_code": exc.error_code.value if exc.error_code is not None else None,
        "request_id": exc.request_id,
        "retry_after_ms": exc.retry_after_ms,
    }
    return _problem(402, slug, title, str(exc), extra, headers)


async def transport_problem_handler(request: Request, exc: Exception) -> JSONResponse:
    """503 ``application/problem+json`` when the Cycles server could not be reached (nothing was reserved)."""
    return _problem(
        503, "budget-service-unavailable", "Budget service unavailable", "the budget service could not be reached",
        {}, {},
    )


def install_exception_handlers(app: FastAPI) -> None:
    """Map `BudgetExceededError`, `OverdraftLimitExceededError`, `DebtOutstandingError` to 402 and
    `CyclesTransportError` to 503, both as ``application/problem+json``."""
    for cls in _TITLES:
        app.add_exception_handler(cls, budget_problem_handler)
    app.add_exception_handler(CyclesTransportError, transport_problem_handler)
