"""The projection runner: catch up by position, checkpoint in the same transaction."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import duckdb
from sqlalchemy.exc import SQLAlchemyError

from analytics.readmodel.model import ReadModel
from analytics.readmodel.projection import Projection, Settles
from store.errors import error_chain
from store.ledger import Ledger, RecordedEvent
from store.timefmt import MAX_US, MIN_US, NAIVE_EPOCH, RANGE_TEXT, format_us, naive_iso, utc_now

log = logging.getLogger("opsledger.projections")

_CHECKPOINTS = """
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    name VARCHAR PRIMARY KEY,
    version INTEGER NOT NULL,
    position BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
)
"""
# The events a projection skipped because it could not apply them, written in the transaction
# whose checkpoint moves past each one; a reset of the projection clears its rows.
_POISONED = """
CREATE TABLE IF NOT EXISTS projection_poisoned (
    name VARCHAR NOT NULL,
    position BIGINT NOT NULL,
    event_type VARCHAR NOT NULL,
    event_id VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    error_type VARCHAR NOT NULL,
    error VARCHAR NOT NULL,
    poisoned_at TIMESTAMP NOT NULL,
    PRIMARY KEY (name, position)
)
"""
# Each projection's last catch-up that failed for a reason no event is to blame for, until
# one succeeds: kept in the read model so a CLI run and the digest see the server's.
_ERRORS = """
CREATE TABLE IF NOT EXISTS projection_errors (
    name VARCHAR PRIMARY KEY,
    stage VARCHAR NOT NULL,
    position BIGINT NOT NULL,
    error_type VARCHAR NOT NULL,
    error VARCHAR NOT NULL,
    failed_at TIMESTAMP NOT NULL
)
"""
#: Poisoned events a status lists per projection (newest first); `poisoned` counts them all.
POISONED_SHOWN: Final = 10
#: Longest error message kept (its first line).
ERROR_MAX_CHARS: Final = 500

Progress = Callable[[str, int, int], None]
Clock = Callable[[], datetime]
Stage = Literal["read", "apply", "settle"]

# Failures that say nothing about the event being applied: the machine (files, disk, memory,
# network), the read model's own state, or the SQL a projection runs. Skipping an event for
# one of these would lose it for a fault that a later catch-up may not meet again.
_NOT_THE_EVENT: Final = (
    OSError,
    MemoryError,
    SQLAlchemyError,
    duckdb.IOException,
    duckdb.FatalException,
    duckdb.InternalException,
    duckdb.OutOfMemoryException,
    duckdb.InterruptException,
    duckdb.TransactionException,
    duckdb.ConnectionException,
    duckdb.PermissionException,
    duckdb.CatalogException,
    duckdb.BinderException,
    duckdb.ParserException,
)
_NO_SPACE: Final = tuple(os.strerror(n) for n in (errno.ENOSPC, errno.EDQUOT))


class EventOutOfRange(ValueError):
    """An event with an instant outside the contract's range, recorded before it was bounded."""


def blames_the_event(exc: BaseException) -> bool:
    """Whether a failed apply may be the event's fault (else it is retried, never skipped)."""
    for e in error_chain(exc):
        if not isinstance(e, Exception) or isinstance(e, _NOT_THE_EVENT):
            return False
        if isinstance(e, duckdb.Error) and any(s in str(e) for s in _NO_SPACE):
            return False
    return True


def first_line(exc: BaseException) -> str:
    """An error's first line, bounded: what statuses show of it."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line[:ERROR_MAX_CHARS]


def _instant(us: int) -> str:
    try:
        return format_us(us)
    except (OverflowError, ValueError):  # beyond datetime's years 1 to 9999
        return f"{us} µs from the epoch"


def outside_contract(ev: RecordedEvent) -> EventOutOfRange | None:
    """Why an event's time or a sample's ts is outside the contract's range, or None."""
    # Projections add months and horizons to these instants and rely on the contract's bound
    # (store/timefmt.py); an older ledger may hold events from before it.
    if not MIN_US <= ev.time_us <= MAX_US:
        return EventOutOfRange(f"time {_instant(ev.time_us)} is outside {RANGE_TEXT}")
    s = ev.samples
    if s is not None and len(s.ts_us):
        lo, hi = int(s.ts_us.min()), int(s.ts_us.max())
        if lo < MIN_US or hi > MAX_US:
            bad = lo if lo < MIN_US else hi
            return EventOutOfRange(f"a sample ts {_instant(bad)} is outside {RANGE_TEXT}")
    return None


def _as_dict(record: PoisonedEvent | ProjectionError) -> dict[str, Any]:
    """A status record's fields, its time in RFC 3339."""
    out = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    out["at"] = naive_iso(record.at)
    return out


