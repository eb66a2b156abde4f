"""What a projection is: the event types it handles and the DuckDB tables it keeps."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

import duckdb

from store.ledger import RecordedEvent


class Projection(Protocol):
    """A pure function of the events it handles, applied in position order."""

    name: str
    #: Bump when the tables or the logic change: the runner then rebuilds from the start.
    version: int
    types: tuple[str, ...]
    #: Events per transaction; sample batches are large, so they go in fewer at a time.
    batch_events: int

    def create(self, con: duckdb.DuckDBPyConnection) -> None:
        """Create the tables if they do not exist."""

    def drop(self, con: duckdb.DuckDBPyConnection) -> None:
        """Drop the tables."""

    # The runner splits a page that raises to skip the events at fault
    # (analytics/readmodel/runner.py): a page folded whole or in parts, in order, must give
    # the same tables, and a raise must leave nothing behind outside the transaction (no cache
    # of what was rolled back).
    def apply(self, con: duckdb.DuckDBPyConnection, events: Sequence[RecordedEvent]) -> None:
        """Fold events into the tables, inside the caller's transaction."""


@runtime_checkable
class Settles(Protocol):
    """A projection with derived state to bring up to date once it has caught up."""

    def settle(self, con: duckdb.DuckDBPyConnection, now: datetime) -> None:
        """Update what depends on the clock or on many pages at once (`now`: naive UTC)."""
