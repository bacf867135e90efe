"""Create the holds table: pauses before a carrier call while the shared circuit breaker is open.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cancel_holds",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("run", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("held_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resume_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["cancel_requests.id"],
            name=op.f("fk_cancel_holds_request_id_cancel_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cancel_holds")),
    )
    op.create_index("ix_cancel_holds_request_id", "cancel_holds", ["request_id"])


def downgrade() -> None:
    op.drop_index("ix_cancel_holds_request_id", table_name="cancel_holds")
    op.drop_table("cancel_holds")
