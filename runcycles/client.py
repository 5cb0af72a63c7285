"""`CyclesClient` and `AsyncCyclesClient`: thin sync and async shells over `runcycles._protocol`.

Both build requests with the same functions (`_protocol.requests`) and read answers with the same parser;
only the act of sending differs (`_http.send_sync` / `_http.send_async`). A call never raises for an HTTP
error status or a transport failure: it returns a `CyclesResponse` (status -1 when nothing came back). One
attempt per call: retries belong to the lifecycle.

Construction is pure, like ``httpx.Client``: it reads no file and starts no thread. Each client holds its
journal records (`_journal_owner.JournalOwner`) and its background worker (`_background.Background`), both
idle until needed; the lifecycle (``with_cycles``, ``reserve_for_stream``) keeps its own per-client runtime
(`_runtime`), which this module does not import.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from ._background import Background
from ._drivers import AsyncEnv
from ._http import (
    Route,
    attempt_timeouts,
    http_options,
    lean,
    send_async,
    send_sync,
    worker_sender_for_async,
    worker_sender_for_sync,
)
from ._journal_owner import JournalOwner
from ._protocol import requests as rq
from ._slots import AttemptSlots
from ._sniffio import remember_missing_sniffio
from ._text import Scrubber
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
    from .heartbeat import HeartbeatEvent
    from .models import Balance, ReservationSummary

__all__ = ["AsyncCyclesClient", "CyclesClient"]


class _ClientBase:
    """What both flavours share: configuration, default headers, and the client's settlement services (its
    journal records and its background worker), none of which does anything until first needed."""

    _lifecycle_runtime: object | None = None
    """The lifecycle's per-client runtime, created by `runcycles._runtime.of` on the first guarded call."""

    _make_sender: Callable[[], Callable[[rq.HttpRequest, int | None], Any]]
    """Builds the background worker's sender, in the worker's event loop (set by each flavour)."""

    def __init__(
        self, config: CyclesConfig | None, on_heartbeat_failure: Callable[[HeartbeatEvent], None] | None
    ) -> None:
        if config is None:
            config = CyclesConfig.from_env()  # ValueError naming the missing CYCLES_* variable
        if not isinstance(config, CyclesConfig):
            raise TypeError(f"config must be a CyclesConfig, got {type(config).__name__}")
        self._config = config
        self._scrub = Scrubber(config.api_key)
        # What every request without a tighter deadline uses, built once.
        self._default_attempt = attempt_timeouts(config)
        self._on_heartbeat_failure = on_heartbeat_failure
        self._journal_owner = JournalOwner(config)
        self._worker = Background(self._worker_env)
        self._worker.set_exit_timeout(config.flush_timeout_ms)

    def _worker_env(self) -> AsyncEnv:
        return self._journal_owner.worker_env(self._make_sender())

    @property
    def config(self) -> CyclesConfig:
        """The configuration this client was built with."""
        return self._config

    def _page_error(self, response: CyclesResponse, what: str) -> Exception:
        if response.is_transport_error:
            return CyclesTransportError(f"{what}: {response.error_message}", response.transport_error)
        return error_from_response(response, what)

    def _flush_limit(self, timeout_ms: int | None) -> int:
        return self._config.flush_timeout_ms if timeout_ms is None else timeout_ms

    def _replay(self) -> int:
        return self._journal_owner.replay(self._worker.submit)

    def _replay_if_due(self) -> None:
        owner = self._journal_owner
        if owner.replay_due:
            owner.replay_once(self._worker.submit)

    @property
    def pending_settlements(self) -> int:
        """How many settlements are being retried in the background right now."""
        return self._worker.pending


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
        """Construction is pure: no file is read and no thread is started (see `replay_journal`)."""
        super().__init__(config, on_heartbeat_failure)
        self._make_sender = worker_sender_for_sync(self._send_for_lifecycle)
        if transport is None:  # bounds the header phase too (see runcycles._deadline)
            from ._deadline import default_transport  # imports httpcore (and trio, when installed): on use only

            transport = default_transport()
        self._http = lean(httpx.Client(transport=transport, **http_options(self._config)))
        self._route = Route.of(self._http)

    def _send_for_lifecycle(self, request: rq.HttpRequest, deadline_ms: int | None) -> CyclesResponse:
        return self.send(request, deadline_ms=deadline_ms)

    def flush(self, timeout_ms: int | None = None) -> int:
        """Wait up to ``timeout_ms`` (default ``flush_timeout_ms``) for background settlements.

        A client that has not replayed its journal partition yet (no guarded call, no ``replay_journal()``)
        resumes it first, so the flush also settles what an earlier process left, and it finishes the deletes
        of settled journal records that async calls left to the journal thread. Returns how many remain
        unresolved (their journal records are kept for a later replay).
        """
        self._replay_if_due()
        self._journal_owner.finish_deferred()
        return self._worker.flush(self._flush_limit(timeout_ms))

    def replay_journal(self) -> int:
        """Resume this client's unresolved journal records on its background worker; returns how many.

        A client replays its journal partition by itself on its first guarded call (``with_cycles`` or
        ``reserve_for_stream``); call this to resume the records of an earlier process sooner, e.g. at start-up,
        or from a client used only for wire calls. Records another process is settling are skipped.
        ``flush()`` waits for the resumed settlements.
        """
        return self._replay()

    def send(self, request: rq.HttpRequest, *, deadline_ms: int | None = None) -> CyclesResponse:
        """Send one prepared request, bounded as a whole by ``connect + read`` timeout (or ``deadline_ms`` when
        tighter).

        With the default transport every connect, read and write is clamped to what is left of the budget, so
        a server trickling its status line, headers or body is cut off at the budget. With a ``transport=`` of
        your own, the body is still read against the budget (give or take one read) but the headers are bounded
        per read by the read timeout only.
        """
        return send_sync(
            self._http, self._config, request, deadline_ms, scrub=self._scrub,
            default=self._default_attempt, route=self._route,
        )

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
        self._worker.close(self._config.flush_timeout_ms)
        self._journal_owner.close()
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
        remember_missing_sniffio()
        super().__init__(config, on_heartbeat_failure)
        options = http_options(self._config)
        self._make_sender = worker_sender_for_async(self._config, transport, background_transport, options)
        if transport is None:  # a cheaper check of idle connections (see runcycles._idle_check)
            from ._idle_check import default_async_transport  # imports httpcore: on use only

            transport = default_async_transport()
        self._http = lean(httpx.AsyncClient(transport=transport, **options))
        self._route = Route.of(self._http)
        # Requests beyond the pool's connections queue here, before their attempt's clock starts.
        self._slots = AttemptSlots()

    async def _send_for_lifecycle(self, request: rq.HttpRequest, deadline_ms: int | None) -> CyclesResponse:
        async with self._slots:
            return await send_async(
                self._http, self._config, request, deadline_ms, scrub=self._scrub,
            default=self._default_attempt, route=self._route,
            )

    async def send(self, request: rq.HttpRequest, *, deadline_ms: int | None = None) -> CyclesResponse:
        """Send one prepared request, bounded as a whole by ``connect + read`` timeout (or ``deadline_ms`` when
        tighter); the body is read up to ``max_response_bytes``. Beyond the connection pool's 100 requests in
        flight, a request first waits for a free one, and its budget starts once it has it."""
        async with self._slots:
            return await send_async(
                self._http, self._config, request, deadline_ms, scrub=self._scrub,
            default=self._default_attempt, route=self._route,
            )

    async def flush(self, timeout_ms: int | None = None) -> int:
        """Wait up to ``timeout_ms`` (default ``flush_timeout_ms``) for background settlements.

        As `CyclesClient.flush`, journal replay included (read in a worker thread). Returns how many remain
        unresolved (their journal records are kept for a later replay).
        """
        if self._journal_owner.replay_due:
            await anyio.to_thread.run_sync(self._replay_if_due)
        if self._journal_owner.deferred:
            await anyio.to_thread.run_sync(self._journal_owner.finish_deferred)
        worker = self._worker
        if worker.pending == 0:
            return 0
        return await anyio.to_thread.run_sync(worker.flush, self._flush_limit(timeout_ms))

    async def replay_journal(self) -> int:
        """Resume this client's unresolved journal records on its background worker; returns how many.

        The journal is read in a worker thread, never on the event loop. Otherwise as
        `CyclesClient.replay_journal`: a client also replays by itself on its first guarded call.
        """
        return await anyio.to_thread.run_sync(self._replay)

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
        worker = self._worker
        if worker.started:
            await anyio.to_thread.run_sync(worker.close, self._config.flush_timeout_ms)
        if self._journal_owner.opened:
            await anyio.to_thread.run_sync(self._journal_owner.close)  # may wait for a refill in flight
        await self._http.aclose()

    async def __aenter__(self) -> AsyncCyclesClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
