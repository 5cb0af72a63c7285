"""The flow of a guarded provider call, shared by the OpenAI and Anthropic integrations.

Per call: estimate (prompt tokens + the request's max output) → reserve with `reserve_for_stream` (a denial
raises before the provider is called) → caps applied to the request → the provider call → commit the exact cost
of the reported usage. A provider error before any output releases. A streamed answer is the SDK's own stream
object with its iterator metered and its ``close`` hooked; it settles exactly once, when exhausted, closed,
failed or garbage-collected.
"""

from __future__ import annotations

import contextlib
import importlib
import queue
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from ..client import AsyncCyclesClient, CyclesClient
from ..models import Unit
from ..pricing import PriceTable
from ..streaming import AsyncStreamReservation, StreamReservation, reserve_for_stream
from ..validation import STANDARD_SUBJECT_FIELDS
from ._checks import require_price_table
from ._llm_spans import CallSpan
from ._llm_usage import Endpoint, StreamMeter, Usage, apply_caps, estimate_prompt_tokens, log
from ._steps import Steps, drive, drive_async

__all__ = ["DEFAULT_MAX_OUTPUT_TOKENS", "LLMGuard", "import_sdk", "is_async_provider"]

DEFAULT_MAX_OUTPUT_TOKENS = 4096
FAILED_REASON = "guarded_method_failed"

_RESERVE_OPTIONS = frozenset(
    {
        "action_kind", "action_name", "action_tags", "unit", "ttl_ms", "grace_period_ms", "overage_policy",
        *STANDARD_SUBJECT_FIELDS, "dimensions", "metadata",
        "use_estimate_if_actual_not_provided",
    }
)
_REFUSED = {
    "estimate": "the estimate is computed from the prices and the request",
    "actual": "the actual is the cost of the usage the provider reports",
    "dry_run": "a dry run would return no provider response",
}


def _now_ms() -> float:
    return time.monotonic() * 1000.0


def import_sdk(name: str) -> Any:
    """The provider SDK ``name`` (``openai``, ``anthropic``), or an `ImportError` naming the extra to install."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(
            f"runcycles.integrations.{name} needs the {name} package: pip install 'runcycles[{name}]'"
        ) from exc


def is_async_provider(provider: object, async_client: type, sync_client: type, refusal: str) -> bool:
    """Whether ``provider`` is the SDK's async client (False: its sync one); anything else is refused."""
    if isinstance(provider, async_client):
        return True
    if isinstance(provider, sync_client):
        return False
    raise TypeError(f"{refusal}, got {type(provider).__name__}")


def _check_max_output(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"default_max_output_tokens must be a positive int, got {value!r}")


def _checked_client(client: Any, is_async: bool) -> Any:
    """``client=`` as given, when it is the Cycles client of the provider client's flavour (or ``None``)."""
    wanted = AsyncCyclesClient if is_async else CyclesClient
    if client is not None and not isinstance(client, wanted):
        provider = "an async" if is_async else "a sync"
        raise TypeError(
            f"{provider} provider client needs client= to be {'an' if is_async else 'a'} {wanted.__name__}, "
            f"got {type(client).__name__}"
        )
    return client


def _check_option_names(options: Mapping[str, Any]) -> None:
    for name in options:
        if name in _REFUSED:
            raise TypeError(f"{name} is not an option of a guarded provider client: {_REFUSED[name]}")
        if name not in _RESERVE_OPTIONS:
            raise TypeError(f"unknown option {name!r}")


