"""The server's read-only SQL: snapshots of the read model, and the workers that query them.

DuckDB lets a process open a file once, with one configuration, and the server holds the read
model read-write. So queries run on a copy: under the projector's write lock (no catch-up
runs) the read model is checkpointed and copied; a worker opens the copy read-only and locked.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from analytics.query_pool import QueryError, WorkerPool
from analytics.query_sandbox import QueryLimits
from analytics.readmodel import ReadModel
from store.settings import Settings
from store.timefmt import format_us


def limits_of(settings: Settings) -> QueryLimits:
    """The query limits the settings declare."""
    return QueryLimits(
        timeout_s=settings.query_timeout_seconds,
        memory_limit=settings.query_memory_limit,
        max_rows=settings.query_max_rows,
        max_result_bytes=settings.query_max_result_bytes,
    )


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
        # Only the process holding the read model writes here, so leftovers of a crashed
        # server can go.
        self.base = model.path.parent / f".{model.path.name}.query-snapshots"
        shutil.rmtree(self.base, ignore_errors=True)
        self.base.mkdir(parents=True)
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

    def _copy(self, con: duckdb.DuckDBPyConnection) -> Path:
        # Under the write lock nothing commits, so the file and its WAL hold every committed
        # change and no more. CHECKPOINT folds the WAL in; it fails while some cursor keeps an
        # older transaction open across a rebuild, and then the WAL is copied along: the
        # worker's read-only open replays it.
        with contextlib.suppress(duckdb.TransactionException):
            con.execute("CHECKPOINT")
        folder = self.base / str(next(self._seq))
        folder.mkdir()
        # The file keeps its name, so the catalog is called the same as in the CLI.
        target = folder / self.model.path.name
        shutil.copyfile(self.model.path, target)
        wal = self.model.path.with_name(self.model.path.name + ".wal")
        if wal.exists():
            shutil.copyfile(wal, target.with_name(target.name + ".wal"))
        return target

    def _refresh(self, old: Snapshot | None) -> Snapshot:
        # With a snapshot at hand, do not wait long for a catch-up or rebuild: serve the old one.
        wait = 1.0 if old is not None else self.first_wait_s
        if not self.model.write_lock.acquire(timeout=wait):
            if old is not None:
                return old
            raise QueryError("unavailable", "the read model is busy (a rebuild?); retry shortly")
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
            self.model.write_lock.release()
        if old is not None:
            old.retired = True
            self._discard(old)
        self._current = new
        return new

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
        """Remove every snapshot."""
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

    def run(self, sql: str, limit: int) -> bytes:
        """The JSON answer; QueryError when refused, failed, stopped or busy."""
        with self.pool.worker(self.limits.timeout_s) as worker, self.snapshots.use() as snap:
            as_of = format_us(int(snap.as_of) * 1_000_000)
            return worker.run(snap.path, sql, limit, {"as_of": as_of})

    def close(self) -> None:
        """Stop the workers and remove the snapshots."""
        self.pool.close()
        self.snapshots.close()
