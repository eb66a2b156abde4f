"""The ledger's tables, in SQLAlchemy Core."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Times are integer microseconds since the Unix epoch, UTC: exact, portable, cheap to compare.
events = Table(
    "events",
    metadata,
    Column(
        "position",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("source", String(1024), nullable=False),
    Column("id", String(256), nullable=False),
    Column("type", String(64), nullable=False),
    Column("time", BigInteger, nullable=False),
    Column("cluster", String(253)),
    Column("subject", String(1024)),
    Column("stream", String(200)),
    Column("stream_version", Integer),
    Column("recorded_at", BigInteger, nullable=False),
    Column("data_format", SmallInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("digest", LargeBinary(16), nullable=False),
    Column("sample_count", Integer, nullable=False),
    UniqueConstraint("source", "id"),
    UniqueConstraint("stream", "stream_version"),
    Index(None, "type", "position"),
    Index(None, "time"),
)

# Metric series are interned once so that a sample costs its timestamp and value, not its labels.
series = Table(
    "series",
    metadata,
    Column(
        "series_id",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("name", String(200), nullable=False),
    Column("labels", Text, nullable=False),
    UniqueConstraint("name", "labels"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("scope", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger),
    # NULL: never expires. The CLI's one-off delegate keys expire (store/keys.py).
    Column("expires_at", BigInteger),
)

DATA_JSON = 0
DATA_SAMPLES_V1 = 1

# One row per collector: its cursor (JSON), written in the transaction of the events it
# covers, and the health of its last runs.
collectors = Table(
    "collectors",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("cursor", Text),
    Column("cursor_at", BigInteger),
    Column("last_run_at", BigInteger),
    Column("last_success_at", BigInteger),
    Column("last_error", Text),
    Column("last_error_at", BigInteger),
    Column("failures", Integer, nullable=False, server_default="0"),
    Column("runs", BigInteger, nullable=False, server_default="0"),
    Column("events_appended", BigInteger, nullable=False, server_default="0"),
    Column("last_run_events", BigInteger, nullable=False, server_default="0"),
)
