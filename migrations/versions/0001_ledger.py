"""The ledger: events, interned metric series and API keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("position", _ID, primary_key=True, autoincrement=False),
        sa.Column("source", sa.String(1024), nullable=False),
        sa.Column("id", sa.String(256), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("time", sa.BigInteger, nullable=False),
        sa.Column("cluster", sa.String(253)),
        sa.Column("subject", sa.String(1024)),
        sa.Column("stream", sa.String(200)),
        sa.Column("stream_version", sa.Integer),
        sa.Column("recorded_at", sa.BigInteger, nullable=False),
        sa.Column("data_format", sa.SmallInteger, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("digest", sa.LargeBinary(16), nullable=False),
        sa.Column("sample_count", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("position", name="pk_events"),
        sa.UniqueConstraint("source", "id", name="uq_events_source_id"),
        sa.UniqueConstraint("stream", "stream_version", name="uq_events_stream_stream_version"),
    )
    op.create_index("ix_events_type_position", "events", ["type", "position"])
    op.create_index("ix_events_time", "events", ["time"])
    op.create_table(
        "series",
        sa.Column("series_id", _ID, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("labels", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("series_id", name="pk_series"),
        sa.UniqueConstraint("name", "labels", name="uq_series_name_labels"),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("revoked_at", sa.BigInteger),
        sa.PrimaryKeyConstraint("key_id", name="pk_api_keys"),
        sa.UniqueConstraint("token_hash", name="uq_api_keys_token_hash"),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("series")
    op.drop_index("ix_events_time", table_name="events")
    op.drop_index("ix_events_type_position", table_name="events")
    op.drop_table("events")
