"""Create the requests and attempts tables.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATUSES = "'queued', 'in_progress', 'succeeded', 'rejected', 'failed', 'uncertain', 'duplicate', 'invalid'"
OUTCOMES = "'in_flight', 'succeeded', 'transient', 'ambiguous', 'permanent', 'auth', 'interrupted'"
CLAIMED = sa.text("status IN ('in_progress', 'succeeded')")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "cancel_requests",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("order_code", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("source", sa.String(length=100), nullable=True),
        sa.Column("run", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=True),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("error_code", sa.String(length=32), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("duplicate_of", sa.String(length=36), nullable=True),
        sa.CheckConstraint(f"status IN ({STATUSES})", name=op.f("ck_cancel_requests_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cancel_requests")),
    )
    op.create_index("ix_cancel_requests_created_at", "cancel_requests", ["created_at"])
    op.create_index(
        "ix_cancel_requests_order_code_created_at", "cancel_requests", ["order_code", "created_at"]
    )
    op.create_index("ix_cancel_requests_status_updated_at", "cancel_requests", ["status", "updated_at"])
    # At most one request per order may be in progress or succeeded: this is
    # what turns a second request for the same order into a duplicate.
    op.create_index(
        "uq_cancel_requests_claimed_order",
        "cancel_requests",
        ["order_code"],
        unique=True,
        postgresql_where=CLAIMED,
        sqlite_where=CLAIMED,
    )

    op.create_table(
        "cancel_attempts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("run", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error_code", sa.String(length=32), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("body_excerpt", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("wait_seconds", sa.Float(), nullable=True),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.CheckConstraint(f"outcome IN ({OUTCOMES})", name=op.f("ck_cancel_attempts_outcome")),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["cancel_requests.id"],
            name=op.f("fk_cancel_attempts_request_id_cancel_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cancel_attempts")),
        sa.UniqueConstraint("request_id", "number", name=op.f("uq_cancel_attempts_request_id_number")),
    )
    op.create_index("ix_cancel_attempts_started_at", "cancel_attempts", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_cancel_attempts_started_at", table_name="cancel_attempts")
    op.drop_table("cancel_attempts")
    op.drop_index("uq_cancel_requests_claimed_order", table_name="cancel_requests")
    op.drop_index("ix_cancel_requests_status_updated_at", table_name="cancel_requests")
    op.drop_index("ix_cancel_requests_order_code_created_at", table_name="cancel_requests")
    op.drop_index("ix_cancel_requests_created_at", table_name="cancel_requests")
    op.drop_table("cancel_requests")
