"""Collector cursors and run health, stored beside the ledger's events."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.dialects import postgresql, sqlite

from store.schema import collectors


@dataclass(frozen=True, slots=True)
class CollectorState:
    """What the ledger knows of one collector."""

    name: str
    cursor: dict[str, Any] | None
    cursor_at_us: int | None
    last_run_at_us: int | None
    last_success_at_us: int | None
    last_error: str | None
    last_error_at_us: int | None
    failures: int
    runs: int
    events_appended: int
    last_run_events: int


def _now_us() -> int:
    return time.time_ns() // 1000


def _upsert(conn: Connection, name: str, values: Mapping[str, Any]) -> None:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(collectors).values(name=name, **values)
    conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_=dict(values)))


def save_cursor(conn: Connection, name: str, cursor: Mapping[str, Any]) -> None:
    """Store a collector's cursor inside the caller's transaction (the events' own)."""
    _upsert(
        conn,
        name,
        {
            "cursor": orjson.dumps(cursor, option=orjson.OPT_SORT_KEYS).decode(),
            "cursor_at": _now_us(),
        },
    )


def load_cursor(engine: Engine, name: str) -> dict[str, Any] | None:
    """A collector's last committed cursor, or None before its first commit."""
    with engine.connect() as conn:
        raw = conn.execute(select(collectors.c.cursor).where(collectors.c.name == name)).scalar()
    if raw is None:
        return None
    out: dict[str, Any] = orjson.loads(raw)
    return out


def record_run(engine: Engine, name: str, *, appended: int, error: str | None) -> None:
    """Record the outcome of one run: success resets the failure count, an error bumps it."""
    now = _now_us()
    with engine.begin() as conn:
        _upsert(conn, name, {"last_run_at": now})
        c = collectors.c
        values: dict[str, Any] = {
            "runs": c.runs + 1,
            "events_appended": c.events_appended + appended,
            "last_run_events": appended,
        }
        if error is None:
            values.update(last_success_at=now, failures=0)
        else:
            values.update(last_error=error[:4000], last_error_at=now, failures=c.failures + 1)
        conn.execute(update(collectors).where(c.name == name).values(**values))


def states(engine: Engine) -> list[CollectorState]:
    """Every collector the ledger has heard of, by name."""
    with engine.connect() as conn:
        rows = conn.execute(select(collectors).order_by(collectors.c.name)).all()
    return [
        CollectorState(
            name=r.name,
            cursor=orjson.loads(r.cursor) if r.cursor else None,
            cursor_at_us=r.cursor_at,
            last_run_at_us=r.last_run_at,
            last_success_at_us=r.last_success_at,
            last_error=r.last_error,
            last_error_at_us=r.last_error_at,
            failures=r.failures,
            runs=r.runs,
            events_appended=r.events_appended,
            last_run_events=r.last_run_events,
        )
        for r in rows
    ]
