"""CyclesConfig: defaults, validation messages, repr hygiene, from_env."""

from __future__ import annotations

import attrs
import pytest

from runcycles.config import CyclesConfig

URL = "http://localhost:7878"
KEY = "cyc_live_secret_key_123"


def make(**overrides: object) -> CyclesConfig:
    kwargs: dict[str, object] = {"base_url": URL, "api_key": KEY}
    kwargs.update(overrides)
    return CyclesConfig(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- defaults


def test_defaults_match_the_contract() -> None:
    config = make()
    assert config.base_url == URL
    assert config.api_key == KEY
    for name in ("tenant", "workspace", "app", "workflow", "agent", "toolset", "journal_dir"):
        assert getattr(config, name) is None
    assert config.connect_timeout_ms == 2000
    assert config.read_timeout_ms == 5000
    assert config.retry_enabled is True
    assert config.retry_max_attempts == 5
    assert config.retry_initial_delay_ms == 500
    assert config.retry_multiplier == 2.0
    assert config.retry_max_delay_ms == 30000
    assert config.flush_timeout_ms == 10000
    assert config.journal_enabled is True
    assert config.request_timeout_budget_ms == 7000


def test_config_is_frozen() -> None:
    config = make()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.base_url = "http://other"  # type: ignore[misc]


def test_https_and_custom_values_are_kept() -> None:
    config = make(
        base_url="https://cycles.example.com/api",
        tenant="acme",
        agent="bot",
        connect_timeout_ms=1,
        retry_max_attempts=0,
        retry_multiplier=1,
        retry_enabled=False,
        journal_enabled=False,
        journal_dir="/tmp/j",
    )
    assert config.base_url == "https://cycles.example.com/api"
    assert config.retry_max_attempts == 0
    assert config.retry_multiplier == 1
    assert config.default_subject() == {"tenant": "acme", "agent": "bot"}


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("base_url", ""),
        ("base_url", "   "),
        ("base_url", "localhost:7878"),
        ("base_url", "ftp://host/x"),
        ("base_url", "http://"),
        ("api_key", ""),
        ("api_key", "  "),
        ("connect_timeout_ms", 0),
        ("connect_timeout_ms", -1),
        ("read_timeout_ms", 0),
        ("read_timeout_ms", -5000),
        ("connect_timeout_ms", True),
        ("read_timeout_ms", 1.5),
        ("retry_max_attempts", -1),
        ("retry_multiplier", 0.99),
        ("retry_multiplier", 0),
        ("retry_multiplier", -2.0),
        ("retry_multiplier", float("nan")),
        ("retry_initial_delay_ms", -1),
        ("retry_max_delay_ms", -1),
        ("flush_timeout_ms", -1),
        ("retry_enabled", "yes"),
        ("journal_enabled", 1),
        ("tenant", 42),
        ("journal_dir", 5),
        ("extend_timeout_ms", 0),
        ("extend_timeout_ms", True),
        ("extend_timeout_ms", 1.5),
        ("journal_sync", "fast"),
        ("retry_multiplier", "2"),
    ],
)
def test_invalid_values_raise_value_error_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError) as info:
        make(**{field: value})
    assert str(info.value).startswith(field)


def test_empty_api_key_message() -> None:
    with pytest.raises(ValueError, match="^api_key must not be empty$"):
        make(api_key="")


def test_non_http_url_message_names_field_and_value() -> None:
    with pytest.raises(ValueError, match=r"^base_url must be an http\(s\) URL, got 'ftp://x'$"):
        make(base_url="ftp://x")


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("base_url", None, "base_url must not be empty"),
        ("api_key", 5, "api_key must not be empty"),
        ("connect_timeout_ms", 0, "connect_timeout_ms must be a positive integer (milliseconds), got 0"),
        ("read_timeout_ms", True, "read_timeout_ms must be a positive integer (milliseconds), got True"),
        ("retry_max_attempts", -1, "retry_max_attempts must be a non-negative integer, got -1"),
        ("retry_multiplier", 0.5, "retry_multiplier must be a number >= 1, got 0.5"),
        ("retry_enabled", "yes", "retry_enabled must be a bool, got 'yes'"),
        ("tenant", 42, "tenant must be a string or None, got int"),
        ("max_response_bytes", 0, "max_response_bytes must be a positive integer (bytes), got 0"),
        ("journal_sync", "fast", "journal_sync must be 'full' or 'process', got 'fast'"),
        ("extend_timeout_ms", -1, "extend_timeout_ms must be a positive integer (milliseconds) or None, got -1"),
    ],
)
def test_validation_messages(field: str, value: object, expected: str) -> None:
    with pytest.raises(ValueError) as info:
        make(**{field: value})
    assert str(info.value) == expected


def test_optional_fields_accept_none_and_valid_values() -> None:
    config = make(extend_timeout_ms=None, journal_dir=None, tenant=None, journal_sync="process")
    assert (config.extend_timeout_ms, config.journal_sync) == (None, "process")
    assert make(extend_timeout_ms=1).extend_timeout_ms == 1


