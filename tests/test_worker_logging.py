"""Worker log lines that must stay on one line."""

from __future__ import annotations

import io
import logging

import cancel247.worker.signals  # noqa: F401  (installs the filter)


def test_failed_ack_logged_on_one_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("celery.worker.request")
    logger.addHandler(handler)
    try:
        try:
            raise ConnectionError("Error while reading from 127.0.0.1:6379 : (104, 'Connection reset by peer')")
        except ConnectionError as exc:
            logger.critical("Couldn't ack %r, reason:%r", "3289ab01", exc, exc_info=True)
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "Traceback" not in text
    assert len(text.strip().splitlines()) == 1
    assert "Couldn't ack '3289ab01'" in text
    assert "Connection reset by peer" in text
    assert "a final request is not run again" in text
