"""Worker signal handlers: refuse to start on unsafe settings."""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery.signals import worker_init
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from cancel247.audit.db import get_engine
from cancel247.audit.migrate import SchemaOutdated, check_schema
from cancel247.config import ConfigError, get_settings
from cancel247.worker.runtime import build_guard

log = logging.getLogger(__name__)


class _AckErrorOnOneLine(logging.Filter):
    """Log kombu's failed acknowledgements in one line instead of two tracebacks.

    They happen when Redis goes away while a task finishes. The message then
    comes back after the visibility timeout, and the claim finds its request
    final, so the carrier is not called again.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith(("Couldn't ack", "Couldn't reject")):
            record.exc_info = None
            record.exc_text = None
            record.msg += " (the message comes back after the visibility timeout; a final request is not run again)"
        return True


logging.getLogger("celery.worker.request").addFilter(_AckErrorOnOneLine())


@worker_init.connect
def _check_settings(**_: Any) -> None:
    # Celery logs and swallows exceptions raised by signal handlers, so a bad
    # setting has to end the process explicitly.
    try:
        settings = get_settings()
        settings.require_carrier()
        settings.check_visibility_timeout()
        check_schema(get_engine(settings.database_url.get_secret_value()))
        build_guard(settings)
    except (ConfigError, SchemaOutdated) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except ValueError as exc:
        print(f"error: cannot set up the circuit breaker or rate limit on the broker's Redis: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        url = make_url(settings.database_url.get_secret_value()).render_as_string(hide_password=True)
        print(
            f"error: cannot open the audit store at {url}: {type(cause).__name__}: "
            f"{str(cause).splitlines()[0] if str(cause) else ''}; "
            "check that the database runs and CANCEL247_DATABASE_URL",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(2) from None
    log.info(
        "cancel247 worker: queue=%s pool=%s concurrency=%d max_attempts=%d deadline=%gs visibility_timeout=%ds",
        settings.queue,
        settings.pool,
        settings.concurrency,
        settings.retry_max_attempts,
        settings.retry_deadline_seconds,
        settings.visibility_timeout_seconds,
    )
    log.info(
        "cancel247 worker: circuit breaker %s, rate limit %s",
        f"after {settings.breaker_threshold} failures, cool-down {settings.breaker_cooldown_seconds:g}s"
        if settings.breaker_threshold
        else "off",
        settings.rate_limit or "off",
    )
