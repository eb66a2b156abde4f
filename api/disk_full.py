"""A full disk answers 507: the write was refused whole, and the server recovers by itself.

An append is one transaction, so a ledger that cannot grow (SQLite's SQLITE_FULL, PostgreSQL's
disk_full, an OSError ENOSPC or EDQUOT, DuckDB's "No space left on device") rolls back and
records nothing. The client is told so with 507 Insufficient Storage and a Retry-After, rather
than a 500; once space returns, the next request simply succeeds.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3

import duckdb
import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError

from store.errors import error_chain

log = logging.getLogger("opsledger.api")

DETAIL = "the ledger's storage is full: nothing was written; free space and retry"
#: Seconds a client should wait before retrying: space comes back by an operator's hand.
RETRY_AFTER_SECONDS = 30
STATUS = 507

_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: How DuckDB's messages spell those errnos (the C library's strerror).
_STRERRORS = tuple(os.strerror(n) for n in sorted(_ERRNOS))
#: PostgreSQL's disk_full (class 53, insufficient resources).
_PG_DISK_FULL = "53100"


def _says_full(exc: BaseException) -> bool:
    """Whether this exception itself (not what it wraps) reports a lack of space."""
    if isinstance(exc, OSError):
        return exc.errno in _ERRNOS
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int):
            return code & 0xFF == sqlite3.SQLITE_FULL
        return "database or disk is full" in str(exc)
    if isinstance(exc, psycopg.Error):
        return exc.sqlstate == _PG_DISK_FULL
    if isinstance(exc, duckdb.FatalException):
        # DuckDB invalidates its database on a fatal error (a checkpoint that could not be
        # written, say): freeing space is not enough, it must be reopened. Not a 507, then,
        # whose "free space and retry" would not help; it stays a logged 500.
        return False
    if isinstance(exc, duckdb.Error):
        return any(s in str(exc) for s in _STRERRORS)
    return False


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc`, or an error it wraps or was raised while handling, is out of space.

    Follows SQLAlchemy's `.orig` and the `__cause__` / `__context__` chain: a rollback that
    fails after a failed commit must not hide why the commit failed.
    """
    return any(_says_full(e) for e in error_chain(exc))


def disk_full_response() -> JSONResponse:
    """The 507 every route answers when the storage is full."""
    return JSONResponse(
        {"detail": DETAIL, "errors": []},
        status_code=STATUS,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    if not is_disk_full(exc):
        # Not ours: on to the app's handler of unexpected errors (500, logged), as before.
        raise exc
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    log.error("storage full on %s %s: %s", request.method, request.url.path, first)
    return disk_full_response()


def install(app: FastAPI) -> None:
    """Answer 507 for out-of-space errors from the ledger, the read model or the file system.

    Registered on the exception classes that can carry one; anything else they catch is
    re-raised to the app's catch-all, so other errors are answered exactly as before.
    """
    for cls in (DBAPIError, OSError, sqlite3.Error, psycopg.Error, duckdb.Error):
        app.add_exception_handler(cls, _handle)
