"""Engines for the ledger: SQLite in WAL mode with explicit write transactions, or PostgreSQL."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: The ledger file (SQLite gives its -wal, -shm and -journal the same) and the directory
#: opsledger makes for it: they hold every event and the API keys' hashes.
FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700
log = logging.getLogger("opsledger.store")
# One warning per file and process: a command makes several engines.
_warned: set[Path] = set()


def _prepare_sqlite_file(path: Path) -> None:
    """Make the ledger's directory (0700) and file (0600) unless they exist; warn when loose."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        # mkdir's mode passes through the umask; make sure of 0700 whatever it is.
        os.chmod(path.parent, DIR_MODE)
    try:
        # Created here, before SQLite opens it: SQLite would use the umask (0644 by default).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077 and path not in _warned:
            _warned.add(path)
            log.warning(
                "%s is open to its group or others (mode %04o): `chmod 600` it, -wal and -shm",
                path,
                mode,
            )
    else:
        os.fchmod(fd, FILE_MODE)
        os.close(fd)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine; SQLite files get WAL, a busy timeout and BEGIN IMMEDIATE for writers."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # The API runs sync routes on up to 40 threads (AnyIO's default): with SQLAlchemy's
        # default 5 + 10 connections, a burst of deliveries queued behind the ledger's append
        # lock waited out the 30 s pool timeout and answered 500. One connection per thread,
        # plus the projector's, stays well under PostgreSQL's default 100.
        kwargs = {"pool_size": 10, "max_overflow": 35, **kwargs}
        return create_engine(url, pool_pre_ping=True, **kwargs)
    if (
        parsed.database
        and parsed.database != ":memory:"
        and not parsed.database.startswith("file:")
    ):
        _prepare_sqlite_file(Path(parsed.database))
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy's begin event below, not pysqlite's own guess.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the write lock up front so positions are assigned in commit order and a
        # read-then-write never fails half-way with SQLITE_BUSY on lock upgrade.
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def is_sqlite(engine: Engine) -> bool:
    """Whether the engine is SQLite."""
    return engine.dialect.name == "sqlite"


def display_url(url: str) -> str:
    """The URL with any password masked, safe for logs and messages."""
    return make_url(url).render_as_string(hide_password=True)
