"""The server's read-only SQL: snapshots of the read model, and the workers that query them.

DuckDB lets a process open a file once, with one configuration, and the server holds the read
model read-write. So queries run on a copy: under the projector's write lock (no catch-up
runs) the read model is checkpointed and copied; a worker opens the copy read-only and locked.
The copy never opens the live file (see analytics/readmodel/model.py: that would drop its lock).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import duckdb

from analytics.readmodel.model import ReadModel, pid_alive
from analytics.sql.pool import QueryError, WorkerPool
from analytics.sql.sandbox import QueryLimits
from store.settings import Settings
from store.timefmt import format_us

log = logging.getLogger("opsledger.query")

#: A snapshot folder of this layout belongs to the process with that pid: `<pid>.<instance>`.
_OWNED = re.compile(r"(\d+)\.(\d+)")
#: Snapshots objects of this process (tests make several over one read model).
_instances = itertools.count(1)
#: How old a snapshot may grow, at least, before a query waits for the write lock to renew it.
STALE_AFTER_S = 30.0


def limits_of(settings: Settings) -> QueryLimits:
    """The query limits the settings declare."""
    return QueryLimits(
        timeout_s=settings.query_timeout_seconds,
        memory_limit=settings.query_memory_limit,
        max_rows=settings.query_max_rows,
        max_result_bytes=settings.query_max_result_bytes,
    )


def snapshot_root(model_path: Path) -> Path:
    """The folder under which each server process keeps its query snapshots."""
    return model_path.parent / f".{model_path.name}.query-snapshots"


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _reason(exc: BaseException) -> str:
    """Why a snapshot failed, without file paths (the caller of /v1/query sees it)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


@dataclass(slots=True)
class Snapshot:
    """A copy of the read model, and the last time it was known to equal it."""

    path: Path
    fingerprint: tuple[Any, ...]
    as_of: float
    users: int = 0
    retired: bool = False


