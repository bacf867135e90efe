"""Add the indexes that auditors' lookups and retention need.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

Lookups by order code, request id and received time were indexed from the
start. This adds the replays of one request (history), the time a request
finished (prune and period figures) and the time-ordered scan of attempts
together with their request (export of a period).
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_cancel_replays_request_id", "cancel_replays", ["request_id"])
    op.create_index("ix_cancel_requests_finished_at", "cancel_requests", ["finished_at"])
    op.create_index("ix_cancel_attempts_started_at_id", "cancel_attempts", ["started_at", "id"])
    op.drop_index("ix_cancel_attempts_started_at", table_name="cancel_attempts")


def downgrade() -> None:
    op.create_index("ix_cancel_attempts_started_at", "cancel_attempts", ["started_at"])
    op.drop_index("ix_cancel_attempts_started_at_id", table_name="cancel_attempts")
    op.drop_index("ix_cancel_requests_finished_at", table_name="cancel_requests")
    op.drop_index("ix_cancel_replays_request_id", table_name="cancel_replays")
