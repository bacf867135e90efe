"""Create the replays table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cancel_replays",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("run", sa.Integer(), nullable=False),
        sa.Column("previous_status", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("selection", sa.Text(), nullable=False),
        sa.Column("forced", sa.Boolean(), nullable=False),
        sa.Column("batch_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["cancel_requests.id"],
            name=op.f("fk_cancel_replays_request_id_cancel_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cancel_replays")),
        sa.UniqueConstraint("request_id", "run", name=op.f("uq_cancel_replays_request_id_run")),
    )
    op.create_index("ix_cancel_replays_batch_id", "cancel_replays", ["batch_id"])
    op.create_index("ix_cancel_replays_created_at", "cancel_replays", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_cancel_replays_created_at", table_name="cancel_replays")
    op.drop_index("ix_cancel_replays_batch_id", table_name="cancel_replays")
    op.drop_table("cancel_replays")