def test_validation_error_never_echoes_the_api_key() -> None:
    with pytest.raises(ValueError) as info:
        make(connect_timeout_ms=0)
    assert KEY not in str(info.value)


# --------------------------------------------------------------------------- repr


def test_repr_and_str_never_show_the_api_key() -> None:
    config = make(tenant="acme")
    assert KEY not in repr(config)
    assert KEY not in str(config)
    assert "api_key" not in repr(config)
    assert "acme" in repr(config)
    assert URL in repr(config)


def test_from_env_repr_hides_the_key() -> None:
    config = CyclesConfig.from_env(environ={"CYCLES_BASE_URL": URL, "CYCLES_API_KEY": KEY})
    assert KEY not in repr(config)


# --------------------------------------------------------------------------- from_env


FULL_ENV = {
    "CYCLES_BASE_URL": "https://cycles.example.com",
    "CYCLES_API_KEY": KEY,
    "CYCLES_TENANT": "acme",
    "CYCLES_WORKSPACE": "prod",
    "CYCLES_APP": "chat",
    "CYCLES_WORKFLOW": "support",
    "CYCLES_AGENT": "triage",
    "CYCLES_TOOLSET": "search",
    "CYCLES_CONNECT_TIMEOUT": "1500",
    "CYCLES_READ_TIMEOUT": "7000",
    "CYCLES_RETRY_ENABLED": "false",
    "CYCLES_RETRY_MAX_ATTEMPTS": "9",
    "CYCLES_RETRY_INITIAL_DELAY": "250",
    "CYCLES_RETRY_MULTIPLIER": "1.5",
    "CYCLES_RETRY_MAX_DELAY": "60000",
    "CYCLES_FLUSH_TIMEOUT": "3000",
    "CYCLES_JOURNAL_ENABLED": "no",
    "CYCLES_JOURNAL_DIR": "/var/lib/cycles",
}


def test_from_env_reads_every_variable() -> None:
    config = CyclesConfig.from_env(environ=FULL_ENV)
    assert config == CyclesConfig(
        base_url="https://cycles.example.com",
        api_key=KEY,
        tenant="acme",
        workspace="prod",
        app="chat",
        workflow="support",
        agent="triage",
        toolset="search",
        connect_timeout_ms=1500,
        read_timeout_ms=7000,
        retry_enabled=False,
        retry_max_attempts=9,
        retry_initial_delay_ms=250,
        retry_multiplier=1.5,
        retry_max_delay_ms=60000,
        flush_timeout_ms=3000,
        journal_enabled=False,
        journal_dir="/var/lib/cycles",
    )


def test_from_env_minimal_uses_defaults() -> None:
    config = CyclesConfig.from_env(environ={"CYCLES_BASE_URL": URL, "CYCLES_API_KEY": KEY})
    assert config == make()


def test_from_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CYCLES_BASE_URL", URL)
    monkeypatch.setenv("CYCLES_API_KEY", KEY)
    monkeypatch.setenv("CYCLES_TENANT", "from-os")
    monkeypatch.delenv("CYCLES_READ_TIMEOUT", raising=False)
    config = CyclesConfig.from_env()
    assert config.tenant == "from-os"
    assert config.read_timeout_ms == 5000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("True", True),
        ("1", True),
        ("yes", True),
        ("YeS", True),
        (" yes ", True),
        ("false", False),
        ("FALSE", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("NO", False),
    ],
)
@pytest.mark.parametrize(("var", "field"), [("RETRY_ENABLED", "retry_enabled"), ("JOURNAL_ENABLED", "journal_enabled")])
def test_from_env_booleans(text: str, expected: bool, var: str, field: str) -> None:
    env = {"CYCLES_BASE_URL": URL, "CYCLES_API_KEY": KEY, f"CYCLES_{var}": text}
    assert getattr(CyclesConfig.from_env(environ=env), field) is expected


@pytest.mark.parametrize("text", ["maybe", "on", "2", "tru", "y"])
@pytest.mark.parametrize("var", ["RETRY_ENABLED", "JOURNAL_ENABLED"])
def test_from_env_malformed_boolean_names_the_variable(text: str, var: str) -> None:
    env = {"CYCLES_BASE_URL": URL, "CYCLES_API_KEY": KEY, f"CYCLES_{var}": text}
    with pytest.raises(ValueError) as info:
        CyclesConfig.from_env(environ=env)
    assert str(info.value).startswith(f"CYCLES_{var} ")
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(
    "var",
    [
        "CONNECT_TIMEOUT",
        "READ_TIMEOUT",
        "RETRY_MAX_ATTEMPTS",
        "RETRY_INITIAL_DELAY",
        "RETRY_MAX_DELAY",
        "FLUSH_TIMEOUT",
        "RETRY_MULTIPLIER",
    ],
)
@pytest.mark.parametrize("text", ["abc", "12ms", "1.2.3", "--1"])
def test_from_env_malformed_number_names_the_variable(var: str, text: str) -> None:
    env = {"CYCLES_BASE_URL": URL, "CYCLES_API_KEY": KEY, f"CYCLES_{var}": text}
    with pytest.raises(ValueError) as info:
        CyclesConfig.from_env(environ=env)
    assert str(info.value).startswith(f"CYCLES_{var} ")


