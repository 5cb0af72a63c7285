"""Pieces of the per-call hot path that were made cheaper: they must still say the same thing."""

from __future__ import annotations

import contextvars
import uuid
from urllib.parse import quote

from runcycles._lifecycle import Reserved, build_settlement, new_key
from runcycles._protocol import requests as rq
from runcycles.context import CyclesContext, bind, get_cycles_context
from runcycles.mappers import to_wire
from runcycles.models import (
    Action,
    Amount,
    CyclesMetrics,
    Decision,
    EventCreateRequest,
    ReservationCreateRequest,
    ReservationCreateResponse,
    Subject,
    Unit,
)


def test_idempotency_keys_are_distinct_version_4_uuids() -> None:
    keys = [new_key() for _ in range(2000)]
    assert len(set(keys)) == len(keys)
    for key in keys:
        parsed = uuid.UUID(key)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == key  # canonical lowercase 8-4-4-4-12 text
    assert rq.new_idempotency_key() != rq.new_idempotency_key()


def test_a_settlement_event_body_is_the_event_model_on_the_wire() -> None:
    request = ReservationCreateRequest(
        idempotency_key="k-create",
        subject=Subject(tenant="acme", app="chat", dimensions={"region": "eu"}),
        action=Action(kind="llm", name="gpt", tags=["x"]),
        estimate=Amount(unit=Unit.TOKENS, amount=50),
    )
    response = ReservationCreateResponse(decision=Decision.ALLOW, reservation_id="r-1", affected_scopes=["tenant:acme"])
    reserved = Reserved(request=request, response=response, sent_at_ms=0.0, received_at_ms=1.0)
    cases = [
        (None, None),
        (CyclesMetrics(latency_ms=3, tokens_input=2, custom={"nested": {"a": 1}}), {"note": "ü", "n": 1}),
        (CyclesMetrics(model_version="v1"), None),
    ]
    for metrics, metadata in cases:
        record = build_settlement(reserved=reserved, actual=40, estimated=metadata is None, metrics=metrics,
                                  metadata=metadata)
        commit_metadata = dict(metadata or {})
        if metadata is None:
            commit_metadata["actual_source"] = "estimate"
        expected = to_wire(EventCreateRequest(
            idempotency_key=record.idempotency_key, subject=request.subject, action=request.action,
            actual=Amount(unit=Unit.TOKENS, amount=40), metrics=metrics,
            metadata={**commit_metadata, "recovered_reservation_id": "r-1",
                      "recovery_reason": "commit_after_reservation_expired"},
        ))
        assert record.event_body == expected
        assert rq.dumps(record.event_body) == rq.dumps(expected)  # the same bytes: same fields, same order


def test_reservation_paths_quote_only_what_needs_it() -> None:
    for rid in ("r-1", "A.b_c~d-9", "a/b", "ü", "a b", "%41", ".", "..", "x" * 128):
        expected = quote(rid, safe="")
        if expected in (".", ".."):
            expected = expected.replace(".", "%2E")
        assert rq.commit(rid, {"idempotency_key": "k"}).path == f"/v1/reservations/{expected}/commit"


def test_bind_restores_the_previous_context_even_when_left_elsewhere() -> None:
    outer = CyclesContext(reservation_id="outer", estimate=1, decision=Decision.ALLOW)
    inner = CyclesContext(reservation_id="inner", estimate=1, decision=Decision.ALLOW)

    def nested() -> None:
        with bind(outer):
            with bind(inner) as bound:
                assert bound is inner and get_cycles_context() is inner
            assert get_cycles_context() is outer
        assert get_cycles_context() is None

    def left_elsewhere() -> list[object]:
        seen = []
        with bind(outer):
            manager = bind(inner)
            manager.__enter__()
            elsewhere = contextvars.copy_context()
            elsewhere.run(manager.__exit__, None, None, None)  # its token belongs to this context: by value
            seen.append(elsewhere.run(get_cycles_context))
            seen.append(get_cycles_context())
        return seen

    contextvars.copy_context().run(nested)
    assert contextvars.copy_context().run(left_elsewhere) == [outer, inner]