class LLMGuard:
    """The options of one guarded provider client and the flow of its calls."""

    def __init__(
        self,
        prices: PriceTable,
        *,
        estimate_input_tokens: Callable[[dict[str, Any]], int] | None,
        default_max_output_tokens: int,
        options: Mapping[str, Any],
        is_async: bool,
    ) -> None:
        require_price_table(prices)
        if estimate_input_tokens is not None and not callable(estimate_input_tokens):
            raise TypeError("estimate_input_tokens must be a callable of the request's keyword arguments")
        _check_max_output(default_max_output_tokens)
        options = dict(options)
        self.client = _checked_client(options.pop("client", None), is_async)
        _check_option_names(options)
        if Unit(options.get("unit", Unit.USD_MICROCENTS)) is not Unit.USD_MICROCENTS:
            raise ValueError("unit must be USD_MICROCENTS: prices are costed in microcents")
        options.setdefault("action_kind", "llm.completion")
        # Validate the constant options now (reserve_for_stream checks them without reserving).
        reserve_for_stream(estimate=0, **{k: v for k, v in options.items() if not callable(v)})
        self.prices = prices
        self.estimate_input_tokens = estimate_input_tokens
        self.default_max_output_tokens = default_max_output_tokens
        self.options = options

    # ------------------------------------------------------------------ planning

    def _plan(self, endpoint: Endpoint, request: dict[str, Any]) -> tuple[str, int, int, dict[str, Any]]:
        model = request.get("model")
        if not isinstance(model, str) or not model:
            raise TypeError(f"{endpoint.name}: model= must be a model name (a non-empty str)")
        if self.estimate_input_tokens is not None:
            prompt_tokens = self.estimate_input_tokens(dict(request))
            if isinstance(prompt_tokens, bool) or not isinstance(prompt_tokens, int) or prompt_tokens < 0:
                raise ValueError(f"estimate_input_tokens must return a non-negative int, got {prompt_tokens!r}")
        else:
            prompt_tokens = estimate_prompt_tokens(endpoint, request, model)
        max_output = endpoint.max_output_tokens(request) or self.default_max_output_tokens
        estimate = self.prices.estimate(model, input_tokens=prompt_tokens, max_output_tokens=max_output)
        options = {k: (v(**request) if callable(v) else v) for k, v in self.options.items()}
        options.setdefault("action_name", model)
        return model, prompt_tokens, estimate, options

    def begin_sync(self, endpoint: Endpoint, kwargs: dict[str, Any], *, streaming: bool) -> Call:
        """Reserve (sync Cycles client) and return the call with its request under caps."""
        model, prompt_tokens, estimate, options = self._plan(endpoint, kwargs)
        handle = reserve_for_stream(client=self.client, estimate=estimate, **options)._open_sync()
        return Call(self, endpoint, handle, kwargs, model, prompt_tokens, estimate, streaming)

    async def begin_async(self, endpoint: Endpoint, kwargs: dict[str, Any], *, streaming: bool) -> Call:
        """Reserve (async Cycles client) and return the call with its request under caps."""
        model, prompt_tokens, estimate, options = self._plan(endpoint, kwargs)
        handle = await reserve_for_stream(client=self.client, estimate=estimate, **options)
        return Call(self, endpoint, handle, kwargs, model, prompt_tokens, estimate, streaming)

    # ------------------------------------------------------------------ wrapped methods

    def wrap_sync(self, endpoint: Endpoint, create: Callable[..., Any]) -> Callable[..., Any]:
        """``create`` (an SDK method taking keyword arguments) guarded, for a sync provider client."""

        def guarded(**kwargs: Any) -> Any:
            span = CallSpan(endpoint.name, kwargs.get("model"))
            try:
                with span.current():
                    call = self.begin_sync(endpoint, kwargs, streaming=bool(kwargs.get("stream")))
                    call.attach(span)
                    try:
                        result = create(**call.request)
                    except BaseException:
                        call.release_sync()
                        raise
                    if call.streaming:
                        return call.track_sync(result)
                    call.finish_sync(result)
            except BaseException as exc:
                span.end(error=exc)
                raise
            span.end(call.usage, response=result)
            return result

        return _like(guarded, create)

    def wrap_async(self, endpoint: Endpoint, create: Callable[..., Any]) -> Callable[..., Any]:
        """``create`` guarded, for an async provider client."""

        async def guarded(**kwargs: Any) -> Any:
            span = CallSpan(endpoint.name, kwargs.get("model"))
            try:
                with span.current():
                    call = await self.begin_async(endpoint, kwargs, streaming=bool(kwargs.get("stream")))
                    call.attach(span)
                    try:
                        result = await create(**call.request)
                    except BaseException:
                        await call.release_async()
                        raise
                    if call.streaming:
                        return call.track_async(result)
                    await call.finish_async(result)
            except BaseException as exc:
                span.end(error=exc)
                raise
            span.end(call.usage, response=result)
            return result

        return _like(guarded, create)


