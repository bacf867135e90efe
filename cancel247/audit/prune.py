"""Retention: delete finished requests, with their attempts and replays, older than a date.

Only requests in a terminal status whose ``finished_at`` is before the
cut-off are deleted; queued and in-progress requests are never touched,
whatever their age. Work goes in batches, each in its own transaction:
the batch's rows are locked, written to the export file (flushed to disk)
and only then deleted, so a crash loses nothing that was not exported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import IO

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from cancel247.audit.history import RECORD_LOADS, request_record
from cancel247.audit.models import TERMINAL_STATUSES, Attempt, CancelRequest, Hold, Replay
from cancel247.audit.store import AuditStore

BATCH_REQUESTS = 500
_TERMINAL = [s.value for s in TERMINAL_STATUSES]


@dataclass(frozen=True)
class PruneCounts:
    requests: int
    attempts: int
    replays: int
    # Requests received before the cut-off that have not finished: never deleted.
    unfinished_kept: int


def _finished_before(before: datetime) -> list[object]:
    return [CancelRequest.status.in_(_TERMINAL), CancelRequest.finished_at < before]


def _count_unfinished(session: Session, before: datetime) -> int:
    """Count the requests received before ``before`` that have not finished: prune keeps them."""
    return int(
        session.execute(
            select(func.count())
            .select_from(CancelRequest)
            .where(CancelRequest.status.not_in(_TERMINAL), CancelRequest.created_at < before)
        ).scalar_one()
    )


def count_prunable(store: AuditStore, before: datetime) -> PruneCounts:
    """Count what :func:`prune` would delete, without deleting anything."""
    with store.transaction() as session:
        ids = select(CancelRequest.id).where(*_finished_before(before)).scalar_subquery()
        requests = session.execute(select(func.count()).select_from(CancelRequest).where(*_finished_before(before))).scalar_one()
        attempts = session.execute(select(func.count()).select_from(Attempt).where(Attempt.request_id.in_(ids))).scalar_one()
        replays = session.execute(select(func.count()).select_from(Replay).where(Replay.request_id.in_(ids))).scalar_one()
        unfinished = _count_unfinished(session, before)
    return PruneCounts(requests, attempts, replays, unfinished)


def prune(
    store: AuditStore,
    before: datetime,
    *,
    export: IO[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> PruneCounts:
    """Delete finished requests older than ``before``; write each one to ``export`` first.

    ``export`` receives one JSON object per line per deleted request, in the
    shape of ``cancel247 history --json`` (the request with its attempts and
    replays), so the file contains everything that was deleted.
    """
    requests = attempts = replays = 0
    while True:
        with store.transaction() as session:
            batch = (
                session.execute(
                    select(CancelRequest)
                    .where(*_finished_before(before))
                    .order_by(CancelRequest.finished_at, CancelRequest.id)
                    .limit(BATCH_REQUESTS)
                    .with_for_update(skip_locked=True)
                    .options(*RECORD_LOADS)
                )
                .scalars()
                .all()
            )
            if not batch:
                break
            if export is not None:
                for request in batch:
                    export.write(json.dumps(request_record(request), ensure_ascii=False, separators=(",", ":")))
                    export.write("\n")
                export.flush()
                os.fsync(export.fileno())
            ids = [request.id for request in batch]
            session.execute(delete(Hold).where(Hold.request_id.in_(ids)))
            replays += session.execute(delete(Replay).where(Replay.request_id.in_(ids))).rowcount or 0
            attempts += session.execute(delete(Attempt).where(Attempt.request_id.in_(ids))).rowcount or 0
            requests += session.execute(
                delete(CancelRequest).where(CancelRequest.id.in_(ids), *_finished_before(before))
            ).rowcount or 0
        if progress is not None:
            progress(len(batch))
    with store.transaction() as session:
        unfinished = _count_unfinished(session, before)
    return PruneCounts(requests, attempts, replays, unfinished)