@dataclass(frozen=True, slots=True)
class PoisonedEvent:
    """An event a projection could not apply: skipped, with the error it raised."""

    position: int
    type: str
    id: str
    source: str
    error_type: str
    error: str
    at: datetime

    def as_dict(self) -> dict[str, Any]:
        """As `GET /v1/projections` gives it."""
        return _as_dict(self)


@dataclass(frozen=True, slots=True)
class ProjectionError:
    """A projection's last failed catch-up that no event was to blame for."""

    stage: Stage
    position: int
    error_type: str
    error: str
    at: datetime

    def as_dict(self) -> dict[str, Any]:
        """As `GET /v1/projections` gives it."""
        return _as_dict(self)


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    """Where a projection stands against the ledger."""

    name: str
    version: int
    position: int
    head: int
    poisoned: int = 0
    poisoned_events: tuple[PoisonedEvent, ...] = ()
    last_error: ProjectionError | None = None

    @property
    def lag(self) -> int:
        """Ledger positions not yet folded in."""
        return max(0, self.head - self.position)

    def as_dict(self) -> dict[str, Any]:
        """As `GET /v1/projections` gives it (and the CLI prints it)."""
        return {
            "name": self.name,
            "version": self.version,
            "position": self.position,
            "head": self.head,
            "lag": self.lag,
            "poisoned": self.poisoned,
            "poisoned_events": [e.as_dict() for e in self.poisoned_events],
            "last_error": None if self.last_error is None else self.last_error.as_dict(),
        }


def poisoned_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Events skipped as poisoned, per projection."""
    rows = con.execute("SELECT name, count(*) FROM projection_poisoned GROUP BY name").fetchall()
    return {str(n): int(c) for n, c in rows}


def poisoned_events(
    con: duckdb.DuckDBPyConnection,
    per_projection: int | None = None,
    since: datetime | None = None,
) -> dict[str, list[PoisonedEvent]]:
    """Each projection's poisoned events, newest position first: the latest few if limited,
    those skipped at or after `since` (naive UTC) if given."""
    limit = "" if per_projection is None else f"QUALIFY row_number() OVER w <= {per_projection:d}"
    rows = con.execute(
        "SELECT name, position, event_type, event_id, source, error_type, error, poisoned_at "
        "FROM projection_poisoned WHERE poisoned_at >= ? "
        f"WINDOW w AS (PARTITION BY name ORDER BY position DESC) {limit} "
        "ORDER BY name, position DESC",
        [since or NAIVE_EPOCH],
    ).fetchall()
    out: dict[str, list[PoisonedEvent]] = {}
    for name, *fields in rows:
        out.setdefault(str(name), []).append(PoisonedEvent(*fields))
    return out


def last_errors(con: duckdb.DuckDBPyConnection) -> dict[str, ProjectionError]:
    """Each failing projection's last error, as recorded in the read model."""
    rows = con.execute(
        "SELECT name, stage, position, error_type, error, failed_at FROM projection_errors"
    ).fetchall()
    return {str(name): ProjectionError(*fields) for name, *fields in rows}


