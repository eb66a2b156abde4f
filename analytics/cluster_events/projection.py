"""Cluster events: Kubernetes events, node and pod status, and security findings as recorded."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import duckdb
import pyarrow as pa

from store.event_types import EventType
from store.ledger import RecordedEvent
from store.timefmt import rfc3339_us_or_none

# Counts beyond BIGINT are not real counts; clamping keeps one odd event from failing the page
# (a page that fails is retried forever and blocks the projection).
_BIGINT_MAX: Final = 2**63 - 1

_TS = pa.timestamp("us")
_SCHEMAS: Final = {
    "k8s_events": pa.schema(
        [
            ("cluster", pa.string()),
            ("namespace", pa.string()),
            ("kind", pa.string()),
            ("name", pa.string()),
            ("reason", pa.string()),
            ("message", pa.string()),
            ("type", pa.string()),
            ("count", pa.int64()),
            ("first_timestamp", _TS),
            ("last_timestamp", _TS),
            ("event_time", _TS),
            ("component", pa.string()),
            ("host", pa.string()),
            ("event_namespace", pa.string()),
            ("event_name", pa.string()),
            ("event_uid", pa.string()),
            ("api_version", pa.string()),
            ("ts", _TS),
            ("position", pa.int64()),
        ]
    ),
    "node_status": pa.schema(
        [
            ("cluster", pa.string()),
            ("node", pa.string()),
            ("ready", pa.bool_()),
            ("reason", pa.string()),
            ("nodepool", pa.string()),
            ("zone", pa.string()),
            ("instance_type", pa.string()),
            ("cpu_cores", pa.float64()),
            ("memory_bytes", pa.int64()),
            ("pods", pa.int64()),
            ("ts", _TS),
            ("position", pa.int64()),
        ]
    ),
    "pod_status": pa.schema(
        [
            ("cluster", pa.string()),
            ("namespace", pa.string()),
            ("pod", pa.string()),
            ("phase", pa.string()),
            ("reason", pa.string()),
            ("restarts", pa.int64()),
            ("node", pa.string()),
            ("owner", pa.string()),
            ("ts", _TS),
            ("position", pa.int64()),
        ]
    ),
    "findings": pa.schema(
        [
            ("provider", pa.string()),
            ("finding_id", pa.string()),
            ("title", pa.string()),
            ("finding_type", pa.string()),
            ("severity", pa.string()),
            ("resource", pa.string()),
            ("namespace", pa.string()),
            ("status", pa.string()),
            ("first_seen", _TS),
            ("last_seen", _TS),
            ("cluster", pa.string()),
            ("ts", _TS),
            ("position", pa.int64()),
        ]
    ),
}
_SQL_TYPES: Final = {
    pa.string(): "VARCHAR",
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN",
    _TS: "TIMESTAMP",
}
TABLES: Final = tuple(_SCHEMAS)


def _ddl(table: str) -> str:
    cols = ", ".join(f"{f.name} {_SQL_TYPES[f.type]}" for f in _SCHEMAS[table])
    return f"CREATE TABLE IF NOT EXISTS {table} ({cols})"


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return max(-_BIGINT_MAX, min(value, _BIGINT_MAX))


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def k8s_event_row(ev: RecordedEvent, d: Mapping[str, Any]) -> tuple[Any, ...]:
    """One k8s_events row from a core/v1 or an events.k8s.io/v1 Event object."""
    # core/v1 names the object involvedObject; events.k8s.io/v1 calls it regarding.
    ref = _obj(d.get("involvedObject")) or _obj(d.get("regarding"))
    meta, series, source = _obj(d.get("metadata")), _obj(d.get("series")), _obj(d.get("source"))
    # An event without a positive count happened once (events.k8s.io/v1: no series).
    counts = (_int(series.get("count")), _int(d.get("count")), _int(d.get("deprecatedCount")))
    count = next((c for c in counts if c is not None and c > 0), 1)
    first = _first(
        rfc3339_us_or_none(d.get("firstTimestamp")),
        rfc3339_us_or_none(d.get("deprecatedFirstTimestamp")),
    )
    last = _first(
        rfc3339_us_or_none(series.get("lastObservedTime")),
        rfc3339_us_or_none(d.get("lastTimestamp")),
        rfc3339_us_or_none(d.get("deprecatedLastTimestamp")),
    )
    return (
        ev.cluster,
        _str(ref.get("namespace")),
        _str(ref.get("kind")),
        _str(ref.get("name")),
        _str(d.get("reason")),
        _first(_str(d.get("message")), _str(d.get("note"))),
        _str(d.get("type")),
        count,
        first,
        last,
        rfc3339_us_or_none(d.get("eventTime")),
        _first(
            _str(source.get("component")),
            _str(d.get("reportingController")),
            _str(d.get("reportingComponent")) or None,
        ),
        _first(_str(source.get("host")), _str(d.get("reportingInstance")) or None),
        _str(meta.get("namespace")),
        _str(meta.get("name")),
        _str(meta.get("uid")),
        _str(d.get("apiVersion")),
        ev.time_us,
        ev.position,
    )


def node_status_row(ev: RecordedEvent, d: Mapping[str, Any]) -> tuple[Any, ...]:
    """One node_status row."""
    alloc = _obj(d.get("allocatable"))
    cpu = alloc.get("cpu_cores")
    return (
        ev.cluster,
        _str(d.get("node")),
        d.get("ready") if isinstance(d.get("ready"), bool) else None,
        _str(d.get("reason")),
        _str(d.get("nodepool")),
        _str(d.get("zone")),
        _str(d.get("instance_type")),
        float(cpu) if isinstance(cpu, int | float) and not isinstance(cpu, bool) else None,
        _int(alloc.get("memory_bytes")),
        _int(alloc.get("pods")),
        ev.time_us,
        ev.position,
    )


def pod_status_row(ev: RecordedEvent, d: Mapping[str, Any]) -> tuple[Any, ...]:
    """One pod_status row."""
    return (
        ev.cluster,
        _str(d.get("namespace")),
        _str(d.get("pod")),
        _str(d.get("phase")),
        _str(d.get("reason")),
        _int(d.get("restarts")),
        _str(d.get("node")),
        _str(d.get("owner")),
        ev.time_us,
        ev.position,
    )


def finding_row(ev: RecordedEvent, d: Mapping[str, Any]) -> tuple[Any, ...]:
    """One findings row; `cluster` is the event's attribute (findings need not name one)."""
    return (
        _str(d.get("provider")),
        _str(d.get("finding_id")),
        _str(d.get("title")),
        _str(d.get("finding_type")),
        _str(d.get("severity")),
        _str(d.get("resource")),
        _str(d.get("namespace")),
        _str(d.get("status")),
        rfc3339_us_or_none(d.get("first_seen")),
        rfc3339_us_or_none(d.get("last_seen")),
        ev.cluster,
        ev.time_us,
        ev.position,
    )


