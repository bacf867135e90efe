"""Worker signal handlers: refuse to start on unsafe settings."""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery.signals import worker_init

from cancel247.audit.db import get_engine
from cancel247.audit.migrate import SchemaOutdated, check_schema
from cancel247.config import ConfigError, get_settings

log = logging.getLogger(__name__)


@worker_init.connect
def _check_settings(**_: Any) -> None:
    # Celery logs and swallows exceptions raised by signal handlers, so a bad
    # setting has to end the process explicitly.
    try:
        settings = get_settings()
        settings.require_carrier()
        settings.check_visibility_timeout()
        check_schema(get_engine(settings.database_url.get_secret_value()))
    except (ConfigError, SchemaOutdated) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
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