def _like(wrapper: Callable[..., Any], original: Callable[..., Any]) -> Callable[..., Any]:
    wrapper.__name__ = getattr(original, "__name__", wrapper.__name__)
    wrapper.__qualname__ = getattr(original, "__qualname__", wrapper.__qualname__)
    wrapper.__doc__ = getattr(original, "__doc__", None)
    wrapper.__wrapped__ = original  # type: ignore[attr-defined]
    return wrapper


class Call:
    """One guarded provider call: its reservation, its request under caps, and its settlement."""

    def __init__(
        self,
        guard: LLMGuard,
        endpoint: Endpoint,
        handle: StreamReservation | AsyncStreamReservation,
        kwargs: dict[str, Any],
        model: str,
        prompt_tokens: int,
        estimate: int,
        streaming: bool,
    ) -> None:
        self.guard = guard
        self.endpoint = endpoint
        self.handle = handle
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.estimate = estimate
        self.streaming = streaming
        try:
            request = apply_caps(endpoint, dict(kwargs), handle.caps, handle.reservation_id)
            self.request = endpoint.prepare_stream(request) if streaming else request
        except BaseException:
            handle.dispose()
            raise
        self.started_ms = _now_ms()
        self.span: CallSpan | None = None
        self.usage: Usage | None = None
        """The usage a non-streamed answer reported (once it has been read)."""

    def attach(self, span: CallSpan) -> None:
        """Record the request as sent (after caps) on the call's GenAI span, which streams end when settled."""
        self.span = span
        span.request(self.endpoint.max_output_tokens(self.request))

    # -- non-streamed answers

    def _commit_args(self, response: Any) -> tuple[int, Any, dict[str, str] | None]:
        usage = self.usage = self.endpoint.usage(response)
        latency = _now_ms() - self.started_ms
        if usage is None:
            log.warning(
                "%s answer carries no usage; committing the estimate: reservation_id=%s",
                self.endpoint.name, self.handle.reservation_id,
            )
            return self.estimate, Usage(model=None).metrics(latency), {"actual_source": "estimate"}
        return usage.cost(self.guard.prices, self.model), usage.metrics(latency), None

    def _finish(self, response: Any) -> Steps[None]:
        try:
            yield self.handle.commit(*self._commit_args(response))
        except Exception:
            log.exception("commit after a provider call failed: reservation_id=%s", self.handle.reservation_id)

    def finish_sync(self, response: Any) -> Any:
        """Commit the cost of the answer's usage (settlement problems are logged, never raised)."""
        drive(self._finish(response))
        return response

    async def finish_async(self, response: Any) -> Any:
        """Commit the cost of the answer's usage (settlement problems are logged, never raised)."""
        await drive_async(self._finish(response))
        return response

    def _release(self) -> Steps[None]:
        try:
            yield self.handle.release(FAILED_REASON)
        except Exception:
            log.exception("release after a provider error failed: reservation_id=%s", self.handle.reservation_id)

    def release_sync(self) -> None:
        """Release after a provider error before any output."""
        drive(self._release())

    async def release_async(self) -> None:
        """Release after a provider error before any output."""
        await drive_async(self._release())

    # -- streamed answers

    def _settlement(self, stream: Any) -> StreamSettlement:
        meter = self.endpoint.meter(self.guard.prices, self.model, self.prompt_tokens)
        settlement = StreamSettlement(self, meter)
        _abandoned.start()
        finalizer = weakref.finalize(stream, _abandoned.put, settlement)
        finalizer.atexit = False
        settlement.finalizer = finalizer
        return settlement

    def track_sync(self, stream: Any) -> Any:
        """Meter the SDK stream's iterator and hook its ``close``; returns the same stream object."""
        settlement = self._settlement(stream)
        stream._iterator = _metered_sync(stream._iterator, settlement)
        close = type(stream).close
        ref = weakref.ref(stream)

        def guarded_close() -> None:
            target = ref()
            try:
                if target is not None:
                    close(target)
            finally:
                settlement.settle_sync()

        stream.close = guarded_close
        return stream

    def track_async(self, stream: Any) -> Any:
        """Meter the SDK async stream's iterator and hook its ``close``; returns the same stream object."""
        settlement = self._settlement(stream)
        stream._iterator = _metered_async(stream._iterator, settlement)
        close = type(stream).close
        ref = weakref.ref(stream)

        async def guarded_close() -> None:
            target = ref()
            try:
                if target is not None:
                    await close(target)
            finally:
                await settlement.settle_async()

        stream.close = guarded_close
        return stream


