"""Settings read from ``CANCEL247_*`` environment variables.

One pydantic-settings class holds every knob. A wrong or missing value stops
start-up with :class:`ConfigError`, whose message is one line naming the
variable and what it needs. Secrets (token, password, passwords inside URLs)
are kept as :class:`~pydantic.SecretStr` and never appear in that message.
"""

from __future__ import annotations

import difflib
import functools
import os
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from urllib.parse import parse_qs, urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

ENV_PREFIX = "CANCEL247_"

# Defaults, each with its unit. The retry budget is sized so that a carrier
# outage of a few minutes is ridden out without a replay.
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE_URL = "sqlite:///cancel247.sqlite3"
DEFAULT_RETRY_MAX_ATTEMPTS = 6
DEFAULT_RETRY_INITIAL_SECONDS = 1.0
DEFAULT_RETRY_MIN_SECONDS = 0.1
DEFAULT_RETRY_MAX_SECONDS = 30.0
DEFAULT_RETRY_DEADLINE_SECONDS = 300.0
DEFAULT_CONNECT_TIMEOUT_SECONDS = 5.0
DEFAULT_READ_TIMEOUT_SECONDS = 15.0
DEFAULT_CONCURRENCY = 16
# Redis redelivers an unacknowledged message after this long. It must exceed
# the longest possible task (checked at start-up) and bounds how long a
# message held by a killed worker waits before another worker takes it.
DEFAULT_VISIBILITY_TIMEOUT_SECONDS = 600
# Seconds between a worker's scans for unacknowledged messages older than the
# visibility timeout. A message held by a killed worker goes back on the
# queue within VISIBILITY_TIMEOUT_SECONDS plus this, once any worker runs.
DEFAULT_UNACKED_RESTORE_INTERVAL_SECONDS = 10
DEFAULT_TIMEZONE = "Asia/Ho_Chi_Minh"
# Hosts a plain http:// carrier URL may name: only a local sandbox, so the
# carrier token never crosses a network unencrypted.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
DEFAULT_QUEUE = "cancel247"


class ConfigError(Exception):
    """A setting is missing or invalid. The message is one line for people."""


