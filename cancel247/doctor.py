"""Health checks behind `cancel247 doctor`: broker, database, schema, carrier login, workers.

Each check returns a :class:`CheckResult` with one line of detail and, when it
fails, the fix. Details never contain a secret: URLs are shown with the
password masked, and carrier errors only carry what the carrier returned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from kombu.exceptions import KombuError
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from cancel247.config import ENV_PREFIX, ConfigError, Settings, load_settings

CHECK_NAMES = ("broker", "database", "schema", "carrier", "worker")
# Seconds each network check may take by default.
DEFAULT_TIMEOUT_SECONDS = 5.0

OK = "ok"
FAILED = "failed"
SKIPPED = "skipped"


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    message = str(cause).strip()
    first = message.splitlines()[0] if message else ""
    return f"{type(cause).__name__}: {first}" if first else type(cause).__name__


def _database_url(settings: Settings) -> str:
    return make_url(settings.database_url.get_secret_value()).render_as_string(hide_password=True)


def _missing_sqlite_file(settings: Settings) -> str | None:
    """Return the path of a SQLite store that does not exist; connecting would create it empty."""
    url = make_url(settings.database_url.get_secret_value())
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return None if Path(url.database).is_file() else url.database


def check_broker(settings: Settings, timeout: float) -> CheckResult:
    """Connect to the broker once, without the worker's endless retries."""
    from cancel247.worker.app import make_app

    # The workers' app settings, TLS options included, with a short timeout.
    app = make_app(settings, main="cancel247-doctor")
    app.conf.broker_connection_timeout = timeout
    connection = app.connection_for_write()
    shown = connection.as_uri()
    try:
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
    except (KombuError, OSError) as exc:
        return CheckResult(
            "broker", FAILED, f"cannot connect to {shown}: {_first_line(exc)}",
            f"start Redis or correct {ENV_PREFIX}BROKER_URL",
        )
    finally:
        connection.release()
        app.close()
    return CheckResult("broker", OK, f"{shown} reachable")


def check_database(settings: Settings, timeout: float) -> CheckResult:
    """Open one connection to the audit store and run SELECT 1."""
    from sqlalchemy import create_engine

    url = make_url(settings.database_url.get_secret_value())
    shown = _database_url(settings)
    missing = _missing_sqlite_file(settings)
    if missing is not None:
        return CheckResult(
            "database", FAILED, f"{shown}: file {missing!r} not found",
            f"correct {ENV_PREFIX}DATABASE_URL or create the store with `cancel247 db upgrade`",
        )
    connect_args = {"connect_timeout": max(1, round(timeout))} if url.get_backend_name() == "postgresql" else {}
    engine = create_engine(url, connect_args=connect_args)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return CheckResult(
            "database", FAILED, f"cannot open {shown}: {_first_line(exc)}",
            f"start the database or correct {ENV_PREFIX}DATABASE_URL",
        )
    finally:
        engine.dispose()
    return CheckResult("database", OK, f"{shown} reachable")


def check_schema(settings: Settings) -> CheckResult:
    """Compare the audit store's Alembic revision with the newest one shipped."""
    from sqlalchemy import create_engine

    from cancel247.audit import migrate

    missing = _missing_sqlite_file(settings)
    if missing is not None:
        return CheckResult("schema", FAILED, f"file {missing!r} not found", "run `cancel247 db upgrade`")
    engine = create_engine(make_url(settings.database_url.get_secret_value()))
    try:
        current = migrate.current_revision(engine)
    except SQLAlchemyError as exc:
        return CheckResult(
            "schema", FAILED, f"cannot read the revision: {_first_line(exc)}",
            f"start the database or correct {ENV_PREFIX}DATABASE_URL",
        )
    finally:
        engine.dispose()
    head = migrate.head_revision()
    if current != head:
        return CheckResult(
            "schema", FAILED, f"audit store at revision {current or 'none (empty)'}, expected {head}",
            "run `cancel247 db upgrade`",
        )
    return CheckResult("schema", OK, f"at revision {head}")


