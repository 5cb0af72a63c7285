"""`CyclesClient` and `AsyncCyclesClient`: thin sync and async shells over `runcycles._protocol`.

Both build requests with the same functions (`_protocol.requests`) and read answers with the same parser;
only the act of sending differs. A call never raises for an HTTP error status or a transport failure: it
returns a `CyclesResponse` (status -1 when nothing came back). One attempt per call: retries belong to the
lifecycle.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import httpx

from ._protocol import requests as rq
from ._text import BodyReader, Scrubber
from ._version import __version__
from .config import CyclesConfig
from .errors import CyclesTransportError, error_from_response
from .mappers import (
    balance_response_from_wire,
    commit_response_from_wire,
    decision_response_from_wire,
    event_create_response_from_wire,
    release_response_from_wire,
    reservation_create_response_from_wire,
    reservation_detail_from_wire,
    reservation_extend_response_from_wire,
    reservation_list_response_from_wire,
)
from .models import (
    BalanceResponse,
    CommitRequest,
    CommitResponse,
    DecisionRequest,
    DecisionResponse,
    EventCreateRequest,
    EventCreateResponse,
    ReleaseRequest,
    ReleaseResponse,
    ReservationCreateRequest,
    ReservationCreateResponse,
    ReservationDetail,
    ReservationExtendRequest,
    ReservationExtendResponse,
    ReservationListResponse,
)
from .response import CyclesResponse, TypedCyclesResponse

if TYPE_CHECKING:
    from ._runtime import Runtime
    from .heartbeat import HeartbeatEvent
    from .models import Balance, ReservationSummary

__all__ = ["AsyncCyclesClient", "CyclesClient"]

USER_AGENT = f"runcycles-python/{__version__}"

_HttpT = TypeVar("_HttpT", httpx.Client, httpx.AsyncClient)


def _timeout(config: CyclesConfig, deadline_ms: int | None = None) -> httpx.Timeout:
    connect = config.connect_timeout_ms
    read = config.read_timeout_ms
    if deadline_ms is not None:
        # A tighter whole-attempt budget: split it so that connect + read stays within it.
        connect = max(1, min(connect, deadline_ms // 3))
        read = max(1, min(read, deadline_ms - connect))
    return httpx.Timeout(connect=connect / 1000, read=read / 1000, write=read / 1000, pool=connect / 1000)


def _attempt(
    config: CyclesConfig, deadline_ms: int | None, default: tuple[int, httpx.Timeout] | None = None
) -> tuple[int, httpx.Timeout]:
    """The whole-attempt budget (the tighter of ``deadline_ms`` and connect + read) and httpx's timeouts
    (``default``: the client's precomputed answer for "no tighter deadline")."""
    budget = config.request_timeout_budget_ms
    if deadline_ms is None or deadline_ms >= budget:
        return default if default is not None else (budget, _timeout(config))
    deadline_ms = max(1, deadline_ms)
    return deadline_ms, _timeout(config, deadline_ms)


class _LeanCookies(httpx.Cookies):
    """The client's cookie jar, minus httpx's per-response jar work when a response sets no cookie (the
    standard library's cookie machinery costs about 0.1 ms per response even then)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        """Load the cookies a response sets, if it sets any."""
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:
            super().extract_cookies(response)


def _lean(http: _HttpT) -> _HttpT:
    # httpx keeps the jar in ``_cookies``; should that change, this only loses the shortcut.
    http._cookies = _LeanCookies(http.cookies)
    return http


def _deadline_exceeded(
    budget_ms: int, http: httpx.Client | httpx.AsyncClient | None = None, request: rq.HttpRequest | None = None
) -> httpx.TimeoutException:
    """The transport failure of a blown attempt deadline; it carries the request, so errors can name the URL."""
    message = f"attempt deadline of {budget_ms} ms exceeded"
    if http is None or request is None:
        return httpx.TimeoutException(message)
    sent = http.build_request(request.method, request.path, params=request.params or None)
    return httpx.TimeoutException(message, request=sent)


def _answer(reply: httpx.Response, reader: BodyReader, scrub: Scrubber) -> CyclesResponse:
    cut_at = reader.limit if reader.cut else None
    return rq.parse_response(
        reply.status_code, reply.headers, reader.content(), reply.reason_phrase, scrub=scrub, cut_at=cut_at
    )


async def _send_async(
    http: httpx.AsyncClient,
    config: CyclesConfig,
    request: rq.HttpRequest,
    deadline_ms: int | None,
    *,
    scrub: Scrubber | None = None,
    default: tuple[int, httpx.Timeout] | None = None,
) -> CyclesResponse:
    budget_ms, timeout = _attempt(config, deadline_ms, default)
    if scrub is None:
        scrub = Scrubber(config.api_key)
    try:
        with anyio.fail_after(budget_ms / 1000):
            async with http.stream(
                request.method,
                request.path,
                params=request.params or None,
                content=request.content,
                headers=request.headers or None,
                timeout=timeout,
            ) as reply:
                reader = BodyReader(config.max_response_bytes, reply.headers.get("content-encoding"))
                if reply.is_stream_consumed:  # a transport that answered with a body already in memory
                    reader.feed(reply.content)
                else:
                    async for chunk in reply.aiter_raw():
                        if not reader.feed(chunk):
                            break
    except httpx.HTTPError as exc:
        return rq.transport_failure(exc, scrub=scrub)
    except TimeoutError:
        return rq.transport_failure(_deadline_exceeded(budget_ms, http, request), scrub=scrub)
    except OSError as exc:  # a transport that leaks a socket error: still "no answer", never a crash
        return rq.transport_failure(exc, scrub=scrub)
    return _answer(reply, reader, scrub)


class _ClientBase:
    """What both flavours share: configuration, default headers, background settlement."""

    _runtime: Runtime

    def __init__(self, config: CyclesConfig | None) -> None:
        if config is None:
            config = CyclesConfig.from_env()  # ValueError naming the missing CYCLES_* variable
        if not isinstance(config, CyclesConfig):
            raise TypeError(f"config must be a CyclesConfig, got {type(config).__name__}")
        self._config = config
        self._scrub = Scrubber(config.api_key)
        # What every request without a tighter deadline uses, built once.
        self._default_attempt = (config.request_timeout_budget_ms, _timeout(config))

    @property
    def config(self) -> CyclesConfig:
        """The configuration this client was built with."""
        return self._config

    def _http_options(self) -> dict[str, Any]:
        return {
            "base_url": self._config.base_url,
            "timeout": _timeout(self._config),
            "headers": {
                "X-Cycles-API-Key": self._config.api_key,
                "User-Agent": USER_AGENT,
                # Bodies are read against a byte cap; a compressed one could inflate past it in one chunk.
                "Accept-Encoding": "identity",
            },
            "follow_redirects": False,
        }

    def _page_error(self, response: CyclesResponse, what: str) -> Exception:
        if response.is_transport_error:
            return CyclesTransportError(f"{what}: {response.error_message}", response.transport_error)
        return error_from_response(response, what)

    def _flush_limit(self, timeout_ms: int | None) -> int:
        return self._config.flush_timeout_ms if timeout_ms is None else timeout_ms

    @property
    def pending_settlements(self) -> int:
        """How many settlements are being retried in the background right now."""
        return self._runtime.background.pending


class CyclesClient(_ClientBase):
    """The synchronous Cycles wire client (thread-safe; one connection pool).

    Without a config, `CyclesConfig.from_env()` is used (``CYCLES_BASE_URL``, ``CYCLES_API_KEY``, …; a missing
    one is a ``ValueError`` naming it). Each operation returns a `TypedCyclesResponse` whose ``parsed`` is the
    success model."""

    def __init__(
        self,
        config: CyclesConfig | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        on_heartbeat_failure: Callable[[HeartbeatEvent], None] | None = None,
    ) -> None:
        from ._deadline import default_transport
        from ._runtime import Runtime, worker_sender_for_sync

        super().__init__(config)
        config = self._config
        if transport is None:  # bounds the header phase too (see runcycles._deadline)
            transport = default_transport()
        self._http = _lean(httpx.Client(transport=transport, **self._http_options()))
        send = self._send_for_lifecycle
        self._runtime = Runtime(
            self,
            send_sync=send,
            send_async=None,
            make_worker_sender=worker_sender_for_sync(send),
            on_heartbeat_failure=on_heartbeat_failure,
        )
        self._runtime.replay_on_start()

    def _send_for_lifecycle(self, request: rq.HttpRequest, deadline_ms: int | None) -> CyclesResponse:
        return self.send(request, deadline_ms=deadline_ms)

    def flush(self, timeout_ms: int | None = None) -> int:
        """Wait up to ``timeout_ms`` (default ``flush_timeout_ms``) for background settlements.

        Returns how many remain unresolved (their journal records are kept for a later replay).
        """
        return self._runtime.background.flush(self._flush_limit(timeout_ms))

    def replay_journal(self) -> int:
        """Resume this client's unresolved journal records in the background; returns how many."""
        return self._runtime.replay_records()

    def send(self, request: rq.HttpRequest, *, deadline_ms: int | None = None) -> CyclesResponse:
        """Send one prepared request, bounded as a whole by ``connect + read`` timeout (or ``deadline_ms`` when
        tighter).

        With the default transport every connect, read and write is clamped to what is left of the budget, so
        a server trickling its status line, headers or body is cut off at the budget. With a ``transport=`` of
        your own, the body is still read against the budget (give or take one read) but the headers are bounded
        per read by the read timeout only.
        """
        from ._deadline import end_attempt, start_attempt

        budget_ms, timeout = _attempt(self._config, deadline_ms, self._default_attempt)
        deadline, attempt = start_attempt(budget_ms)
        scrub = self._scrub
        try:
            with self._http.stream(
                request.method,
                request.path,
                params=request.params or None,
                content=request.content,
                headers=request.headers or None,
                timeout=timeout,
            ) as reply:
                reader = BodyReader(self._config.max_response_bytes, reply.headers.get("content-encoding"))
                chunks = (reply.content,) if reply.is_stream_consumed else reply.iter_raw()
                for chunk in chunks:
                    if time.monotonic() > deadline:
                        raise _deadline_exceeded(budget_ms, self._http, request)
                    if not reader.feed(chunk):
                        break
                if time.monotonic() > deadline:
                    raise _deadline_exceeded(budget_ms, self._http, request)
        except httpx.HTTPError as exc:
            return rq.transport_failure(exc, scrub=scrub)
        except OSError as exc:  # a transport that leaks a socket error: still "no answer", never a crash
            return rq.transport_failure(exc, scrub=scrub)
        finally:
            end_attempt(attempt)
        return _answer(reply, reader, scrub)

    def create_reservation(
        self, request: ReservationCreateRequest | dict[str, Any], *, traceparent: str | None = None
    ) -> TypedCyclesResponse[ReservationCreateResponse]:
        """``POST /v1/reservations``."""
        return TypedCyclesResponse.of(
            self.send(rq.create_reservation(request, traceparent=traceparent)), reservation_create_response_from_wire
        )

    def commit_reservation(
        self, reservation_id: str, request: CommitRequest | dict[str, Any], *, traceparent: str | None = None
    ) -> TypedCyclesResponse[CommitResponse]:
        """``POST /v1/reservations/{id}/commit``."""
        return TypedCyclesResponse.of(
            self.send(rq.commit(reservation_id, request, traceparent=traceparent)), commit_response_from_wire
        )

    def release_reservation(
        self, reservation_id: str, request: ReleaseRequest | dict[str, Any], *, traceparent: str | None = None
    ) -> TypedCyclesResponse[ReleaseResponse]:
        """``POST /v1/reservations/{id}/release``."""
        return TypedCyclesResponse.of(
            self.send(rq.release(reservation_id, request, traceparent=traceparent)), release_response_from_wire
        )

    def extend_reservation(
        self, reservation_id: str, request: ReservationExtendRequest | dict[str, Any], *, traceparent: str | None = None
    ) -> TypedCyclesResponse[ReservationExtendResponse]:
        """``POST /v1/reservations/{id}/extend``."""
        return TypedCyclesResponse.of(
            self.send(rq.extend(reservation_id, request, traceparent=traceparent)),
            reservation_extend_response_from_wire,
        )

    def decide(
        self, request: DecisionRequest | dict[str, Any], *, traceparent: str | None = None
    ) -> TypedCyclesResponse[DecisionResponse]:
        """``POST /v1/decide``."""
        return TypedCyclesResponse.of(
            self.send(rq.decide(request, traceparent=traceparent)), decision_response_from_wire
        )

    def create_event(
        self, request: EventCreateRequest | dict[str, Any], *, traceparent: str | None = None
    ) -> TypedCyclesResponse[EventCreateResponse]:
        """``POST /v1/events``."""
        return TypedCyclesResponse.of(
            self.send(rq.create_event(request, traceparent=traceparent)), event_create_response_from_wire
        )

    def list_reservations(self, **filters: Any) -> TypedCyclesResponse[ReservationListResponse]:
        """``GET /v1/reservations`` with the given filters (``from_`` for ``from``)."""
        return TypedCyclesResponse.of(self.send(rq.list_reservations(filters)), reservation_list_response_from_wire)

    def get_reservation(
        self, reservation_id: str, *, traceparent: str | None = None
    ) -> TypedCyclesResponse[ReservationDetail]:
        """``GET /v1/reservations/{id}``."""
        return TypedCyclesResponse.of(
            self.send(rq.get_reservation(reservation_id, traceparent=traceparent)), reservation_detail_from_wire
        )

    def get_balances(self, **filters: Any) -> TypedCyclesResponse[BalanceResponse]:
        """``GET /v1/balances`` (at least one subject filter)."""
        return TypedCyclesResponse.of(self.send(rq.balances(filters)), balance_response_from_wire)

    def _pages(self, request: rq.HttpRequest, what: str) -> Iterator[CyclesResponse]:
        cursor: str | None = None
        while True:
            response = self.send(request if cursor is None else rq.with_cursor(request, cursor))
            if not response.is_success:
                raise self._page_error(response, what)
            yield response
            cursor = rq.next_cursor(response, cursor)
            if cursor is None:
                return

    def iter_reservations(self, **filters: Any) -> Iterator[ReservationSummary]:
        """Every reservation matching ``filters``, following ``next_cursor``."""
        for page in self._pages(rq.list_reservations(filters), "list_reservations failed"):
            yield from reservation_list_response_from_wire(page.body).reservations

    def iter_balances(self, **filters: Any) -> Iterator[Balance]:
        """Every balance matching ``filters``, following ``next_cursor``."""
        for page in self._pages(rq.balances(filters), "get_balances failed"):
            yield from balance_response_from_wire(page.body).balances

    def close(self) -> None:
        """Drain background settlements (bounded by ``flush_timeout_ms``) and close the connection pool."""
        self._runtime.background.close(self._config.flush_timeout_ms)
        self._http.close()

    def __enter__(self) -> CyclesClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncCyclesClient(_ClientBase):
    """The asynchronous Cycles wire client (asyncio or trio, through anyio); config and responses as for
    `CyclesClient`."""

    def __init__(
        self,
        config: CyclesConfig | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        on_heartbeat_failure: Callable[[HeartbeatEvent], None] | None = None,
        background_transport: Callable[[], httpx.AsyncBaseTransport] | None = None,
    ) -> None:
        """``background_transport`` builds the transport of the background worker's own event loop (retries
        and replays outlive the caller's loop). By default the worker uses a fresh ``httpx.AsyncHTTPTransport``
        when ``transport`` is None or one, and ``transport`` itself otherwise (in-process and mock transports
        are not bound to an event loop)."""
        from ._deadline import AttemptSlots
        from ._runtime import Runtime, worker_sender_for_async
        from ._sniffio import remember_missing_sniffio

        remember_missing_sniffio()
        super().__init__(config)
        config = self._config
        self._http = _lean(httpx.AsyncClient(transport=transport, **self._http_options()))
        # Requests beyond the pool's connections queue here, before their attempt's clock starts.
        self._slots = AttemptSlots()
        self._runtime = Runtime(
            self,
            send_sync=None,
            send_async=self._send_for_lifecycle,
            make_worker_sender=worker_sender_for_async(
                config, transport, background_transport, self._http_options(), _send_async
            ),
            on_heartbeat_failure=on_heartbeat_failure,
        )
        self._runtime.replay_on_start()

    async def _send_for_lifecycle(self, request: rq.HttpRequest, deadline_ms: int | None) -> CyclesResponse:
        async with self._slots:
            return await _send_async(
                self._http, self._config, request, deadline_ms, scrub=self._scrub, default=self._default_attempt
            )

    async def send(self, request: rq.HttpRequest, *, deadline_ms: int | None = None) -> CyclesResponse:
        """Send one prepared request, bounded as a whole by ``connect + read`` timeout (or ``deadline_ms`` when
        tighter); the body is read up to ``max_response_bytes``. Beyond the connection pool's 100 requests in
        flight, a request first waits for a free one, and its budget starts once it has it."""
        async with self._slots:
            return await _send_async(
                self._http, self._config, request, deadline_ms, scrub=self._scrub, default=self._default_attempt
            )

    async def flush(self, timeout_ms: int | None = None) -> int:
        """Wait up to ``timeout_ms`` (default ``flush_timeout_ms``) for background settlements.

        Returns how many remain unresolved (their journal records are kept for a later replay).
        """
        background = self._runtime.background
        if background.pending == 0:
            return 0
        return await anyio.to_thread.run_sync(background.flush, self._flush_limit(timeout_ms))

    async def replay_journal(self) -> int:
        """Resume this client's unresolved journal records in the background; returns how many."""
        return await anyio.to_thread.run_sync(self._runtime.replay_records)

    async def create_reservation(
        self, request: ReservationCreateRequest | dict[str, Any], *, traceparent: str | None = None
    ) -> TypedCyclesResponse[ReservationCreateResponse]:
        """``POST /v1/reservations``."""
        return TypedCyclesResponse.of(
            await self.send(rq.create_reservation(request, traceparent=traceparent)),
            reservation_create_response_from_wire,
        )

    async def commit_reservation(
        self, reservation_id: str, request: CommitRequest | dict[str, Any], *, traceparent: str | None = None
    ) -> TypedCyclesResponse[CommitResponse]:
        """``POST /v1/reservations/{id}/commit``."""
        return TypedCyclesResponse.of(
            await self.send(rq.commit(reservation_id, request, traceparent=traceparent)), commit_response_from_wire
        )

    async def release_reservation(
        self, reservation_id: str, request: ReleaseRequest | dict[str, Any], *, traceparent: str | None = None
    ) -> TypedCyclesResponse[ReleaseResponse]:
        """``POST /v1/reservations/{id}/release``."""
        return TypedCyclesResponse.of(
            await self.send(rq.release(reservation_id, request, traceparent=traceparent)), release_response_from_wire
        )

    async def extend_reservation(
        self, reservation_id: str, request: ReservationExtendRequest | dict[str, Any], *, traceparent: str | None = None
    ) -> TypedCyclesResponse[ReservationExtendResponse]:
        """``POST /v1/reservations/{id}/extend``."""
        return TypedCyclesResponse.of(
            await self.send(rq.extend(reservation_id, request, traceparent=traceparent)),
            reservation_extend_response_from_wire,
        )

    async def decide(
        self, request: DecisionRequest | dict[str, Any], *, traceparent: str | None = None
    ) -> TypedCyclesResponse[DecisionResponse]:
        """``POST /v1/decide``."""
        return TypedCyclesResponse.of(
            await self.send(rq.decide(request, traceparent=traceparent)), decision_response_from_wire
        )

    async def create_event(
        self, request: EventCreateRequest | dict[str, Any], *, traceparent: str | None = None
    ) -> TypedCyclesResponse[EventCreateResponse]:
        """``POST /v1/events``."""
        return TypedCyclesResponse.of(
            await self.send(rq.create_event(request, traceparent=traceparent)), event_create_response_from_wire
        )

    async def list_reservations(self, **filters: Any) -> TypedCyclesResponse[ReservationListResponse]:
        """``GET /v1/reservations`` with the given filters (``from_`` for ``from``)."""
        return TypedCyclesResponse.of(
            await self.send(rq.list_reservations(filters)), reservation_list_response_from_wire
        )

    async def get_reservation(
        self, reservation_id: str, *, traceparent: str | None = None
    ) -> TypedCyclesResponse[ReservationDetail]:
        """``GET /v1/reservations/{id}``."""
        return TypedCyclesResponse.of(
            await self.send(rq.get_reservation(reservation_id, traceparent=traceparent)), reservation_detail_from_wire
        )

    async def get_balances(self, **filters: Any) -> TypedCyclesResponse[BalanceResponse]:
        """``GET /v1/balances`` (at least one subject filter)."""
        return TypedCyclesResponse.of(await self.send(rq.balances(filters)), balance_response_from_wire)

    async def _pages(self, request: rq.HttpRequest, what: str) -> AsyncIterator[CyclesResponse]:
        cursor: str | None = None
        while True:
            response = await self.send(request if cursor is None else rq.with_cursor(request, cursor))
            if not response.is_success:
                raise self._page_error(response, what)
            yield response
            cursor = rq.next_cursor(response, cursor)
            if cursor is None:
                return

    async def iter_reservations(self, **filters: Any) -> AsyncIterator[ReservationSummary]:
        """Every reservation matching ``filters``, following ``next_cursor``."""
        async for page in self._pages(rq.list_reservations(filters), "list_reservations failed"):
            for row in reservation_list_response_from_wire(page.body).reservations:
                yield row

    async def iter_balances(self, **filters: Any) -> AsyncIterator[Balance]:
        """Every balance matching ``filters``, following ``next_cursor``."""
        async for page in self._pages(rq.balances(filters), "get_balances failed"):
            for row in balance_response_from_wire(page.body).balances:
                yield row

    async def aclose(self) -> None:
        """Drain background settlements (bounded by ``flush_timeout_ms``) and close the connection pool."""
        background = self._runtime.background
        if background.started:
            await anyio.to_thread.run_sync(background.close, self._config.flush_timeout_ms)
        await self._http.aclose()

    async def __aenter__(self) -> AsyncCyclesClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