@pytest.mark.parametrize(
    ("var", "text", "expected"),
    [
        ("READ_TIMEOUT", "soon", "CYCLES_READ_TIMEOUT must be an integer (milliseconds), got 'soon'"),
        ("RETRY_MAX_ATTEMPTS", "many", "CYCLES_RETRY_MAX_ATTEMPTS must be an integer, got 'many'"),
        ("MAX_RESPONSE_BYTES", "1MB", "CYCLES_MAX_RESPONSE_BYTES must be an integer (bytes), got '1MB'"),
        ("RETRY_MULTIPLIER", "x2", "CYCLES_RETRY_MULTIPLIER must be a number, got 'x2'"),
        ("JOURNAL_ENABLED", "on", "CYCLES_JOURNAL_ENABLED must be true/false/1/0/yes/no, got 'on'"),
    ],
)
def test_from_env_malformed_value_messages(var: str, text: str, expected: str) -> None:
    env = {"CYCLES_BASE_URL": URL, "CYCLES_API_KEY": KEY, f"CYCLES_{var}": text}
    with pytest.raises(ValueError) as info:
        CyclesConfig.from_env(environ=env)
    assert str(info.value) == expected


def test_from_env_reads_the_later_variables() -> None:
    env = {
        "CYCLES_BASE_URL": URL,
        "CYCLES_API_KEY": KEY,
        "CYCLES_EXTEND_TIMEOUT": " 750 ",
        "CYCLES_JOURNAL_SYNC": " Process ",
        "CYCLES_MAX_RESPONSE_BYTES": "4096",
    }
    config = CyclesConfig.from_env(environ=env)
    assert (config.extend_timeout_ms, config.journal_sync, config.max_response_bytes) == (750, "process", 4096)


def test_from_env_fractional_timeout_is_malformed() -> None:
    env = {"CYCLES_BASE_URL": URL, "CYCLES_API_KEY": KEY, "CYCLES_READ_TIMEOUT": "1.5"}
    with pytest.raises(ValueError, match="^CYCLES_READ_TIMEOUT "):
        CyclesConfig.from_env(environ=env)


def test_from_env_out_of_range_value_names_the_field() -> None:
    env = {"CYCLES_BASE_URL": URL, "CYCLES_API_KEY": KEY, "CYCLES_CONNECT_TIMEOUT": "0"}
    with pytest.raises(ValueError, match="connect_timeout_ms") as info:
        CyclesConfig.from_env(environ=env)
    assert KEY not in str(info.value)


@pytest.mark.parametrize("missing", ["BASE_URL", "API_KEY"])
@pytest.mark.parametrize("absent_as_empty", [False, True])
def test_from_env_missing_required_exact_message(missing: str, absent_as_empty: bool) -> None:
    env = {"CYCLES_BASE_URL": URL, "CYCLES_API_KEY": KEY}
    if absent_as_empty:
        env[f"CYCLES_{missing}"] = ""
    else:
        del env[f"CYCLES_{missing}"]
    with pytest.raises(ValueError) as info:
        CyclesConfig.from_env(environ=env)
    assert str(info.value) == f"CYCLES_{missing} environment variable is required"


def test_from_env_missing_base_url_reported_first() -> None:
    with pytest.raises(ValueError) as info:
        CyclesConfig.from_env(environ={})
    assert str(info.value) == "CYCLES_BASE_URL environment variable is required"


def test_from_env_custom_prefix() -> None:
    env = {
        "MYAPP_BASE_URL": "http://h:1",
        "MYAPP_API_KEY": KEY,
        "MYAPP_TENANT": "t1",
        "MYAPP_RETRY_ENABLED": "0",
        # The default prefix is ignored when a custom one is given.
        "CYCLES_TENANT": "wrong",
        "CYCLES_READ_TIMEOUT": "garbage",
    }
    config = CyclesConfig.from_env(prefix="MYAPP_", environ=env)
    assert config.base_url == "http://h:1"
    assert config.tenant == "t1"
    assert config.retry_enabled is False
    assert config.read_timeout_ms == 5000


def test_from_env_custom_prefix_names_its_variables() -> None:
    with pytest.raises(ValueError) as info:
        CyclesConfig.from_env(prefix="MYAPP_", environ={"MYAPP_BASE_URL": URL})
    assert str(info.value) == "MYAPP_API_KEY environment variable is required"
    env = {"MYAPP_BASE_URL": URL, "MYAPP_API_KEY": KEY, "MYAPP_FLUSH_TIMEOUT": "soon"}
    with pytest.raises(ValueError, match="^MYAPP_FLUSH_TIMEOUT "):
        CyclesConfig.from_env(prefix="MYAPP_", environ=env)


def test_from_env_invalid_url_is_rejected() -> None:
    with pytest.raises(ValueError, match="base_url"):
        CyclesConfig.from_env(environ={"CYCLES_BASE_URL": "localhost", "CYCLES_API_KEY": KEY})
