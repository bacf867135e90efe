"""Settings: one-line errors naming the variable, and no secret in them."""

from __future__ import annotations

import pytest

from cancel247.config import ConfigError, load_settings


def test_defaults_load() -> None:
    settings = load_settings()
    assert settings.queue == "cancel247"
    assert settings.retry_max_attempts >= 1
    settings.check_visibility_timeout()


def test_bad_integer_names_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANCEL247_RETRY_MAX_ATTEMPTS", "zero")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("CANCEL247_RETRY_MAX_ATTEMPTS='zero' is invalid")
    assert "\n" not in message


def test_out_of_range_names_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANCEL247_CONCURRENCY", "0")
    with pytest.raises(ConfigError, match="CANCEL247_CONCURRENCY='0' is invalid: Input should be greater than or equal to 1"):
        load_settings()


def test_missing_api_url_for_worker() -> None:
    settings = load_settings(client_id="1", token="t" * 64)
    with pytest.raises(ConfigError, match="CANCEL247_API_URL is missing"):
        settings.require_carrier()


def test_missing_credentials_for_worker() -> None:
    settings = load_settings(api_url="https://carrier.invalid")
    with pytest.raises(ConfigError, match="no carrier credentials"):
        settings.require_carrier()


def test_half_credentials_refused() -> None:
    with pytest.raises(ConfigError, match="CANCEL247_USERNAME and CANCEL247_PASSWORD must be set together"):
        load_settings(username="shop")


def test_api_url_scheme_checked() -> None:
    with pytest.raises(ConfigError, match="CANCEL247_API_URL is invalid: must start with https://") as caught:
        load_settings(api_url="ftp://user:pw-secret@x")
    assert "pw-secret" not in str(caught.value)


def test_broker_database_must_be_number() -> None:
    with pytest.raises(ConfigError, match="CANCEL247_BROKER_URL is invalid: database 'abc' after the host must be a number"):
        load_settings(broker_url="redis://127.0.0.1:6379/abc")


def test_plain_postgresql_url_uses_psycopg() -> None:
    from sqlalchemy import create_engine

    settings = load_settings(database_url="postgresql://u:p@db/x")
    assert create_engine(settings.database_url.get_secret_value()).dialect.driver == "psycopg"


def test_database_url_error_hides_password() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(database_url="mysql://user:hunter2@db/x")
    assert "hunter2" not in str(caught.value)
    assert "CANCEL247_DATABASE_URL is invalid" in str(caught.value)


def test_token_never_in_repr() -> None:
    settings = load_settings(client_id="1", token="secret-token-value")
    assert "secret-token-value" not in repr(settings)
    assert "secret-token-value" not in str(settings.model_dump())


def test_visibility_timeout_must_exceed_task() -> None:
    settings = load_settings(visibility_timeout_seconds=100, retry_deadline_seconds=300)
    with pytest.raises(ConfigError, match="CANCEL247_VISIBILITY_TIMEOUT_SECONDS=100 must exceed"):
        settings.check_visibility_timeout()


def test_longest_task_bounds_deadline() -> None:
    settings = load_settings(
        retry_max_attempts=3, retry_max_seconds=2, retry_deadline_seconds=1000,
        connect_timeout_seconds=1, read_timeout_seconds=4,
    )
    # A long Retry-After can delay the last attempt up to the deadline, then
    # the attempt itself (four calls at 1 + 4 s), then margin.
    assert settings.longest_task_seconds == 1000 + 20 + 60
    single = load_settings(retry_max_attempts=1, connect_timeout_seconds=1, read_timeout_seconds=4)
    assert single.longest_task_seconds == 20 + 60


def test_bad_timezone() -> None:
    with pytest.raises(ConfigError, match="CANCEL247_TIMEZONE='Mars/Base' is invalid"):
        load_settings(timezone="Mars/Base")


def test_task_events_off_unless_set() -> None:
    from cancel247.worker.app import celery_config

    quiet = celery_config(load_settings())
    assert quiet["worker_send_task_events"] is False
    assert quiet["task_send_sent_event"] is False
    flower = celery_config(load_settings(task_events=True))
    assert flower["worker_send_task_events"] is True
    assert flower["task_send_sent_event"] is True