_ROWS: Final[
    dict[str, tuple[str, Callable[[RecordedEvent, Mapping[str, Any]], tuple[Any, ...]]]]
] = {
    EventType.K8S_EVENT: ("k8s_events", k8s_event_row),
    EventType.K8S_NODE_STATUS: ("node_status", node_status_row),
    EventType.K8S_POD_STATUS: ("pod_status", pod_status_row),
    EventType.FINDING: ("findings", finding_row),
}


class ClusterEventsProjection:
    """One row per recorded event; transitions are judged at query time, in time order."""

    name = "cluster_events"
    version = 1
    types: tuple[str, ...] = tuple(_ROWS)
    batch_events = 500

    def create(self, con: duckdb.DuckDBPyConnection) -> None:
        """Create the four tables."""
        for table in TABLES:
            con.execute(_ddl(table))

    def drop(self, con: duckdb.DuckDBPyConnection) -> None:
        """Drop the four tables."""
        for table in TABLES:
            con.execute(f"DROP TABLE IF EXISTS {table}")

    def apply(self, con: duckdb.DuckDBPyConnection, events: Sequence[RecordedEvent]) -> None:
        """Append a row per event of the page to its type's table."""
        rows: dict[str, list[tuple[Any, ...]]] = {t: [] for t in TABLES}
        for ev in events:
            target = _ROWS.get(ev.type)
            if target is None or ev.data is None:
                continue
            rows[target[0]].append(target[1](ev, ev.data))
        for table, batch in rows.items():
            if not batch:
                continue
            schema = _SCHEMAS[table]
            columns = list(zip(*batch, strict=True))
            arrow = pa.table(
                [pa.array(col, f.type) for col, f in zip(columns, schema, strict=True)],
                schema=schema,
            )
            view = f"_{table}_page"
            names = ", ".join(schema.names)
            con.register(view, arrow)
            try:
                con.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {view}")
            finally:
                con.unregister(view)