class Settings(BaseSettings):
    """Every setting of cancel247, read from ``CANCEL247_<NAME>`` variables."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        validate_default=True,
        frozen=True,
    )

    api_url: str | None = Field(
        default=None,
        description="Carrier base URL, e.g. https://customer-api.247express.vn. Required by the worker.",
    )
    client_id: str | None = Field(default=None, description="Fixed ClientID issued by the carrier.")
    token: SecretStr | None = Field(default=None, description="Fixed Token issued with CLIENT_ID.")
    username: str | None = Field(default=None, description="Account name for ClientLogin.")
    password: SecretStr | None = Field(default=None, description="Password for ClientLogin.")
    ca_bundle: str | None = Field(
        default=None,
        description="Path of a CA bundle for the carrier's TLS certificate. Verification is always on.",
    )

    broker_url: SecretStr = Field(default=SecretStr(DEFAULT_BROKER_URL))
    database_url: SecretStr = Field(default=SecretStr(DEFAULT_DATABASE_URL))
    queue: str = Field(default=DEFAULT_QUEUE, min_length=1)

    retry_max_attempts: int = Field(default=DEFAULT_RETRY_MAX_ATTEMPTS, ge=1, le=100)
    retry_initial_seconds: float = Field(default=DEFAULT_RETRY_INITIAL_SECONDS, gt=0, le=3600)
    retry_min_seconds: float = Field(default=DEFAULT_RETRY_MIN_SECONDS, ge=0, le=3600)
    retry_max_seconds: float = Field(default=DEFAULT_RETRY_MAX_SECONDS, gt=0, le=3600)
    retry_deadline_seconds: float = Field(default=DEFAULT_RETRY_DEADLINE_SECONDS, gt=0, le=86400)
    connect_timeout_seconds: float = Field(default=DEFAULT_CONNECT_TIMEOUT_SECONDS, gt=0, le=300)
    read_timeout_seconds: float = Field(default=DEFAULT_READ_TIMEOUT_SECONDS, gt=0, le=600)
    concurrency: int = Field(default=DEFAULT_CONCURRENCY, ge=1, le=512)
    # Circuit breaker shared by all workers of the queue; a threshold of 0 turns it off.
    breaker_threshold: int = Field(default=10, ge=0, le=100_000)
    breaker_cooldown_seconds: float = Field(default=30.0, gt=0, le=3600)
    breaker_failure_window_seconds: float = Field(default=60.0, gt=0, le=86400)
    # Carrier calls per period across all workers and hosts, e.g. "50/second"; empty means no limit.
    rate_limit: str | None = None
    # Celery task events, which Flower needs; each costs Redis round trips per task.
    task_events: bool = False
    pool: str = Field(default="threads", pattern="^(threads|prefork|solo|gevent|eventlet)$")
    visibility_timeout_seconds: int = Field(default=DEFAULT_VISIBILITY_TIMEOUT_SECONDS, ge=1)
    unacked_restore_interval_seconds: int = Field(default=DEFAULT_UNACKED_RESTORE_INTERVAL_SECONDS, ge=1, le=3600)
    recover_after_seconds: int | None = Field(
        default=None,
        ge=1,
        description="Age without progress after which `cancel247 recover` re-sends a queued or in_progress "
        "request. Default: the redelivery bound plus 60 s.",
    )
    recover_interval_seconds: int = Field(
        default=0, ge=0, le=86400, description="Seconds between recover runs under celery beat; 0 turns them off."
    )
    timezone: str = Field(default=DEFAULT_TIMEZONE)

    @field_validator("api_url")
    @classmethod
    def _check_api_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("https://", "http://")):
            raise ValueError("must start with https:// (or http:// for the local sandbox)")
        if value.startswith("http://") and urlsplit(value).hostname not in LOOPBACK_HOSTS:
            raise ValueError(
                "must start with https://: http:// would send the carrier token unencrypted, and is "
                "accepted only for a sandbox on 127.0.0.1, ::1 or localhost"
            )
        return value.rstrip("/")

    @field_validator("rate_limit")
    @classmethod
    def _check_rate_limit(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from limits import parse

        try:
            parse(value)
        except ValueError:
            raise ValueError("must look like 50/second, 600/minute or 10 per 1 second") from None
        return value.strip()

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr) -> SecretStr:
        try:
            url = make_url(value.get_secret_value())
        except ArgumentError:
            raise ValueError(
                "is not a SQLAlchemy URL; use postgresql+psycopg://user@host/db or sqlite:///path"
            ) from None
        if url.get_backend_name() not in ("postgresql", "sqlite"):
            raise ValueError("must be a postgresql:// (psycopg) or sqlite:/// URL")
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _check_ca_bundle(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not Path(value).exists():
            raise ValueError("file not found: give the path of a PEM file of CA certificates")
        return value

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        query = parse_qs(urlsplit(url).query)
        weakened = any(v.upper() not in ("REQUIRED", "CERT_REQUIRED") for v in query.get("ssl_cert_reqs", [])) or any(
            v.lower() in ("false", "0", "no", "off") for v in query.get("ssl_check_hostname", [])
        )
        if weakened:
            raise ValueError(
                "ssl_cert_reqs other than CERT_REQUIRED, or ssl_check_hostname=false, turns off the check "
                "of the Redis server's certificate; remove it (set SSL_CERT_FILE for a private CA)"
            )
        if not url.startswith(("redis://", "rediss://", "redis+socket://")):
            raise ValueError("must be a redis://, rediss:// or redis+socket:// URL")
        if url.startswith(("redis://", "rediss://")):
            database = urlsplit(url).path.lstrip("/")
            if database and not database.isdigit():
                raise ValueError(
                    f"database {database!r} after the host must be a number, e.g. redis://127.0.0.1:6379/0"
                )
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("is not an IANA time zone name such as Asia/Ho_Chi_Minh") from None
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.retry_min_seconds > self.retry_max_seconds:
            raise ValueError(
                "CANCEL247_RETRY_MIN_SECONDS must not exceed CANCEL247_RETRY_MAX_SECONDS"
            )
        if (self.client_id is None) != (self.token is None):
            raise ValueError("CANCEL247_CLIENT_ID and CANCEL247_TOKEN must be set together")
        if (self.username is None) != (self.password is None):
            raise ValueError("CANCEL247_USERNAME and CANCEL247_PASSWORD must be set together")
        return self

    # Derived values -------------------------------------------------------

    @property
    def has_login(self) -> bool:
        return self.username is not None and self.password is not None

    @property
    def has_fixed_token(self) -> bool:
        return self.client_id is not None and self.token is not None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def longest_attempt_seconds(self) -> float:
        """Upper bound of one attempt: a login, a call, a re-login and the repeated call."""
        return 4 * (self.connect_timeout_seconds + self.read_timeout_seconds)

    @property
    def longest_task_seconds(self) -> float:
        """Upper bound of one task run: no attempt starts after the deadline."""
        # A Retry-After longer than RETRY_MAX_SECONDS is honoured, so with a
        # second attempt allowed only the deadline bounds when the last starts.
        last_start = self.retry_deadline_seconds if self.retry_max_attempts > 1 else 0.0
        # 60 s of margin for audit writes and the worker's own overhead.
        return last_start + self.longest_attempt_seconds + 60

    @property
    def max_countdown_seconds(self) -> float:
        """Maximum countdown, in seconds, a task may be retried with.

        Redis counts the visibility timeout from delivery, and a worker keeps a
        message with a countdown unacknowledged until it has run, so the
        countdown plus the longest task must stay under the visibility timeout
        or the message is delivered twice.
        """
        return max(0.0, self.visibility_timeout_seconds - self.longest_task_seconds)

    @property
    def redelivery_bound_seconds(self) -> int:
        """Maximum seconds before the message of a killed worker is delivered again, while another worker runs."""
        return self.visibility_timeout_seconds + self.unacked_restore_interval_seconds

    def require_carrier(self) -> None:
        """Raise ConfigError unless the carrier URL and one kind of credentials are set."""
        if self.api_url is None:
            raise ConfigError(
                f"{ENV_PREFIX}API_URL is missing: set it to the carrier's base URL, "
                "e.g. https://customer-api.247express.vn, or to the URL `cancel247 sandbox` prints"
            )
        if not (self.has_login or self.has_fixed_token):
            raise ConfigError(
                f"no carrier credentials: set {ENV_PREFIX}CLIENT_ID and {ENV_PREFIX}TOKEN, "
                f"or {ENV_PREFIX}USERNAME and {ENV_PREFIX}PASSWORD"
            )

    def check_visibility_timeout(self) -> None:
        """Raise ConfigError if Redis could redeliver a message whose task still runs."""
        longest = self.longest_task_seconds
        if self.visibility_timeout_seconds <= longest:
            raise ConfigError(
                f"{ENV_PREFIX}VISIBILITY_TIMEOUT_SECONDS={self.visibility_timeout_seconds} "
                f"must exceed the longest possible task ({longest:.0f} s from the retry "
                f"deadline, attempts and timeouts): raise it above {longest:.0f} or lower "
                f"{ENV_PREFIX}RETRY_DEADLINE_SECONDS"
            )


# Values never echoed in error messages: credentials, and URLs that may carry them.
_SECRET_FIELDS = {"token", "password", "broker_url", "database_url", "api_url"}


def _describe(error: dict[str, Any]) -> str:
    location = error.get("loc") or ()
    field = str(location[0]) if location else ""
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if not field:
        return message
    name = f"{ENV_PREFIX}{field.upper()}"
    if field in _SECRET_FIELDS:
        return f"{name} is invalid: {message}"
    return f"{name}={error.get('input')!r} is invalid: {message}"


# Words in variable names that ask to skip certificate checks. No setting
# does that, and a variable that looks like one is rejected rather than
# silently ignored.
_INSECURE_WORDS = ("VERIFY", "INSECURE", "SSL_NO", "NO_SSL", "TLS_NO", "NO_TLS")


def _reject_insecure_variables() -> None:
    for name in os.environ:
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and any(word in upper for word in _INSECURE_WORDS):
            raise ConfigError(
                f"{name} is not a setting: TLS certificate verification cannot be turned off; "
                f"unset it, and set {ENV_PREFIX}CA_BUNDLE to a PEM file for a private CA"
            )


# Variables of the test suite and the benchmarks share the prefix but are not settings.
_NOT_SETTINGS_PREFIXES = (f"{ENV_PREFIX}TEST_", f"{ENV_PREFIX}BENCH_")
_warned: set[str] = set()


def _warn_unknown_variables() -> None:
    known = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    for name in os.environ:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known or upper.startswith(_NOT_SETTINGS_PREFIXES) or name in _warned:
            continue
        _warned.add(name)
        close = difflib.get_close_matches(upper, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        print(f"warning: {name} is not a setting{hint}; it is ignored", file=sys.stderr)


def load_settings(**overrides: Any) -> Settings:
    """Read the settings from the environment, with ``overrides`` on top."""
    _reject_insecure_variables()
    _warn_unknown_variables()
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors()[0])) from None


@functools.cache
def get_settings() -> Settings:
    """Return the process-wide settings, read once from the environment."""
    return load_settings()
