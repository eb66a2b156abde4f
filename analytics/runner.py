"""The projection runner: catch up by position, checkpoint in the same transaction."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import duckdb

from analytics.projection import Projection, Settles
from analytics.readmodel import ReadModel
from store.ledger import Ledger, RecordedEvent
from store.timefmt import utc_now

_CHECKPOINTS = """
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    name VARCHAR PRIMARY KEY,
    version INTEGER NOT NULL,
    position BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
)
"""

Progress = Callable[[str, int, int], None]
Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    """Where a projection stands against the ledger."""

    name: str
    version: int
    position: int
    head: int

    @property
    def lag(self) -> int:
        """Ledger positions not yet folded in."""
        return max(0, self.head - self.position)


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
        with model.write_lock:
            con = model.cursor()
            con.execute(_CHECKPOINTS)
            for p in projections:
                row = con.execute(
                    "SELECT version FROM projection_checkpoints WHERE name = ?", [p.name]
                ).fetchone()
                if row is None or row[0] != p.version:
                    self._reset(con, p)

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
            con.commit()
        except BaseException:
            con.rollback()
            raise

    def checkpoint(self, name: str) -> int:
        """A projection's checkpoint: the last ledger position it has folded in."""
        row = (
            self.model.cursor()
            .execute("SELECT position FROM projection_checkpoints WHERE name = ?", [name])
            .fetchone()
        )
        return int(row[0]) if row else 0

    def status(self) -> list[ProjectionStatus]:
        """Every projection's checkpoint against the ledger head."""
        head = self.ledger.head()
        return [
            ProjectionStatus(p.name, p.version, self.checkpoint(p.name), head)
            for p in self.projections.values()
        ]

    def catch_up(
        self,
        names: Sequence[str] | None = None,
        progress: Progress | None = None,
        max_batches: int | None = None,
    ) -> int:
        """Fold in everything recorded so far; returns the number of events applied."""
        applied = 0
        with self.model.write_lock:
            for p in self._select(names):
                applied += self._catch_up_one(p, progress, max_batches)
        return applied

    def _catch_up_one(
        self, p: Projection, progress: Progress | None, max_batches: int | None
    ) -> int:
        con = self.model.cursor()
        applied = 0
        batches = 0
        position = self.checkpoint(p.name)
        # Reading and decoding the next page (SQL, zlib, numpy) overlaps applying this one:
        # both release the GIL for most of their work. One page ahead, never more.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"read-{p.name}") as ahead:
            pending = ahead.submit(self._page, p, position)
            caught_up = False
            while max_batches is None or batches < max_batches:
                head, page = pending.result()
                if position >= head:
                    caught_up = True
                    break
                upto = page[-1].position if page else head
                if len(page) < p.batch_events:
                    upto = max(upto, head)
                if max_batches is None or batches + 1 < max_batches:
                    pending = ahead.submit(self._page, p, upto)
                con.begin()
                try:
                    if page:
                        p.apply(con, page)
                    con.execute(
                        "UPDATE projection_checkpoints SET position = ?, updated_at = now() "
                        "WHERE name = ?",
                        [upto, p.name],
                    )
                    con.commit()
                except BaseException:
                    con.rollback()
                    raise
                position = upto
                applied += len(page)
                batches += 1
                if progress is not None:
                    progress(p.name, upto, head)
        if caught_up and isinstance(p, Settles):
            self._settle(con, p)
        return applied

    def _settle(self, con: duckdb.DuckDBPyConnection, p: Settles) -> None:
        con.begin()
        try:
            p.settle(con, self.clock())
            con.commit()
        except BaseException:
            con.rollback()
            raise

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
        if all(s.position >= position for s in runner.status()):
            return True
        time.sleep(0.05)
    return False
