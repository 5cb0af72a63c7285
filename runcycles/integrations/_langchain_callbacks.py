"""LangChain callback handlers for classic chains and LCEL: reserve on ``on_llm_start`` /
``on_chat_model_start``, commit on ``on_llm_end``, release on ``on_llm_error``."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar
from uuid import UUID

try:
    from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
    from langchain_core.messages import BaseMessage
    from langchain_core.outputs import LLMResult
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "runcycles.integrations.langchain needs the 'langchain' extra: pip install 'runcycles[langchain]'"
    ) from exc

from ..client import AsyncCyclesClient, CyclesClient
from ..models import Unit
from ..pricing import PriceTable
from ._budget import commit_steps, idempotency_key, open_async, open_sync, subject_options
from ._checks import require_pricing
from ._langchain_common import estimate_cost, usage_of_result
from ._steps import Steps, drive, drive_async

__all__ = ["AsyncCyclesCallbackHandler", "CyclesCallbackHandler"]

LLM_FAILED = "llm_call_failed"

ClientT = TypeVar("ClientT", CyclesClient, AsyncCyclesClient)


class _Core(Generic[ClientT]):
    """Options, planning, the pending reservations and the hooks themselves, shared by the sync and async handlers.

    Each hook is written once, as a step generator (see `_steps`): the public classes only add the sync or async
    entry points LangChain calls (driving the steps with `drive` or `drive_async`) and how to open a reservation
    (`_open`).
    """

    raise_error = True  # a denial must stop the chain, not be logged and ignored
    run_inline = True
    _client_type: ClassVar[type[CyclesClient] | type[AsyncCyclesClient]]
    _wrong_client: ClassVar[str]

    def __init__(
        self,
        *,
        prices: PriceTable,
        client: ClientT | None = None,
        model: str | None = None,
        default_max_output_tokens: int = 1024,
        action_kind: str = "llm.completion",
        unit: Unit | str = Unit.USD_MICROCENTS,
        ttl_ms: int = 60000,
        tenant: str | None = None,
        workspace: str | None = None,
        app: str | None = None,
        workflow: str | None = None,
        agent: str | None = None,
        toolset: str | None = None,
        dimensions: Mapping[str, str] | None = None,
    ) -> None:
        if client is not None and not isinstance(client, self._client_type):
            raise TypeError(f"{self._wrong_client}, got {type(client).__name__}")
        subject = subject_options(locals())
        require_pricing(prices, default_max_output_tokens)
        self.client: ClientT | None = client
        self.prices = prices
        self.model = model
        self.default_max_output_tokens = default_max_output_tokens
        self._options: dict[str, Any] = {
            "action_kind": action_kind, "unit": unit, "ttl_ms": ttl_ms, "dimensions": dimensions,
            **subject,
        }
        self._lock = threading.Lock()
        self._pending: dict[UUID, tuple[Any, str]] = {}

    @property
    def pending(self) -> int:
        """Reservations open for LLM runs that have not ended yet."""
        with self._lock:
            return len(self._pending)

    def _open(self, plan: dict[str, Any]) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _model(self, kwargs: Mapping[str, Any], metadata: Mapping[str, Any] | None) -> str:
        params = kwargs.get("invocation_params") or {}
        for candidate in (
            self.model, (metadata or {}).get("ls_model_name"), params.get("model_name"), params.get("model"),
        ):
            if isinstance(candidate, str) and candidate:
                return candidate
        raise ValueError("the Cycles callback handler cannot tell the model's name: pass model= to price it")

    def _max_tokens(self, kwargs: Mapping[str, Any], metadata: Mapping[str, Any] | None) -> int:
        params = kwargs.get("invocation_params") or {}
        for candidate in ((metadata or {}).get("ls_max_tokens"), params.get("max_tokens")):
            if isinstance(candidate, int) and not isinstance(candidate, bool) and candidate > 0:
                return candidate
        return self.default_max_output_tokens

    def _plan(self, prompts: Sequence[Any], run_id: UUID, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        metadata = kwargs.get("metadata")
        model = self._model(kwargs, metadata)
        estimate = estimate_cost(
            self.prices, model, prompts, max_output_tokens=self._max_tokens(kwargs, metadata)
        )
        return {
            "estimate": estimate, "action_name": model, "idempotency_key": idempotency_key("llm", str(run_id)),
            **self._options,
        }

    def _take(self, run_id: UUID) -> tuple[Any, str] | None:
        with self._lock:
            return self._pending.pop(run_id, None)

    def _start(self, prompts: Sequence[Any], run_id: UUID, kwargs: Mapping[str, Any]) -> Steps[None]:
        """Reserve the run's estimate under a key derived from the run id."""
        plan = self._plan(prompts, run_id, kwargs)
        handle = yield self._open(plan)
        with self._lock:
            self._pending[run_id] = (handle, plan["action_name"])

    def _end(self, response: LLMResult, run_id: UUID) -> Steps[None]:
        """Commit the cost of the run's reported usage (else the estimate, marked)."""
        taken = self._take(run_id)
        if taken is None:
            return
        handle, model = taken
        yield from commit_steps(handle, *self._actual(response, model))

    def _actual(self, response: LLMResult, model: str) -> tuple[int | None, Any]:
        usage = usage_of_result(response)
        if usage is None:
            return None, None
        return usage.cost(self.prices, model), usage.metrics(None)

    def _error(self, run_id: UUID) -> Steps[None]:
        """Release the run's reservation."""
        taken = self._take(run_id)
        if taken is not None:
            yield taken[0].release(LLM_FAILED)