def check_carrier(settings: Settings) -> CheckResult:
    """Log in to the carrier with the configured username and password."""
    from cancel247.carrier.client import CarrierClient
    from cancel247.carrier.errors import LoginError, Outcome

    try:
        settings.require_carrier()
    except ConfigError as exc:
        return CheckResult("carrier", FAILED, str(exc), "set the carrier variables the message names")
    if not settings.has_login:
        return CheckResult(
            "carrier", SKIPPED,
            "fixed token without username and password: only a CancelOrder call would check the token",
        )
    client = CarrierClient(settings)
    try:
        credentials = client.login()
    except LoginError as exc:
        if exc.reply.outcome == Outcome.AUTH:
            fix = f"correct {ENV_PREFIX}USERNAME and {ENV_PREFIX}PASSWORD"
        else:
            fix = f"check {ENV_PREFIX}API_URL and that the carrier is reachable from here"
        return CheckResult("carrier", FAILED, f"login to {_public_url(settings.api_url)} failed: {exc.reply.summary()}", fix)
    finally:
        client.close()
    return CheckResult("carrier", OK, f"logged in to {_public_url(settings.api_url)} as ClientID {credentials.client_id}")


def _public_url(url: str | None) -> str:
    """Return ``url`` without any user name or password it carries."""
    parts = urlsplit(url or "")
    if parts.username is None and parts.password is None:
        return url or "-"
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def check_worker(settings: Settings, timeout: float, node: str | None = None) -> CheckResult:
    """Ask the workers which queues they consume (Celery remote control) and look for ours."""
    from cancel247.worker.app import make_app

    app = make_app(settings, main="cancel247-doctor")
    app.conf.broker_connection_max_retries = 1
    try:
        destination = [node] if node else None
        # broadcast keeps one reply per worker; inspect() would merge workers that share a node name.
        answers = app.control.broadcast(
            "active_queues", reply=True, timeout=timeout, destination=destination
        ) or []
    except (KombuError, OSError) as exc:
        return CheckResult(
            "worker", FAILED, f"cannot ask the workers: {_first_line(exc)}",
            f"start Redis or correct {ENV_PREFIX}BROKER_URL",
        )
    finally:
        app.close()
    consuming = sorted(
        {
            name
            for answer in answers
            for name, queues in answer.items()
            if any(q.get("name") == settings.queue for q in queues or [])
        }
    )
    if consuming:
        return CheckResult("worker", OK, f"queue {settings.queue!r} consumed by {', '.join(consuming)}")
    who = f"worker {node!r} did not answer" if node else "no worker answered"
    others = f" ({len(answers)} other worker(s) answered)" if answers else ""
    return CheckResult(
        "worker", FAILED,
        f"{who} within {timeout:g} s consuming queue {settings.queue!r}{others}",
        f"start a worker with `cancel247 worker` (queue from {ENV_PREFIX}QUEUE)",
    )


def run_checks(
    *,
    skip: Iterable[str] = (),
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    node: str | None = None,
    settings_loader: Callable[[], Settings] = load_settings,
) -> list[CheckResult]:
    """Run every check not in ``skip``, in order, skipping those whose prerequisite failed."""
    skipped = set(skip)
    try:
        settings = settings_loader()
    except ConfigError as exc:
        return [CheckResult("settings", FAILED, str(exc), f"correct the {ENV_PREFIX}* variable the message names")]

    results: list[CheckResult] = []
    failed: set[str] = set()

    def add(result: CheckResult) -> None:
        results.append(result)
        if result.status == FAILED:
            failed.add(result.name)

    def user_skip(name: str) -> bool:
        if name in skipped:
            results.append(CheckResult(name, SKIPPED, "skipped by --skip"))
            return True
        return False

    if not user_skip("broker"):
        add(check_broker(settings, timeout))
    if not user_skip("database"):
        add(check_database(settings, timeout))
    if not user_skip("schema"):
        if "database" in failed:
            add(CheckResult("schema", SKIPPED, "database unreachable"))
        else:
            add(check_schema(settings))
    if not user_skip("carrier"):
        add(check_carrier(settings))
    if not user_skip("worker"):
        if "broker" in failed:
            add(CheckResult("worker", SKIPPED, "broker unreachable"))
        else:
            add(check_worker(settings, timeout, node))
    return results