class StreamSettlement:
    """Settles one streamed answer exactly once: commit what was used, or release when it failed before output."""

    def __init__(self, call: Call, meter: StreamMeter) -> None:
        self.call = call
        self.meter = meter
        self.done = False
        self.finalizer: weakref.finalize[Any, Any] | None = None

    def _claim(self) -> bool:
        if self.done:
            return False
        self.done = True
        if self.finalizer is not None:
            self.finalizer.detach()
        return True

    def _amount(self) -> tuple[int, Any]:
        usage = self.meter.usage
        return self.meter.cost, usage.metrics(_now_ms() - self.call.started_ms)

    def _end_span(self, error: BaseException | None) -> None:
        if self.call.span is not None:
            self.call.span.end(self.meter.usage, error=error)

    def _current_span(self) -> contextlib.AbstractContextManager[Any]:
        return self.call.span.current() if self.call.span is not None else contextlib.nullcontext()

    def _settle(self, failed: bool, error: BaseException | None) -> Steps[None]:
        if not self._claim():
            return
        try:
            with self._current_span():
                if (failed or error is not None) and not self.meter.output_seen:
                    yield from self.call._release()
                    return
                try:
                    yield self.call.handle.commit(*self._amount())
                except Exception:
                    log.exception("stream commit failed: reservation_id=%s", self.call.handle.reservation_id)
        finally:
            self._end_span(error)

    def settle_sync(self, *, failed: bool = False, error: BaseException | None = None) -> None:
        """Settle from the stream's own thread (exhausted, closed, or failed with ``error``)."""
        drive(self._settle(failed, error))

    async def settle_async(self, *, failed: bool = False, error: BaseException | None = None) -> None:
        """Settle from the stream's task (exhausted, closed, or failed with ``error``)."""
        await drive_async(self._settle(failed, error))

    def settle_detached(self) -> None:
        """Settle an abandoned stream (via `_Abandoned`): the commit runs on the client's background worker."""
        if self.done:
            return
        self.done = True
        try:
            with self._current_span():
                self.call.handle._commit_detached(*self._amount())
        except Exception:
            log.exception("stream commit from a finalizer failed: reservation_id=%s", self.call.handle.reservation_id)
        finally:
            self._end_span(None)


class _Abandoned:
    """Streams collected before they settled. Their finalizer may run inside any code holding any lock (garbage
    collection starts at an allocation), so it only puts the settlement on a `queue.SimpleQueue` (safe there);
    one daemon thread per process takes it from there to the Cycles client's background worker."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[StreamSettlement | threading.Event] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="runcycles-abandoned-streams", daemon=True)
                self._thread.start()

    def put(self, settlement: StreamSettlement) -> None:
        self._queue.put(settlement)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every settlement queued so far was handed on (for tests and orderly shutdowns)."""
        self.start()
        marker = threading.Event()
        self._queue.put(marker)
        return marker.wait(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if isinstance(item, threading.Event):
                item.set()
            else:
                item.settle_detached()


_abandoned = _Abandoned()


def wait_for_abandoned_streams(timeout: float | None = None) -> bool:
    """Wait until the streams garbage-collected so far have handed their commit to their client's worker (then
    ``client.flush()`` waits for the commits themselves). False on timeout."""
    return _abandoned.wait(timeout)


def _metered_sync(source: Any, settlement: StreamSettlement) -> Any:
    try:
        for item in source:
            settlement.meter.observe(item)
            yield item
    except GeneratorExit:
        raise
    except BaseException as exc:
        settlement.settle_sync(error=exc)
        raise
    settlement.settle_sync()


async def _metered_async(source: Any, settlement: StreamSettlement) -> Any:
    try:
        async for item in source:
            settlement.meter.observe(item)
            yield item
    except GeneratorExit:
        raise
    except BaseException as exc:
        await settlement.settle_async(error=exc)
        raise
    await settlement.settle_async()
