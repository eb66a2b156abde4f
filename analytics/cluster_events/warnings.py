"""Kubernetes Warning events counted per UTC day, cluster, namespace and reason."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import date

import duckdb
import pyarrow as pa

from analytics.cluster_events.projection import k8s_event_row
from store.event_types import EventType
from store.ledger import RecordedEvent
from store.timefmt import us_to_naive

TABLE = "k8s_warnings_daily"
_KEY = ("day", "cluster", "namespace", "reason")
_SCHEMA = pa.schema(
    [
        ("day", pa.date32()),
        ("cluster", pa.string()),
        ("namespace", pa.string()),
        ("reason", pa.string()),
        ("warnings", pa.int64()),
    ]
)
# The row fields k8s_events keeps, so that this table is that table's Warning rows counted.
_NAMESPACE, _REASON, _TYPE = 1, 4, 6


class WarningCountsProjection:
    """One row per day and (cluster, namespace, reason): the Warning event observations of it."""

    name = "k8s_warnings"
    version = 1
    types: tuple[str, ...] = (EventType.K8S_EVENT,)
    batch_events = 2000

    def create(self, con: duckdb.DuckDBPyConnection) -> None:
        """Create the table."""
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (day DATE NOT NULL, cluster VARCHAR, "
            "namespace VARCHAR, reason VARCHAR, warnings BIGINT NOT NULL)"
        )

    def drop(self, con: duckdb.DuckDBPyConnection) -> None:
        """Drop the table."""
        con.execute(f"DROP TABLE IF EXISTS {TABLE}")

    def apply(self, con: duckdb.DuckDBPyConnection, events: Sequence[RecordedEvent]) -> None:
        """Add the page's Warning observations to their days' counts."""
        counts: Counter[tuple[date, str | None, str | None, str | None]] = Counter()
        for ev in events:
            if ev.data is None:
                continue
            row = k8s_event_row(ev, ev.data)
            if row[_TYPE] == "Warning":
                counts[
                    (us_to_naive(ev.time_us).date(), ev.cluster, row[_NAMESPACE], row[_REASON])
                ] += 1
        if not counts:
            return
        keys = list(zip(*counts, strict=True))
        page = pa.table(
            [
                pa.array(col, f.type)
                for col, f in zip([*keys, list(counts.values())], _SCHEMA, strict=True)
            ],
            schema=_SCHEMA,
        )
        # NULL namespaces (cluster-scoped objects) and reasons are keys too: match them as equal.
        same = " AND ".join(f"t.{k} IS NOT DISTINCT FROM p.{k}" for k in _KEY)
        con.register("_warnings_page", page)
        try:
            con.execute(
                f"UPDATE {TABLE} t SET warnings = t.warnings + p.warnings "
                f"FROM _warnings_page p WHERE {same}"
            )
            con.execute(
                f"INSERT INTO {TABLE} SELECT p.* FROM _warnings_page p "
                f"WHERE NOT EXISTS (SELECT 1 FROM {TABLE} t WHERE {same})"
            )
        finally:
            con.unregister("_warnings_page")
