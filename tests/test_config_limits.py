"""The hardening settings of `CyclesConfig`: response-size cap and the old-record replay window."""

from __future__ import annotations

import pytest

from runcycles import CyclesConfig

BASE = {"base_url": "http://cycles.test", "api_key": "k"}


def test_defaults() -> None:
    config = CyclesConfig(**BASE)
    assert config.max_response_bytes == 1_048_576
    assert config.replay_verify_after_ms == 6 * 86_400_000  # inside the reference server's 7-day window
    assert config.request_timeout_budget_ms == config.connect_timeout_ms + config.read_timeout_ms


def test_from_env() -> None:
    env = {
        "CYCLES_BASE_URL": "http://cycles.test",
        "CYCLES_API_KEY": "k",
        "CYCLES_MAX_RESPONSE_BYTES": "65536",
        "CYCLES_REPLAY_VERIFY_AFTER": "3600000",
    }
    config = CyclesConfig.from_env(environ=env)
    assert (config.max_response_bytes, config.replay_verify_after_ms) == (65536, 3_600_000)


@pytest.mark.parametrize("field", ["max_response_bytes", "replay_verify_after_ms"])
@pytest.mark.parametrize("value", [0, -1, True, 1.5, "10"])
def test_bad_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        CyclesConfig(**BASE, **{field: value})


@pytest.mark.parametrize("var", ["MAX_RESPONSE_BYTES", "REPLAY_VERIFY_AFTER"])
def test_bad_env_values_name_the_variable(var: str) -> None:
    env = {"CYCLES_BASE_URL": "http://cycles.test", "CYCLES_API_KEY": "k", f"CYCLES_{var}": "lots"}
    with pytest.raises(ValueError, match=f"CYCLES_{var}"):
        CyclesConfig.from_env(environ=env)