class Runner:
    """Folds ledger events into the read model, each projection at its own checkpoint."""

    def __init__(
        self,
        ledger: Ledger,
        model: ReadModel,
        projections: Sequence[Projection],
        clock: Clock = utc_now,
    ) -> None:
        self.ledger = ledger
        self.model = model
        self.clock = clock
        self.projections = {p.name: p for p in projections}
        # In memory as well: a failure that could not be written (a full disk) still shows.
        self._errors: dict[str, ProjectionError] = {}
        with model.write_lock:
            con = model.cursor()
            for ddl in (_CHECKPOINTS, _POISONED, _ERRORS):
                con.execute(ddl)
            for p in projections:
                row = con.execute(
                    "SELECT version FROM projection_checkpoints WHERE name = ?", [p.name]
                ).fetchone()
                if row is None or row[0] != p.version:
                    self._reset(con, p)
            self._errors.update(
                (n, e) for n, e in last_errors(con).items() if n in self.projections
            )

    def _select(self, names: Sequence[str] | None) -> list[Projection]:
        if not names:
            return list(self.projections.values())
        unknown = [n for n in names if n not in self.projections]
        if unknown:
            raise KeyError(
                f"unknown projection {unknown[0]!r}; known: {', '.join(self.projections)}"
            )
        return [self.projections[n] for n in names]

    def _reset(self, con: duckdb.DuckDBPyConnection, p: Projection) -> None:
        con.begin()
        try:
            p.drop(con)
            p.create(con)
            con.execute(
                "INSERT OR REPLACE INTO projection_checkpoints VALUES (?, ?, 0, now())",
                [p.name, p.version],
            )
            # Replayed from the start, the projection finds its poisoned events again.
            con.execute("DELETE FROM projection_poisoned WHERE name = ?", [p.name])
            con.execute("DELETE FROM projection_errors WHERE name = ?", [p.name])
            con.commit()
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.rollback()
            raise
        self._errors.pop(p.name, None)

    def checkpoint(self, name: str) -> int:
        """A projection's checkpoint: the last ledger position it has folded in."""
        row = (
            self.model.cursor()
            .execute("SELECT position FROM projection_checkpoints WHERE name = ?", [name])
            .fetchone()
        )
        return int(row[0]) if row else 0

    def status(self) -> list[ProjectionStatus]:
        """Every projection's checkpoint against the ledger head, and what it skipped."""
        head = self.ledger.head()
        con = self.model.cursor()
        positions = dict(
            con.execute("SELECT name, position FROM projection_checkpoints").fetchall()
        )
        counts = poisoned_counts(con)
        latest = poisoned_events(con, POISONED_SHOWN)
        return [
            ProjectionStatus(
                p.name,
                p.version,
                int(positions.get(p.name, 0)),
                head,
                counts.get(p.name, 0),
                tuple(latest.get(p.name, ())),
                self._errors.get(p.name),
            )
            for p in self.projections.values()
        ]

    def catch_up(
        self,
        names: Sequence[str] | None = None,
        progress: Progress | None = None,
        max_batches: int | None = None,
    ) -> int:
        """Fold in everything recorded so far; returns the number of events applied.

        A projection that fails does not stop the others; the first failure is raised once
        every projection has had its turn (each one's is in its status's `last_error`).
        """
        applied = 0
        failures: list[Exception] = []
        with self.model.write_lock:
            for p in self._select(names):
                try:
                    applied += self._catch_up_one(p, progress, max_batches)
                except Exception as exc:
                    failures.append(exc)
        if failures:
            raise failures[0]
        return applied

    def _catch_up_one(
        self, p: Projection, progress: Progress | None, max_batches: int | None
    ) -> int:
        applied = 0
        batches = 0
        position = 0
        caught_up = False
        stage: Stage = "read"
        try:
            con = self.model.cursor()
            position = self.checkpoint(p.name)
            # Reading and decoding the next page (SQL, zlib, numpy) overlaps applying this
            # one: both release the GIL for most of their work. One page ahead, never more.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"read-{p.name}") as ahead:
                pending = ahead.submit(self._page, p, position)
                while max_batches is None or batches < max_batches:
                    stage = "read"
                    head, page = pending.result()
                    if position >= head:
                        caught_up = True
                        break
                    upto = page[-1].position if page else head
                    if len(page) < p.batch_events:
                        upto = max(upto, head)
                    if max_batches is None or batches + 1 < max_batches:
                        pending = ahead.submit(self._page, p, upto)
                    stage = "apply"
                    applied += self._fold(con, p, page, upto)
                    position = upto
                    batches += 1
                    if progress is not None:
                        progress(p.name, upto, head)
            if caught_up and isinstance(p, Settles):
                stage = "settle"
                self._settle(con, p)
        except Exception as exc:
            self._failed(p, stage, position, exc)
            raise
        if caught_up:
            self._recovered(con, p)
        return applied

    def _fold(
        self, con: duckdb.DuckDBPyConnection, p: Projection, page: list[RecordedEvent], upto: int
    ) -> int:
        """Apply a page and move the checkpoint to `upto`, skipping the events at fault."""
        screened: dict[int, Exception] = {}
        for ev in page:
            if (why := outside_contract(ev)) is not None:
                screened[ev.position] = why
        try:
            return self._commit(con, p, page, upto, screened)
        except Exception as exc:
            if not page or not blames_the_event(exc):
                raise
            log.warning(
                "projection %s: a page of %d events up to position %d failed (%s: %s); "
                "looking for the events at fault",
                p.name,
                len(page),
                upto,
                type(exc).__name__,
                first_line(exc),
            )
            return self._bisect(con, p, page, upto, screened)

    def _bisect(
        self,
        con: duckdb.DuckDBPyConnection,
        p: Projection,
        events: Sequence[RecordedEvent],
        upto: int,
        poisoned: Mapping[int, Exception],
    ) -> int:
        """Apply halves of events that failed together, each with its checkpoint, in order."""
        if len(events) == 1:
            # Its second try alone: only an event that fails again is skipped.
            try:
                return self._commit(con, p, events, upto, poisoned)
            except Exception as exc:
                if not blames_the_event(exc):
                    raise
                return self._commit(con, p, events, upto, {**poisoned, events[0].position: exc})
        mid = len(events) // 2
        applied = 0
        for part, to in ((events[:mid], events[mid - 1].position), (events[mid:], upto)):
            try:
                applied += self._commit(con, p, part, to, poisoned)
            except Exception as exc:
                if not blames_the_event(exc):
                    raise
                applied += self._bisect(con, p, part, to, poisoned)
        return applied

    def _commit(
        self,
        con: duckdb.DuckDBPyConnection,
        p: Projection,
        events: Sequence[RecordedEvent],
        upto: int,
        poisoned: Mapping[int, Exception],
    ) -> int:
        """In one transaction: apply the events not poisoned, record those that are, move the
        checkpoint to `upto`; returns the number applied."""
        good = [ev for ev in events if ev.position not in poisoned]
        bad = [(ev, e) for ev in events if (e := poisoned.get(ev.position)) is not None]
        now = self.clock() if bad else None
        rows = [
            (p.name, ev.position, ev.type, ev.id, ev.source, type(e).__name__, first_line(e), now)
            for ev, e in bad
        ]
        con.begin()
        try:
            if good:
                p.apply(con, good)
            if rows:
                con.executemany(
                    "INSERT INTO projection_poisoned VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows
                )
            con.execute(
                "UPDATE projection_checkpoints SET position = ?, updated_at = now() WHERE name = ?",
                [upto, p.name],
            )
            con.commit()
        except BaseException:
            # A failed commit has ended the transaction already: its error is the one to keep.
            with contextlib.suppress(duckdb.Error):
                con.rollback()
            raise
        for _, position, event_type, event_id, _, error_type, error, _ in rows:
            log.warning(
                "projection %s: skipped event %d (%s %s) it cannot apply: %s: %s",
                p.name,
                position,
                event_type,
                event_id,
                error_type,
                error,
            )
        return len(good)

    def _settle(self, con: duckdb.DuckDBPyConnection, p: Settles) -> None:
        con.begin()
        try:
            p.settle(con, self.clock())
            con.commit()
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.rollback()
            raise

    def _failed(self, p: Projection, stage: Stage, position: int, exc: Exception) -> None:
        """Log and record a failure no event is to blame for; the next catch-up retries."""
        log.error(
            "projection %s: %s failed at position %d; the other projections go on, this one "
            "retries at the next catch-up",
            p.name,
            stage,
            position,
            exc_info=exc,
        )
        error = ProjectionError(stage, position, type(exc).__name__, first_line(exc), self.clock())
        self._errors[p.name] = error
        con = None
        try:
            con = self.model.cursor()
            con.begin()
            con.execute("DELETE FROM projection_errors WHERE name = ?", [p.name])
            con.execute(
                "INSERT INTO projection_errors VALUES (?, ?, ?, ?, ?, ?)",
                [p.name, stage, position, error.error_type, error.error, error.at],
            )
            con.commit()
        except Exception as again:
            # The read model may be what failed (a full disk): the status still has it.
            if con is not None:
                with contextlib.suppress(duckdb.Error):
                    con.rollback()
            log.warning("projection %s: could not record its error: %s", p.name, again)

    def _recovered(self, con: duckdb.DuckDBPyConnection, p: Projection) -> None:
        """Forget a projection's last error once a catch-up of it went through."""
        if p.name not in self._errors:
            return
        try:
            con.execute("DELETE FROM projection_errors WHERE name = ?", [p.name])
        except Exception as exc:
            # Kept in memory, so the next catch-up that goes through tries again.
            log.warning("projection %s: could not clear its last error: %s", p.name, exc)
            return
        del self._errors[p.name]

    def _page(self, p: Projection, position: int) -> tuple[int, list[RecordedEvent]]:
        """The ledger head, then the projection's next page after `position`."""
        # Read the head first: positions are committed in order, so every event up to it is
        # visible to the read below and the checkpoint may skip to it when none match.
        head = self.ledger.head()
        if position >= head:
            return head, []
        return head, self.ledger.read(position, p.batch_events, types=p.types)

    def rebuild(self, names: Sequence[str] | None = None, progress: Progress | None = None) -> int:
        """Drop and replay projections from the start of the ledger."""
        with self.model.write_lock:
            selected = self._select(names)
            for p in selected:
                self._reset(self.model.cursor(), p)
            return self.catch_up([p.name for p in selected], progress)


def wait_for(runner: Runner, position: int, timeout_s: float = 10.0) -> bool:
    """Block until every projection has folded in `position` (tests, read-your-writes)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(runner.checkpoint(name) >= position for name in runner.projections):
            return True
        time.sleep(0.05)
    return False
