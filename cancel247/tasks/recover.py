"""The ``cancel247.recover`` Celery task, which celery beat runs every CANCEL247_RECOVER_INTERVAL_SECONDS."""

from __future__ import annotations

import logging

from cancel247.recover import RecoverError, default_age_seconds, recover
from cancel247.tasks.producer import Producer
from cancel247.worker.app import RECOVER_TASK_NAME, app
from cancel247.worker.runtime import get_runtime

log = logging.getLogger(__name__)

_producer: Producer | None = None


@app.task(name=RECOVER_TASK_NAME, ignore_result=True)
def recover_stuck() -> int:
    """Send stuck requests again with the default threshold; return how many were sent."""
    global _producer
    settings = get_runtime().settings
    if _producer is None:
        _producer = Producer(settings)
    try:
        result = recover(_producer, default_age_seconds(settings))
    except RecoverError as exc:
        log.error("recover not run: %s; raise CANCEL247_RECOVER_AFTER_SECONDS", exc)
        return 0
    if result.plan.in_broker:
        log.info("recover: %d old request(s) still have their message in the broker; left alone", len(result.plan.in_broker))
    return len(result.enqueued)
