"""Export rows: each dataset's record batches, from the read model or the ledger, as declared."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Select, case, func, select

from analytics.incidents.metrics import breaches, metrics
from analytics.outputs.datasets import DATASETS, Dataset
from analytics.outputs.export_decisions import decision_rows, rightsizing_rows, showback_rows
from analytics.storage.projection import forecasts
from store.ledger import Ledger, RecordedEvent
from store.schema import DATA_JSON, events, series
from store.timefmt import naive_to_us

#: Rows per record batch (and so per Parquet row group); tests lower it.
BATCH_ROWS = 65_536
#: Ledger events read per page at most, and the JSON bytes after which an events batch is cut.
_LEDGER_PAGE: Final = 1000
_EVENTS_BATCH_BYTES: Final = 8 * 1024 * 1024
#: What one page of the ledger may decode: JSON text bytes, a sample counting as
#: _SAMPLE_TEXT_BYTES (a month of demo samples is one page of 1000 events otherwise).
_PAGE_TEXT_BYTES: Final = 8 * 1024 * 1024
#: A sample's JSON text besides its series name and labels (`{"name":…,"ts":…,"value":…}`),
#: measured on the demo's 6.9 M samples (docs/bi.md).
_SAMPLE_FIXED_BYTES: Final = 53
_SAMPLE_TEXT_BYTES: Final = 160
#: Per row of the `events` dataset besides its strings and `data`, by format, and what the
#: format makes of `data`'s JSON text: quotes escaped in CSV and JSON Lines (+12 % on the
#: demo), as is in Arrow, about a tenth with Parquet's Snappy (the demo's samples compress 10×).
_ROW_BYTES: Final = {"jsonl": 200, "csv": 80, "arrow": 64, "parquet": 8}
_DATA_FACTOR: Final = {"jsonl": 1.12, "csv": 1.12, "arrow": 1.0, "parquet": 0.1}
# Unbounded windows still need bounds for the functions the API shares.
_MIN: Final = datetime(1970, 1, 1)
_MAX: Final = datetime(9999, 12, 31, 23, 59, 59)


@dataclass(frozen=True, slots=True)
class ExportQuery:
    """What to export: the time window [start, end) (naive UTC; None: open), cluster, types."""

    start: datetime | None = None
    end: datetime | None = None
    cluster: str | None = None
    #: Event types (the `events` dataset only).
    types: tuple[str, ...] | None = None
    #: When forecasts and breaches are judged (naive UTC).
    as_of: datetime = field(default_factory=lambda: datetime.now(UTC).replace(tzinfo=None))


@dataclass(frozen=True, slots=True)
class EventsSize:
    """The `events` rows an export covers, measured by aggregates alone (nothing decoded)."""

    rows: int
    #: Stored JSON `data` bytes (JSON events are stored as the text they export).
    json_bytes: int
    #: Metric samples in sample batches, and a sample's mean series name and labels length.
    samples: int
    series_key_bytes: float
    #: The text columns' characters (source, id, type, cluster, subject, stream).
    text_bytes: int

    def estimate(self, fmt: str) -> int:
        """About how many bytes the export takes in `fmt` (within 1 % on the demo: docs/bi.md)."""
        data = self.json_bytes + self.samples * (_SAMPLE_FIXED_BYTES + self.series_key_bytes)
        return int(self.rows * _ROW_BYTES[fmt] + self.text_bytes + data * _DATA_FACTOR[fmt])


@dataclass
class Rows:
    """An export in progress: its row count, known up front, and its batches, read lazily."""

    dataset: Dataset
    count: int
    batches: Iterator[pa.RecordBatch]
    _close: Callable[[], None] = lambda: None
    #: The `events` dataset's size, known before a row is read (None for the read model).
    size: EventsSize | None = None

    def close(self) -> None:
        """Release the read (DuckDB cursor and transaction); idempotent."""
        close, self._close = self._close, lambda: None
        close()


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """A batch cast to the dataset's schema; NaN and ±inf become null (JSON cannot say them)."""
    arrays = []
    for f in schema:
        arr = batch.column(f.name)
        if arr.type != f.type:
            arr = arr.cast(f.type)
        if pa.types.is_floating(f.type) and arr.null_count < len(arr):
            arr = pc.if_else(pc.is_finite(arr), arr, pa.scalar(None, f.type))
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _batches_of(rows: list[dict[str, Any]], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    table = pa.Table.from_pylist(rows, schema=schema)
    for batch in table.to_batches(BATCH_ROWS):
        yield conform(batch, schema)


def _where(
    time_expr: str, q: ExportQuery, cluster_col: str | None = "cluster"
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if q.start is not None:
        clauses.append(f"{time_expr} >= ?")
        params.append(q.start)
    if q.end is not None:
        clauses.append(f"{time_expr} < ?")
        params.append(q.end)
    if q.cluster is not None and cluster_col is not None:
        clauses.append(f"{cluster_col} = ?")
        params.append(q.cluster)
    return (" AND ".join(clauses) or "TRUE"), params


# -- read-model datasets read by SQL --------------------------------------------------------

_CAPACITY: Final = """
SELECT t AS bucket_start, cluster, scope, resource,
    CASE resource WHEN 'cpu' THEN 'cores' WHEN 'memory' THEN 'bytes' ELSE resource END AS unit,
    nodepool, node, namespace, usage_avg, usage_p95, usage_max, requests_avg, allocatable_avg,
    utilization_avg, utilization_p95, commitment_avg, points
FROM cap_rollup WHERE step = '{step}' AND {where}
ORDER BY t, cluster, scope, resource, nodepool NULLS FIRST, node NULLS FIRST,
    namespace NULLS FIRST
"""
_INCIDENTS: Final = "SELECT {cols} FROM incidents WHERE {where} ORDER BY opened_at, incident_id"
_FINDINGS: Final = """
SELECT ts AS event_time, provider, finding_id, title, finding_type, severity, status, resource,
    namespace, cluster, first_seen, last_seen, position
FROM findings WHERE {where} ORDER BY ts, position
"""
# The amount recorded last per (day, service), as analytics.cost.projection.DAILY has it.
_COST: Final = """
SELECT * FROM (
    SELECT day, service, arg_max(amount, position) AS amount,
        arg_max(currency, position) AS currency, arg_max(cluster, position) AS cluster,
        max(position) AS position
    FROM cost_daily GROUP BY day, service)
WHERE {where} ORDER BY day, service
"""


def _sql(ds: Dataset, q: ExportQuery) -> tuple[str, list[Any]]:
    if ds.name in ("capacity_hourly", "capacity_daily"):
        where, params = _where("t", q)
        step = "1h" if ds.name == "capacity_hourly" else "1d"
        return _CAPACITY.format(step=step, where=where), params
    if ds.name == "incidents":
        where, params = _where("opened_at", q)
        cols = ", ".join(c.name for c in ds.columns)
        return _INCIDENTS.format(cols=cols, where=where), params
    if ds.name == "findings":
        where, params = _where("ts", q)
        return _FINDINGS.format(where=where), params
    if ds.name == "cost_daily":
        where, params = _where("CAST(day AS TIMESTAMP)", q)
        return _COST.format(where=where), params
    raise KeyError(ds.name)


def _storage_forecast(con: duckdb.DuckDBPyConnection, q: ExportQuery) -> list[dict[str, Any]]:
    as_of = q.as_of
    out = []
    for item in forecasts(con, as_of, cluster=q.cluster):
        row = dict(item)
        row["as_of"] = as_of.replace(tzinfo=UTC)
        for k in ("eta_90", "eta_90_low", "eta_90_high"):
            row[k] = None if row[k] is None else datetime.fromisoformat(row[k])
        out.append(row)
    return out


def _incidents_of(con: duckdb.DuckDBPyConnection, q: ExportQuery) -> dict[str, tuple[Any, ...]]:
    where, params = _where("opened_at", q)
    rows = con.execute(
        "SELECT incident_id, severity_max, cluster, namespace, service, opened_at "
        f"FROM incidents WHERE {where}",
        params,
    ).fetchall()
    return {r[0]: r[1:] for r in rows}


def _sla_breaches(con: duckdb.DuckDBPyConnection, q: ExportQuery) -> list[dict[str, Any]]:
    found = breaches(con, q.start or _MIN, q.end or _MAX, q.as_of)
    incidents = _incidents_of(con, q)
    as_of = q.as_of.replace(tzinfo=UTC)
    out = []
    for b in found["items"]:
        inc = incidents.get(b["incident_id"])
        if inc is None:  # another cluster's
            continue
        severity_max, cluster, namespace, service, opened_at = inc
        out.append(
            {
                "incident_id": b["incident_id"],
                "kind": b["kind"],
                "severity": b["severity"],
                "severity_max": severity_max,
                "cluster": cluster,
                "namespace": namespace,
                "service": service,
                "opened_at": opened_at.replace(tzinfo=UTC),
                "due_at": _instant(b["due_at"]),
                "met_at": _instant(b["met_at"]),
                "overrun_seconds": b["overrun_seconds"],
                "open": b["open"],
                "as_of": as_of,
            }
        )
    out.sort(key=lambda r: (r["opened_at"], r["incident_id"], r["kind"]))
    return out


def _incident_metrics(con: duckdb.DuckDBPyConnection, q: ExportQuery) -> list[dict[str, Any]]:
    start, end = q.start or _MIN, q.end or _MAX
    # Grouping by cluster and keeping one gives that cluster's figures exactly; without a
    # filter the figures span every cluster (medians do not add up across clusters).
    keys = ["month", "severity", *(["cluster"] if q.cluster is not None else [])]
    groups = [
        g for g in metrics(con, start, end, keys) if g["key"].get("cluster", q.cluster) == q.cluster
    ]
    incidents = _incidents_of(con, q)
    breached: dict[tuple[str, str, str], set[str]] = {}
    for b in breaches(con, start, end, q.as_of)["items"]:
        inc = incidents.get(b["incident_id"])
        if inc is not None:
            month = inc[4].strftime("%Y-%m")
            breached.setdefault((month, inc[0], b["kind"]), set()).add(b["incident_id"])
    as_of = q.as_of.replace(tzinfo=UTC)
    out = []
    for g in groups:
        month, severity = g["key"]["month"], g["key"]["severity"]
        response = len(breached.get((month, severity, "response"), ()))
        row: dict[str, Any] = {
            "month_start": datetime.strptime(month, "%Y-%m").date(),
            "severity": severity,
            "cluster": q.cluster,
            "incidents": g["count"],
            "response_breaches": response,
            "resolution_breaches": len(breached.get((month, severity, "resolution"), ())),
            "breach_rate": response / g["count"] if g["count"] else None,
            "as_of": as_of,
        }
        for figure in ("mtta", "mttm", "mttr"):
            f = g[figure]
            row |= {
                f"{figure}_mean_s": f["mean"],
                f"{figure}_median_s": f["median"],
                f"{figure}_p90_s": f["p90"],
                f"{figure}_missing": f["missing"],
            }
        out.append(row)
    out.sort(key=lambda r: (r["month_start"], r["severity"] or ""))
    return out


_COMPUTED: Final[
    dict[str, Callable[[duckdb.DuckDBPyConnection, ExportQuery], list[dict[str, Any]]]]
] = {
    "storage_forecast": _storage_forecast,
    "sla_breaches": _sla_breaches,
    "incident_metrics_monthly": _incident_metrics,
    "rightsizing": lambda con, q: rightsizing_rows(con, q.start, q.end, q.cluster, q.as_of),
    "showback": lambda con, q: showback_rows(con, q.start, q.end, q.cluster, q.as_of),
    "decisions": lambda con, q: decision_rows(con, q.start, q.end, q.cluster, q.as_of),
}


def _instant(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def read_model_rows(con: duckdb.DuckDBPyConnection, ds: Dataset, q: ExportQuery) -> Rows:
    """A read-model dataset's rows from one snapshot, on a cursor of its own (closed with it).

    `con` must be a cursor no other code uses meanwhile: a DuckDB result stays open across
    the batches, and any other statement on that cursor would end it.
    """
    if ds.source != "read_model":
        raise ValueError(f"{ds.name} is not read from the read model")
    # One transaction: the count and every batch see the same committed state, whatever
    # catch-ups commit meanwhile.
    con.begin()
    readers: list[pa.RecordBatchReader] = []

    def close() -> None:
        # Closing the cursor ends its transaction (read-only: nothing to commit).
        try:
            for reader in readers:
                reader.close()
        finally:
            con.close()

    try:
        if ds.name in _COMPUTED:
            rows = _COMPUTED[ds.name](con, q)
            return Rows(ds, len(rows), _batches_of(rows, ds.schema), close)
        sql, params = _sql(ds, q)
        count = con.execute(f"SELECT count(*) FROM ({sql})", params).fetchall()[0][0]
        readers.append(con.sql(sql, params=params).to_arrow_reader(BATCH_ROWS))
        schema = ds.schema
        return Rows(ds, int(count), (conform(b, schema) for b in readers[0]), close)
    except BaseException:
        close()
        raise


# -- the ledger ------------------------------------------------------------------------------


def _filtered(stmt: Select[Any], q: ExportQuery, head: int) -> Select[Any]:
    """`stmt` narrowed as `Ledger.read` narrows it for `q`, up to `head`."""
    stmt = stmt.where(events.c.position <= head)
    if q.types:
        stmt = stmt.where(events.c.type.in_(list(q.types)))
    if q.cluster is not None:
        stmt = stmt.where(events.c.cluster == q.cluster)
    if q.start is not None:
        stmt = stmt.where(events.c.time >= naive_to_us(q.start))
    if q.end is not None:
        stmt = stmt.where(events.c.time < naive_to_us(q.end))
    return stmt


def _text_length(col: Any) -> Any:
    return func.coalesce(func.length(col), 0)


def measure_events(ledger: Ledger, q: ExportQuery, head: int) -> EventsSize:
    """Rows, stored data bytes and samples of the events `q` selects: aggregates, no decoding."""
    # length() of a blob reads its size, not its content (SQLite's record header, PostgreSQL's
    # TOAST pointer): this scans the rows, never their data.
    json_bytes = case((events.c.data_format == DATA_JSON, func.length(events.c.data)), else_=0)
    text = sum(
        (_text_length(c) for c in (events.c.cluster, events.c.subject, events.c.stream)),
        start=func.length(events.c.source) + func.length(events.c.id) + func.length(events.c.type),
    )
    stmt = _filtered(
        select(
            func.count(),
            func.coalesce(func.sum(json_bytes), 0),
            func.coalesce(func.sum(events.c.sample_count), 0),
            func.coalesce(func.sum(text), 0),
        ).select_from(events),
        q,
        head,
    )
    with ledger.engine.connect() as conn:
        rows, data, samples, chars = conn.execute(stmt).one()
        key = 0.0
        if samples:
            mean = select(func.avg(func.length(series.c.name) + func.length(series.c.labels)))
            key = float(conn.execute(mean).scalar_one() or 0.0)
    return EventsSize(int(rows), int(data), int(samples), key, int(chars))


def _event_row(ev: RecordedEvent) -> tuple[Any, ...]:
    data = ev.data if ev.samples is None else ev.samples.to_data()
    return (
        ev.position,
        ev.time_us,
        ev.type,
        ev.source,
        ev.id,
        ev.cluster,
        ev.subject,
        ev.stream,
        ev.stream_version,
        ev.recorded_at_us,
        None if data is None else orjson.dumps(data).decode(),
    )


def _event_batch(rows: list[tuple[Any, ...]], schema: pa.Schema) -> pa.RecordBatch:
    columns = list(zip(*rows, strict=True))
    return pa.RecordBatch.from_arrays(
        [pa.array(col, f.type) for col, f in zip(columns, schema, strict=True)], schema=schema
    )


def _page_size(ledger: Ledger, q: ExportQuery, head: int, after: int) -> int:
    """How many of the next events to read as one page so its decoded data stays bounded."""
    weight = case(
        (events.c.data_format == DATA_JSON, func.length(events.c.data)),
        else_=events.c.sample_count * _SAMPLE_TEXT_BYTES,
    )
    stmt = _filtered(select(weight).where(events.c.position > after), q, head)
    stmt = stmt.order_by(events.c.position).limit(_LEDGER_PAGE)
    with ledger.engine.connect() as conn:
        weights = [int(w or 0) for w in conn.execute(stmt).scalars()]
    n, total = 0, 0
    for w in weights:
        if n and total + w > _PAGE_TEXT_BYTES:
            break
        n, total = n + 1, total + w
    return n


def ledger_rows(ledger: Ledger, q: ExportQuery) -> Rows:
    """The `events` dataset: the ledger paged by position, up to the head at the start."""
    # Opening it only measures (Rows.size); events are decoded page by page as batches are
    # taken, each page bounded by its data's size, so a refusal decided from the size reads none.
    ds = DATASETS["events"]
    schema = ds.schema
    # Events appended while the export runs are left out: the count holds for the whole read.
    head = ledger.head()
    size = measure_events(ledger, q, head)
    since = None if q.start is None else naive_to_us(q.start)
    until = None if q.end is None else naive_to_us(q.end)

    def batches() -> Iterator[pa.RecordBatch]:
        after = 0
        pending: list[tuple[Any, ...]] = []
        chars = 0
        while after < head:
            n = _page_size(ledger, q, head, after)
            if not n:
                break
            page = ledger.read(
                after, n, types=q.types, cluster=q.cluster, since_us=since, until_us=until
            )
            page = [ev for ev in page if ev.position <= head]
            if not page:
                break
            after = page[-1].position
            for ev in page:
                row = _event_row(ev)
                pending.append(row)
                chars += len(row[-1] or "")
                # Sample events carry large `data`: cut early to bound a batch's memory.
                if len(pending) >= BATCH_ROWS or chars >= _EVENTS_BATCH_BYTES:
                    yield _event_batch(pending, schema)
                    pending, chars = [], 0
            del page
        if pending:
            yield _event_batch(pending, schema)

    return Rows(ds, size.rows, batches(), size=size)


def month_floor(t: datetime) -> datetime:
    """The start of t's UTC month."""
    return datetime(t.year, t.month, 1)


def month_ceil(t: datetime) -> datetime:
    """t when it starts a month, else the start of the next month."""
    floor = month_floor(t)
    if floor == t:
        return t
    return month_floor(floor + timedelta(days=32))
