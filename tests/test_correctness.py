# ruff: noqa: F811  (pytest fixtures imported from fixtures_local)
"""Issue 8: every promise about spend holds, handles refuse mistakes, readers tolerate optional extensions,
and the conventions users expect (environment config, typed statuses, ``--version``) are there."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from fixtures_local import TENANT, USD, Harness, harness, uvicorn_switch  # noqa: F401

from runcycles import (
    AsyncCyclesClient,
    CyclesClient,
    CyclesConfig,
    CyclesContext,
    DenyDetail,
    MissingActualError,
    ReservationCreateResponse,
    ResponseFormatError,
    TypedCyclesResponse,
    get_cycles_context,
    require_cycles_context,
    reserve_for_stream,
    set_default_client,
    set_default_config,
    with_cycles,
)
from runcycles import mappers as m
from runcycles.defaults import _built
from runcycles.errors import AuthenticationError, BudgetExceededError, PermissionDeniedError
from runcycles.local import LocalCyclesServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def mode() -> str:
    return "inproc"


class Boom(Exception):
    pass


# --------------------------------------------------------------------------- CyclesContext.actual


def test_spend_recorded_before_a_failure_is_committed_and_the_error_propagates(harness: Harness) -> None:
    client, faults = harness.sync_client()

    @with_cycles(estimate=1000, client=client)
    def work() -> None:
        require_cycles_context().actual = 420
        raise Boom("provider failed after billing")

    with pytest.raises(Boom, match="after billing"):
        work()
    assert client.flush(10_000) == 0
    assert faults.sequence() == ["create", "commit"]
    assert faults.log[1].body["actual"] == {"unit": USD, "amount": 420}
    harness.assert_ledger(spent=420)


@pytest.mark.anyio
async def test_async_spend_recorded_before_a_failure_is_committed(harness: Harness) -> None:
    client, faults = harness.async_client()

    @with_cycles(estimate=1000, client=client)
    async def work() -> None:
        require_cycles_context().actual = 37
        raise Boom

    async with client:
        with pytest.raises(Boom):
            await work()
        assert await client.flush(10_000) == 0
    assert faults.sequence() == ["create", "commit"]
    harness.assert_ledger(spent=37)


def test_failure_without_recorded_spend_still_releases(harness: Harness) -> None:
    client, faults = harness.sync_client()

    @with_cycles(estimate=1000, client=client)
    def work() -> None:
        raise Boom

    with pytest.raises(Boom):
        work()
    assert faults.sequence() == ["create", "release"]
    harness.assert_ledger(spent=0)


def test_context_actual_is_used_on_return_and_actual_option_wins(harness: Harness) -> None:
    client, faults = harness.sync_client()

    @with_cycles(estimate=1000, client=client)
    def recorded() -> str:
        require_cycles_context().actual = 300
        return "ok"

    @with_cycles(estimate=1000, actual=lambda r: 50, client=client)
    def both() -> str:
        require_cycles_context().actual = 300
        return "ok"

    assert recorded() == "ok" and both() == "ok"
    assert client.flush(10_000) == 0
    commits = [e.body for e in faults.entries("commit")]
    assert [c["actual"]["amount"] for c in commits] == [300, 50]
    assert all("metadata" not in c or "actual_source" not in c["metadata"] for c in commits)
    harness.assert_ledger(spent=350)


@pytest.mark.parametrize("bad", [1.5, "10", -1, True, 2**63])
def test_context_actual_is_validated_on_assignment(bad: Any) -> None:
    context = CyclesContext(reservation_id="r", estimate=1, decision="ALLOW")
    with pytest.raises(ValueError, match="actual"):
        context.actual = bad
    assert context.actual is None


def test_require_cycles_context_outside_a_guarded_call() -> None:
    assert get_cycles_context() is None
    with pytest.raises(RuntimeError, match="outside a guarded call"):
        require_cycles_context()


@pytest.mark.anyio
async def test_async_missing_actual_raises_and_settles_nothing(harness: Harness) -> None:
    client, faults = harness.async_client()

    @with_cycles(estimate=1000, actual=lambda r: r["cost"], use_estimate_if_actual_not_provided=False,
                 client=client)
    async def work() -> dict[str, int]:
        return {}

    async with client:
        with pytest.raises(MissingActualError) as caught:
            await work()
        assert await client.flush(10_000) == 0
    assert isinstance(caught.value.__cause__, KeyError) and caught.value.result == {}
    assert faults.sequence() == ["create"]
    harness.assert_ledger(spent=0, reserved=1000)


def test_failing_actual_with_the_fallback_on_commits_the_estimate_marked(harness: Harness) -> None:
    client, faults = harness.sync_client()

    @with_cycles(estimate=700, actual=lambda r: r["cost"], client=client)
    def work() -> dict[str, int]:
        return {}

    work()
    assert client.flush(10_000) == 0
    assert faults.entries("commit")[0].body["metadata"] == {"actual_source": "estimate"}
    harness.assert_ledger(spent=700)


def test_outsized_actual_is_warned_once_per_action(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    client, _ = harness.sync_client()

    @with_cycles(estimate=2, actual=201, action_kind="k", action_name="outsized-once", client=client)
    def big() -> None:
        return None

    @with_cycles(estimate=2, actual=200, action_kind="k", action_name="exactly-100x", client=client)
    def fine() -> None:
        return None

    with caplog.at_level(logging.WARNING, logger="runcycles"):
        big()
        big()
        fine()
    warnings = [r for r in caplog.records if "100x the estimate" in r.getMessage()]
    assert len(warnings) == 1 and "outsized-once" in warnings[0].getMessage()
    assert "100,000,000 USD_MICROCENTS" in warnings[0].getMessage()


# --------------------------------------------------------------------------- stream handles


def test_stream_handle_refuses_unknown_attributes_and_invalid_actual(harness: Harness) -> None:
    client, faults = harness.sync_client()
    with pytest.raises(AttributeError), reserve_for_stream(client=client, estimate=1000) as stream:
        for bad in (1.5, "10", -1, True):
            with pytest.raises(ValueError, match="actual"):
                stream.actual = bad
        assert stream.actual is None
        stream.actul = 5  # type: ignore[attr-defined]
    # The typo failed the block: nothing was committed, the reservation was released.
    assert faults.sequence() == ["create", "release"]
    harness.assert_ledger(spent=0)


@pytest.mark.anyio
async def test_async_stream_handle_refuses_unknown_attributes(harness: Harness) -> None:
    client, faults = harness.async_client()
    async with client:
        with pytest.raises(AttributeError):
            async with reserve_for_stream(client=client, estimate=1000) as stream:
                stream.actual = 12
                stream.cost = 5  # type: ignore[attr-defined]
        assert await client.flush(10_000) == 0
    assert faults.sequence() == ["create", "commit"]  # the actual recorded before the error is committed
    harness.assert_ledger(spent=12)


def test_sync_stream_without_actual_and_without_fallback_raises(harness: Harness) -> None:
    client, faults = harness.sync_client()
    with pytest.raises(MissingActualError), reserve_for_stream(
        client=client, estimate=1000, use_estimate_if_actual_not_provided=False
    ):
        pass
    with reserve_for_stream(client=client, estimate=1000, use_estimate_if_actual_not_provided=False) as stream:
        stream.commit(10)
    assert faults.sequence() == ["create", "create", "commit"]


# --------------------------------------------------------------------------- lenient readers


BROKEN_EXTENSIONS: dict[str, Any] = {
    "deny_detail": {"blocked_by_scope": "tenant:acme"},  # no reason_code
    "cycles_evidence": ["not", "an", "object"],
    "balances": {"scope": "tenant:acme"},  # an object where a list is expected
}


@pytest.mark.parametrize("field", sorted(BROKEN_EXTENSIONS))
def test_malformed_optional_extension_is_kept_in_extra(field: str) -> None:
    body = {"decision": "ALLOW", "affected_scopes": ["tenant:acme"], "reservation_id": "r1",
            "expires_at_ms": 5, field: BROKEN_EXTENSIONS[field]}
    parsed = m.reservation_create_response_from_wire(body)
    assert parsed.reservation_id == "r1" and parsed.expires_at_ms == 5
    assert getattr(parsed, field) is None and parsed.extra == {field: BROKEN_EXTENSIONS[field]}
    decision = m.decision_response_from_wire({"decision": "DENY", "reason_code": "X", field: BROKEN_EXTENSIONS[field]})
    assert decision.decision == "DENY" and decision.extra == {field: BROKEN_EXTENSIONS[field]}


def test_well_formed_deny_detail_is_still_read_and_required_fields_stay_strict() -> None:
    parsed = m.decision_response_from_wire({"decision": "DENY", "deny_detail": {"reason_code": "BUDGET_EXCEEDED"}})
    assert isinstance(parsed.deny_detail, DenyDetail) and parsed.deny_detail.reason_code == "BUDGET_EXCEEDED"
    quota = m.deny_detail_from_wire({"reason_code": "Q", "quota_violation": {"window": "day"}})
    assert quota.quota_violation is None and "quota_violation" in quota.extra
    with pytest.raises(ResponseFormatError, match="affected_scopes"):
        m.reservation_create_response_from_wire({"decision": "ALLOW", "affected_scopes": {}})


def test_guarded_call_survives_a_malformed_optional_extension(harness: Harness) -> None:
    client, faults = harness.sync_client()
    faults.on("create").body(200, lambda real: {**real, **BROKEN_EXTENSIONS})

    @with_cycles(estimate=1000, actual=10, client=client)
    def work() -> str:
        return "done"

    assert work() == "done"
    assert client.flush(10_000) == 0
    assert faults.sequence() == ["create", "commit"]  # no "ambiguous" same-key retry of the create
    harness.assert_ledger(spent=10)


def test_denial_with_malformed_deny_detail_is_still_a_typed_denial(harness: Harness) -> None:
    client, faults = harness.sync_client()
    deny = {"decision": "DENY", "reason_code": "BUDGET_EXCEEDED", "affected_scopes": ["tenant:acme"],
            "deny_detail": {"suggested_fix": "top up"}, "request_id": "body-req"}
    faults.on("create").body(200, deny, {"X-Request-Id": "header-req"}, forward=False)

    @with_cycles(estimate=1000, dry_run=True, client=client)
    def work() -> str:
        return "never"

    with pytest.raises(BudgetExceededError) as caught:
        work()
    assert caught.value.request_id == "body-req"
    assert faults.sequence() == ["create"]


# --------------------------------------------------------------------------- typed wire responses


def test_wire_responses_offer_the_parsed_model(harness: Harness) -> None:
    client, _ = harness.sync_client()
    from runcycles import Action, Amount, ReservationCreateRequest, Subject

    request = ReservationCreateRequest(idempotency_key="k-1", subject=Subject(tenant=TENANT),
                                       action=Action(kind="k", name="n"), estimate=Amount(unit=USD, amount=5))
    response = client.create_reservation(request)
    assert isinstance(response, TypedCyclesResponse)
    assert isinstance(response.parsed, ReservationCreateResponse) and response.parsed.reservation_id
    bad = CyclesClient(harness.config(api_key="wrong"), transport=harness.server.transport())
    with bad:
        denied = bad.get_balances(tenant=TENANT)
        assert denied.status == 401
        with pytest.raises(AuthenticationError):
            _ = denied.parsed


def test_403_is_permission_denied(harness: Harness) -> None:
    client, faults = harness.sync_client()
    faults.on("get").status(403)
    response = client.get_reservation("r-1")
    with pytest.raises(PermissionDeniedError):
        _ = response.parsed


# --------------------------------------------------------------------------- environment and client=


@pytest.fixture
def clean_defaults(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in ("CYCLES_BASE_URL", "CYCLES_API_KEY", "CYCLES_TENANT"):
        monkeypatch.delenv(name, raising=False)
    set_default_client(None)
    set_default_config(None)
    _built.clear()
    yield monkeypatch
    set_default_client(None)
    set_default_config(None)
    for client in [c for _, c in _built.values()]:
        if isinstance(client, CyclesClient):
            client.close()
    _built.clear()


def test_clients_without_config_read_the_environment(clean_defaults: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="CYCLES_BASE_URL"):
        CyclesClient()
    with pytest.raises(ValueError, match="CYCLES_BASE_URL"):
        AsyncCyclesClient()
    clean_defaults.setenv("CYCLES_BASE_URL", "http://127.0.0.1:9")
    with pytest.raises(ValueError, match="CYCLES_API_KEY"):
        CyclesClient()
    clean_defaults.setenv("CYCLES_API_KEY", "key-from-env")
    clean_defaults.setenv("CYCLES_TENANT", "acme")
    with CyclesClient() as client:
        assert client.config.base_url == "http://127.0.0.1:9" and client.config.tenant == "acme"


def test_guarded_call_without_any_client_falls_back_to_the_environment(
    clean_defaults: pytest.MonkeyPatch,
) -> None:
    @with_cycles(estimate=1)
    def work() -> int:
        return 1

    with pytest.raises(RuntimeError, match="CYCLES_BASE_URL"):
        work()
    clean_defaults.setenv("CYCLES_BASE_URL", "http://127.0.0.1:9")
    clean_defaults.setenv("CYCLES_API_KEY", "key-from-env")
    from runcycles.defaults import resolve_client

    client = resolve_client(None, want_async=False)
    assert isinstance(client, CyclesClient) and client.config.api_key == "key-from-env"
    assert resolve_client(None, want_async=False) is client  # built once per configuration


def _tenant_server(tenant: str, funds: int) -> tuple[LocalCyclesServer, str]:
    server = LocalCyclesServer()
    server.create_tenant(tenant)
    server.create_budget(f"tenant:{tenant}", USD, funds)
    return server, server.create_api_key(tenant)


def test_client_callable_is_resolved_per_call_with_the_call_arguments(tmp_path: Any) -> None:
    servers = {t: _tenant_server(t, 10_000) for t in ("alpha", "beta")}
    clients = {
        t: CyclesClient(CyclesConfig(base_url="http://local", api_key=key, tenant=t, journal_enabled=False),
                        transport=server.transport())
        for t, (server, key) in servers.items()
    }
    asked: list[str] = []

    def pick(tenant: str, amount: int) -> CyclesClient:
        asked.append(tenant)
        return clients[tenant]

    @with_cycles(estimate=lambda tenant, amount: amount, actual=lambda r: r, client=pick)
    def spend(tenant: str, amount: int) -> int:
        assert require_cycles_context().reservation_id
        return amount

    try:
        assert spend("alpha", 100) == 100
        assert spend("beta", 250) == 250
        assert spend("alpha", amount=5) == 5
        assert asked == ["alpha", "beta", "alpha"]  # asked on every call, never cached
        for client in clients.values():
            assert client.flush(10_000) == 0
        assert servers["alpha"][0].get_budget("tenant:alpha", USD)["spent"] == 105
        assert servers["beta"][0].get_budget("tenant:beta", USD)["spent"] == 250
    finally:
        for client in clients.values():
            client.close()
        for server, _ in servers.values():
            server.close()


@pytest.mark.anyio
async def test_async_client_callable_of_the_wrong_flavour_is_a_type_error(harness: Harness) -> None:
    sync_client, _ = harness.sync_client()

    @with_cycles(estimate=1, client=lambda: sync_client)
    async def work() -> int:
        return 1

    with pytest.raises(TypeError, match="the client= callable returned CyclesClient"):
        await work()


# --------------------------------------------------------------------------- the command line


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    from runcycles import __version__
    from runcycles.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"runcycles {__version__}"


def test_transport_error_names_the_base_url() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    config = CyclesConfig(base_url="http://cycles.example:7878", api_key="k", tenant="t", journal_enabled=False)
    with CyclesClient(config, transport=httpx.MockTransport(refuse)) as client:
        response = client.get_reservation("r-1")
        with pytest.raises(Exception, match=r"http://cycles\.example:7878/v1/reservations/r-1"):
            _ = response.parsed