def _flatten(messages: Sequence[Sequence[BaseMessage]]) -> list[BaseMessage]:
    return [message for batch in messages for message in batch]


class CyclesCallbackHandler(_Core[CyclesClient], BaseCallbackHandler):
    """Budget for every LLM / chat-model run of a chain (sync ``invoke``/``stream``; needs a `CyclesClient`).

    ``on_llm_start``/``on_chat_model_start`` reserve the estimate (prompt upper bound + ``max_tokens``) under
    a key derived from the run id; a denial raises the typed error and stops the chain (``raise_error``).
    ``on_llm_end`` commits the `PriceTable` cost of the generations' ``usage_metadata`` (else ``llm_output``'s
    ``token_usage``; else the estimate, marked); ``on_llm_error`` releases.
    """

    _client_type = CyclesClient
    _wrong_client = "CyclesCallbackHandler needs a CyclesClient"

    def _open(self, plan: dict[str, Any]) -> Any:
        return open_sync(self.client, **plan)

    def on_llm_start(
        self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID, **kwargs: Any
    ) -> None:
        """Reserve for a completion-model run."""
        drive(self._start(prompts, run_id, kwargs))

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], *, run_id: UUID, **kwargs: Any
    ) -> None:
        """Reserve for a chat-model run."""
        drive(self._start(_flatten(messages), run_id, kwargs))

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        """Commit the run's cost."""
        drive(self._end(response, run_id))

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Release the run's reservation."""
        drive(self._error(run_id))


class AsyncCyclesCallbackHandler(_Core[AsyncCyclesClient], AsyncCallbackHandler):
    """The async twin of `CyclesCallbackHandler` (``ainvoke``/``astream``; needs an `AsyncCyclesClient`)."""

    _client_type = AsyncCyclesClient
    _wrong_client = "AsyncCyclesCallbackHandler needs an AsyncCyclesClient"

    def _open(self, plan: dict[str, Any]) -> Any:
        return open_async(self.client, **plan)

    async def on_llm_start(
        self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID, **kwargs: Any
    ) -> None:
        """Reserve for a completion-model run."""
        await drive_async(self._start(prompts, run_id, kwargs))

    async def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], *, run_id: UUID, **kwargs: Any
    ) -> None:
        """Reserve for a chat-model run."""
        await drive_async(self._start(_flatten(messages), run_id, kwargs))

    async def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        """Commit the run's cost."""
        await drive_async(self._end(response, run_id))

    async def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Release the run's reservation."""
        await drive_async(self._error(run_id))