class Snapshots:
    """Copies of the read model for queries, at most `max_age_s` behind it."""

    def __init__(self, model: ReadModel, max_age_s: float, first_wait_s: float) -> None:
        self.model = model
        self.max_age_s = max_age_s
        self.first_wait_s = first_wait_s
        root = snapshot_root(model.path)
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Our own folder: another process's snapshots are never touched, except those of a
        # process that is gone (a crashed server) or of an older layout.
        for old in root.iterdir():
            m = _OWNED.fullmatch(old.name)
            if m is None or not pid_alive(int(m.group(1))):
                shutil.rmtree(old, ignore_errors=True)
        self.base = root / f"{os.getpid()}.{next(_instances)}"
        shutil.rmtree(self.base, ignore_errors=True)
        self.base.mkdir(mode=0o700)
        self._lock = threading.Lock()
        self._current: Snapshot | None = None
        self._seq = itertools.count(1)

    def _fingerprint(self, con: duckdb.DuckDBPyConnection) -> tuple[Any, ...]:
        # Every catch-up batch and every rebuild moves a checkpoint's position or time.
        row = con.execute(
            "SELECT count(*), sum(position), max(updated_at), string_agg(name || version, ',' "
            "ORDER BY name) FROM projection_checkpoints"
        ).fetchone()
        return tuple(row or ())

    def _checkpointed(self, con: duckdb.DuckDBPyConnection) -> bool:
        """Whether the file alone now holds every committed change (its WAL folded in)."""
        # CHECKPOINT fails while some cursor keeps an older transaction open across a rebuild.
        try:
            con.execute("CHECKPOINT")
        except duckdb.TransactionException:
            return False
        return not self.model.wal_path.exists()

    def _copy_database(self, con: duckdb.DuckDBPyConnection, target: Path, n: int) -> None:
        # DuckDB writes its catalog and rows into a new file through this connection: slower
        # than copying bytes, but it needs no checkpoint and opens nothing of the live file.
        alias = _quoted(f"snapshot_{os.getpid()}_{n}")
        row = con.execute("SELECT current_database()").fetchone()
        catalog = _quoted(str(row[0]) if row else "main")
        path = str(target).replace("'", "''")
        con.execute(f"ATTACH '{path}' AS {alias}")
        try:
            con.execute(f"COPY FROM DATABASE {catalog} TO {alias}")
        finally:
            con.execute(f"DETACH {alias}")
        os.chmod(target, 0o600)

    def _copy(self, con: duckdb.DuckDBPyConnection) -> Path:
        n = next(self._seq)
        folder = self.base / str(n)
        folder.mkdir(mode=0o700)
        # The file keeps its name, so the catalog is called the same as in the CLI.
        target = folder / self.model.path.name
        try:
            if self._checkpointed(con):
                self.model.copy_to(target)
            else:
                log.info("query snapshot: the WAL could not be folded in; DuckDB copies the data")
                self._copy_database(con, target, n)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return target

    def _refresh(self, old: Snapshot | None) -> Snapshot:
        # With a snapshot at hand, do not wait for a catch-up or rebuild: serve the old one
        # (its `as_of` says how old). Under steady ingest the projector holds the lock most of
        # the time, and every query waiting a second for it cost each SQL client 1-2 s. Only
        # once the snapshot is well past its age does a query wait (a second) for a new one.
        if old is None:
            wait = self.first_wait_s
        elif time.time() - old.as_of < max(3 * self.max_age_s, STALE_AFTER_S):
            wait = 0.0
        else:
            wait = 1.0
        if not self.model.write_lock.acquire(timeout=wait if wait > 0 else -1, blocking=wait > 0):
            if old is not None:
                return old
            raise QueryError("unavailable", "the read model is busy (a rebuild?); retry shortly")
        failure: BaseException | None = None
        try:
            # A cursor of its own: a thread's cursor may still hold the result of its last read.
            con = self.model.cursor().cursor()
            try:
                now = time.time()
                fingerprint = self._fingerprint(con)
                if old is not None and fingerprint == old.fingerprint:
                    old.as_of = now
                    return old
                new = Snapshot(self._copy(con), fingerprint, now)
            finally:
                con.close()
        except (duckdb.Error, OSError) as exc:
            failure = exc
        finally:
            self.model.write_lock.release()
        if failure is not None:
            return self._fallback(old, failure)
        if old is not None:
            old.retired = True
            self._discard(old)
        self._current = new
        return new

    def _fallback(self, old: Snapshot | None, exc: BaseException) -> Snapshot:
        """The previous snapshot when a new one cannot be made (a full disk, a fatal error)."""
        log.warning("query snapshot failed: %s", str(exc).splitlines()[0] if str(exc) else exc)
        if isinstance(exc, duckdb.FatalException):
            self.model.note_fatal(exc)
            self.model.recover()
        if old is not None:
            return old
        raise QueryError(
            "unavailable",
            f"the read model could not be copied for queries ({_reason(exc)}); retry shortly",
        )

    def _discard(self, snap: Snapshot) -> None:
        if snap.retired and snap.users == 0:
            shutil.rmtree(snap.path.parent, ignore_errors=True)

    @contextmanager
    def use(self) -> Iterator[Snapshot]:
        """A snapshot at most `max_age_s` old, kept on disk while in use."""
        with self._lock:
            snap = self._current
            if snap is None or time.time() - snap.as_of >= self.max_age_s:
                snap = self._refresh(snap)
            snap.users += 1
        try:
            yield snap
        finally:
            with self._lock:
                snap.users -= 1
                self._discard(snap)

    def close(self) -> None:
        """Remove every snapshot of this object."""
        with self._lock:
            self._current = None
            shutil.rmtree(self.base, ignore_errors=True)


class QueryService:
    """Runs `POST /v1/query`: a worker of the pool on a fresh enough snapshot."""

    def __init__(self, model: ReadModel, settings: Settings) -> None:
        self.limits = limits_of(settings)
        self.snapshots = Snapshots(
            model, settings.query_snapshot_seconds, first_wait_s=self.limits.timeout_s
        )
        self.pool = WorkerPool(self.limits, settings.query_max_concurrent)
        # A query waits for its turn here, in the event loop, holding no thread; once its turn
        # comes it runs on a thread of its own limiter, never one of the pool other routes use.
        self._turns = anyio.Semaphore(settings.query_max_concurrent)
        self._threads = anyio.CapacityLimiter(settings.query_max_concurrent)

    async def answer(self, sql: str, limit: int) -> bytes:
        """`run` from the event loop: QueryError("busy") when no turn comes within the limit."""
        try:
            with anyio.fail_after(self.limits.timeout_s):
                await self._turns.acquire()
        except TimeoutError:
            raise QueryError(
                "busy", "every query worker is busy (query_max_concurrent); retry shortly"
            ) from None
        try:
            return await anyio.to_thread.run_sync(self.run, sql, limit, limiter=self._threads)
        finally:
            self._turns.release()

    def run(self, sql: str, limit: int) -> bytes:
        """The JSON answer; QueryError when refused, failed, stopped or busy."""
        with self.pool.worker(self.limits.timeout_s) as worker, self.snapshots.use() as snap:
            as_of = format_us(int(snap.as_of) * 1_000_000)
            return worker.run(snap.path, sql, limit, {"as_of": as_of})

    def close(self) -> None:
        """Stop the workers and remove the snapshots."""
        self.pool.close()
        self.snapshots.close()
