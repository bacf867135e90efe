"""Read side of the audit store: the history of an order."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from cancel247.audit.models import CancelRequest, Replay


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _replay(replay: Replay) -> dict[str, Any]:
    return {
        "run": replay.run,
        "previous_status": replay.previous_status,
        "actor": replay.actor,
        "reason": replay.reason,
        "forced": replay.forced,
        "selection": json.loads(replay.selection),
        "batch_id": replay.batch_id,
        "created_at": _iso(replay.created_at),
    }


# Relationships that request_record reads, loaded in one query each.
RECORD_LOADS = (
    selectinload(CancelRequest.attempts),
    selectinload(CancelRequest.replays),
    selectinload(CancelRequest.holds),
)


def request_record(r: CancelRequest) -> dict[str, Any]:
    """Return one request with its replays, holds and attempts, in the stable shape of :func:`order_history`."""
    return {
        "request_id": r.id,
        "order_code": r.order_code,
        "status": r.status,
        "run": r.run,
        "reason": r.reason,
        "source": r.source,
        "created_at": _iso(r.created_at),
        "started_at": _iso(r.started_at),
        "finished_at": _iso(r.finished_at),
        "updated_at": _iso(r.updated_at),
        "error_code": r.error_code,
        "detail": r.detail,
        "duplicate_of": r.duplicate_of,
        "replays": [_replay(p) for p in r.replays],
        "holds": [
            {"run": h.run, "reason": h.reason, "held_at": _iso(h.held_at), "resume_at": _iso(h.resume_at)}
            for h in r.holds
        ],
        "attempts": [
            {
                "number": a.number,
                "run": a.run,
                "outcome": a.outcome,
                "http_status": a.http_status,
                "error_code": a.error_code,
                "message": a.message,
                "detail": a.detail,
                "body_excerpt": a.body_excerpt,
                "duration_ms": a.duration_ms,
                "wait_seconds": a.wait_seconds,
                "worker": a.worker,
                "started_at": _iso(a.started_at),
                "finished_at": _iso(a.finished_at),
            }
            for a in r.attempts
        ],
    }


def order_history(session: Session, order_code: str) -> list[dict[str, Any]]:
    """Return every request for ``order_code``, oldest first, each with its attempts.

    The shape is stable (the ``history --json`` output): a list of requests
    with ``request_id``, ``order_code``, ``status``, and ``attempts``, each
    attempt with ``number``, ``outcome``, ``http_status``, ``error_code``,
    ``message``, ``started_at``, ``finished_at``, and ``replays``, each with
    ``run``, ``actor``, ``reason`` and ``created_at``, and ``holds``, each with
    ``run``, ``reason``, ``held_at`` and ``resume_at``. Further keys may be added;
    none of these is renamed or removed. Times are ISO 8601 in UTC.
    """
    requests = session.execute(
        select(CancelRequest)
        .where(CancelRequest.order_code == order_code)
        .order_by(CancelRequest.created_at, CancelRequest.id)
        .options(*RECORD_LOADS)
    ).scalars()
    return [request_record(r) for r in requests]


def order_code_of_request(session: Session, request_id: str) -> str | None:
    """Return the order code of request ``request_id``, or None when no such request is stored."""
    return session.execute(select(CancelRequest.order_code).where(CancelRequest.id == request_id)).scalar_one_or_none()
