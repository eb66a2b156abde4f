"""Collectors: a cursor per collector, kept in the events' transaction, and run health.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "collectors",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("cursor", sa.Text),
        sa.Column("cursor_at", sa.BigInteger),
        sa.Column("last_run_at", sa.BigInteger),
        sa.Column("last_success_at", sa.BigInteger),
        sa.Column("last_error", sa.Text),
        sa.Column("last_error_at", sa.BigInteger),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("runs", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("events_appended", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("last_run_events", sa.BigInteger, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("name", name="pk_collectors"),
    )


def downgrade() -> None:
    op.drop_table("collectors")
