"""Storage: PVC samples, forecasts of when each volume fills, and month-end forecasts kept."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow.compute as pc

from analytics.readmodel.model import insert_rows
from analytics.readmodel.samples import samples_table
from analytics.storage.forecast import Method, forecast_pvc
from store.contract import METRIC_SAMPLES
from store.ledger import RecordedEvent

PVC_METRICS: Final = frozenset({"pvc_used_bytes", "pvc_capacity_bytes"})
LOOKBACK: Final = timedelta(days=35)
#: Month-end forecasts are made as of just before the month ends: a sample stamped 00:00:00
#: on the 1st belongs to the next month, as it does in the [t, t + step) rollup buckets.
JUST_BEFORE: Final = timedelta(microseconds=1)

# The forecast fields kept per PVC and month end, in the order forecasts() gives them.
_FIELDS: Final = (
    "used_bytes", "capacity_bytes", "used_ratio", "growth_bytes_per_day", "days_to_85",
    "days_to_90", "days_to_full", "eta_90", "eta_90_low", "eta_90_high", "method", "status",
)  # fmt: skip
_TEXT_FIELDS: Final = frozenset({"eta_90", "eta_90_low", "eta_90_high", "method", "status"})
_KEY: Final = "cluster VARCHAR, namespace VARCHAR, pvc VARCHAR"

_DDL: Final = (
    """CREATE TABLE IF NOT EXISTS pvc_samples (
        cluster VARCHAR, metric VARCHAR, namespace VARCHAR, pvc VARCHAR, ts TIMESTAMP,
        value DOUBLE, position BIGINT)""",
    # Every PVC's forecast as of each month's end, kept once the month is over (settle):
    # the monthly report reads them instead of fitting hundreds of volumes per request.
    f"""CREATE TABLE IF NOT EXISTS pvc_month_end (boundary TIMESTAMP, {_KEY}, """
    + ", ".join(f"{f} {'VARCHAR' if f in _TEXT_FIELDS else 'DOUBLE'}" for f in _FIELDS)
    + ")",
    # The months that hold samples, and the month ends whose forecasts are kept.
    "CREATE TABLE IF NOT EXISTS pvc_months (month TIMESTAMP)",
    "CREATE TABLE IF NOT EXISTS pvc_month_end_settled (boundary TIMESTAMP)",
    # Kept forecasts that a late sample has made stale, until settle fits them again.
    f"CREATE TABLE IF NOT EXISTS pvc_month_end_stale (boundary TIMESTAMP, {_KEY})",
)
_TABLES: Final = (
    "pvc_samples", "pvc_month_end", "pvc_months", "pvc_month_end_settled", "pvc_month_end_stale",
)  # fmt: skip

# A sample at ts is in the forecast window of the month ends B with B - LOOKBACK <= ts < B:
# always the next month's start, and the one after it for the month's last days.
_MARK_STALE: Final = """
INSERT INTO pvc_month_end_stale
WITH g AS (
    SELECT cluster, namespace, persistentvolumeclaim AS pvc,
        date_trunc('month', ts) AS m, max(ts) AS last
    FROM _pvc_page GROUP BY ALL
),
touched AS (
    SELECT m + INTERVAL 1 MONTH AS boundary, cluster, namespace, pvc FROM g
    UNION ALL
    SELECT m + INTERVAL 2 MONTH, cluster, namespace, pvc FROM g
    WHERE last >= m + INTERVAL 2 MONTH - ?::INTERVAL
)
SELECT t.boundary, t.cluster, t.namespace, t.pvc
FROM touched t SEMI JOIN pvc_month_end_settled s ON s.boundary = t.boundary
EXCEPT SELECT boundary, cluster, namespace, pvc FROM pvc_month_end_stale
"""
_MARK_MONTHS: Final = """
INSERT INTO pvc_months
SELECT DISTINCT date_trunc('month', ts) FROM _pvc_page
EXCEPT SELECT month FROM pvc_months
"""
_MARK_MONTH: Final = """
INSERT INTO pvc_months SELECT ?::TIMESTAMP
WHERE NOT EXISTS (SELECT 1 FROM pvc_months WHERE month = ?)
"""
# The PVCs of one month end's stale list, as a condition on pvc_samples or pvc_month_end.
_IS_STALE: Final = """EXISTS (
    SELECT 1 FROM pvc_month_end_stale x WHERE x.boundary = ?
      AND x.cluster IS NOT DISTINCT FROM {t}.cluster
      AND x.namespace IS NOT DISTINCT FROM {t}.namespace AND x.pvc IS NOT DISTINCT FROM {t}.pvc)"""


class StorageProjection:
    """PVC samples as recorded, and every PVC's forecast as of each month's end."""

    name = "storage"
    version = 2
    types: tuple[str, ...] = (METRIC_SAMPLES,)
    batch_events = 200

    def create(self, con: duckdb.DuckDBPyConnection) -> None:
        """Create the storage tables."""
        for ddl in _DDL:
            con.execute(ddl)

    def drop(self, con: duckdb.DuckDBPyConnection) -> None:
        """Drop the storage tables."""
        for table in _TABLES:
            con.execute(f"DROP TABLE IF EXISTS {table}")

    def apply(self, con: duckdb.DuckDBPyConnection, events: Sequence[RecordedEvent]) -> None:
        """Append the PVC samples of the page; mark the kept forecasts they change as stale."""
        table = samples_table(events, PVC_METRICS, ("namespace", "persistentvolumeclaim"))
        if table.num_rows == 0:
            return
        con.register("_pvc_page", table)
        try:
            con.execute(
                "INSERT INTO pvc_samples SELECT cluster, metric, namespace, "
                "persistentvolumeclaim, ts, value, position FROM _pvc_page"
            )
            span = pc.min_max(table["ts"]).as_py()
            first, last = span["min"], span["max"]
            if _add_months(first, 0) == _add_months(last, 0):
                con.execute(_MARK_MONTH, [_add_months(first, 0)] * 2)
            else:
                con.execute(_MARK_MONTHS)
            # Pages after every kept month end (steady state) and pages of a replay (nothing is
            # kept before it settles) skip the grouping below: 40 % of a storage catch-up.
            ((kept,),) = con.execute("SELECT max(boundary) FROM pvc_month_end_settled").fetchall()
            if kept is not None and kept > first:
                con.execute(_MARK_STALE, [LOOKBACK])
        finally:
            con.unregister("_pvc_page")

    def settle(self, con: duckdb.DuckDBPyConnection, now: datetime) -> None:
        """Keep the forecasts of every month that has ended by `now`; refit the stale ones."""
        # Runs after a catch-up, not per page: a rebuild fits each month end once, from all
        # of its samples, instead of once per page that adds some.
        months = [r[0] for r in con.execute("SELECT month FROM pvc_months").fetchall()]
        settled = {
            r[0] for r in con.execute("SELECT boundary FROM pvc_month_end_settled").fetchall()
        }
        due = {_add_months(m, k) for m in months for k in (1, 2)}
        for boundary in sorted(b for b in due - settled if b <= now):
            _keep(con, boundary, _month_end_items(con, boundary, stale_only=False))
            con.execute("INSERT INTO pvc_month_end_settled VALUES (?)", [boundary])
        stale = con.execute("SELECT DISTINCT boundary FROM pvc_month_end_stale").fetchall()
        for (boundary,) in sorted(stale):
            con.execute(
                f"DELETE FROM pvc_month_end WHERE {_IS_STALE.format(t='pvc_month_end')} "
                "AND boundary = ?",
                [boundary, boundary],
            )
            _keep(con, boundary, _month_end_items(con, boundary, stale_only=True))
            con.execute("DELETE FROM pvc_month_end_stale WHERE boundary = ?", [boundary])


def _add_months(t: datetime, k: int) -> datetime:
    """The first instant of the k-th month after t's month."""
    index = t.year * 12 + t.month - 1 + k
    return datetime(index // 12, index % 12 + 1, 1)


def _horizon(boundary: datetime) -> timedelta:
    """From a month end to the next month's end: the next review."""
    return _add_months(boundary, 1) - boundary


def _month_end_items(
    con: duckdb.DuckDBPyConnection,
    boundary: datetime,
    *,
    stale_only: bool,
    cluster: str | None = None,
) -> list[tuple[tuple[str | None, str | None, str | None], dict[str, Any]]]:
    """Forecasts as of just before `boundary` (all PVCs, or its stale ones), with raw keys."""
    condition, params = "", list[Any]()
    if stale_only:
        condition, params = f" AND {_IS_STALE.format(t='pvc_samples')}", [boundary]
    if cluster is not None:
        condition, params = f"{condition} AND cluster = ?", [*params, cluster]
    return _forecast_items(
        con, boundary - JUST_BEFORE, condition, params, "auto", None, _horizon(boundary)
    )


def _keep(
    con: duckdb.DuckDBPyConnection,
    boundary: datetime,
    items: list[tuple[tuple[str | None, str | None, str | None], dict[str, Any]]],
) -> None:
    """Store forecasts as of a month end."""
    rows = [[boundary, *key, *(item[f] for f in _FIELDS)] for key, item in items]
    insert_rows(con, "pvc_month_end", rows)


def month_end_forecasts(
    con: duckdb.DuckDBPyConnection, boundary: datetime, cluster: str | None = None
) -> list[dict[str, Any]]:
    """forecasts() as of just before `boundary` (a month's start), horizon the next month.

    Read from the kept forecasts where the month end is settled, fitting only the PVCs that
    late samples made stale; fitted whole where it is not (the same figures either way).
    """
    settled = con.execute(
        "SELECT count(*) FROM pvc_month_end_settled WHERE boundary = ?", [boundary]
    ).fetchone()
    if not settled or not settled[0]:
        items = _month_end_items(con, boundary, stale_only=False, cluster=cluster)
        return _ranked(items)
    sql = (
        f"SELECT cluster, namespace, pvc, {', '.join(_FIELDS)} FROM pvc_month_end "
        f"WHERE boundary = ? AND NOT {_IS_STALE.format(t='pvc_month_end')}"
    )
    params: list[Any] = [boundary, boundary]
    if cluster is not None:
        sql, params = f"{sql} AND cluster = ?", [*params, cluster]
    kept = [((r[0], r[1], r[2]), _item(r[:3], dict(zip(_FIELDS, r[3:], strict=True))))
            for r in con.execute(sql, params).fetchall()]  # fmt: skip
    stale = _month_end_items(con, boundary, stale_only=True, cluster=cluster)
    return _ranked(kept + stale)


def _ranked(
    items: list[tuple[tuple[str | None, str | None, str | None], dict[str, Any]]],
) -> list[dict[str, Any]]:
    """In forecasts()'s order: by PVC key, then soonest to fill first (a stable sort)."""
    items.sort(key=lambda ki: tuple((v is None, v or "") for v in ki[0]))
    out = [item for _, item in items]
    out.sort(key=lambda i: (i["days_to_90"] is None, i["days_to_90"] or 0.0, i["pvc"]))
    return out


def _item(key: Sequence[str | None], fields: dict[str, Any]) -> dict[str, Any]:
    """A forecast as the API gives it: labels a PVC lacks are empty strings."""
    cluster, namespace, pvc = (v or "" for v in key)
    return {"cluster": cluster, "namespace": namespace, "pvc": pvc, **fields}


def forecasts(
    con: duckdb.DuckDBPyConnection,
    as_of: datetime,
    *,
    cluster: str | None = None,
    namespace: str | None = None,
    pvc: str | None = None,
    method: Method = "auto",
    window: timedelta | None = None,
    horizon: timedelta = timedelta(days=30),
) -> list[dict[str, Any]]:
    """One forecast per PVC from the samples up to `as_of` (naive UTC), soonest to fill first."""
    condition = ""
    params: list[Any] = []
    for column, value in (("cluster", cluster), ("namespace", namespace), ("pvc", pvc)):
        if value is not None:
            condition += f" AND {column} = ?"
            params.append(value)
    items = _forecast_items(con, as_of, condition, params, method, window, horizon)
    return _ranked(items)


def _forecast_items(
    con: duckdb.DuckDBPyConnection,
    as_of: datetime,
    condition: str,
    params: Sequence[Any],
    method: Method,
    window: timedelta | None,
    horizon: timedelta,
) -> list[tuple[tuple[str | None, str | None, str | None], dict[str, Any]]]:
    """Per PVC whose samples meet `condition` (SQL on pvc_samples): raw key and forecast."""
    lookback = max(LOOKBACK, window or LOOKBACK)
    # One row per PVC with its samples as lists: a month of minute samples is millions of
    # rows, and per-row Python objects (keys, group boundaries) cost more than the fits.
    sql = f"""
        SELECT cluster, namespace, pvc,
            list(ts_us ORDER BY ts_us) AS ts_us,
            list(used ORDER BY ts_us) AS used,
            list(capacity ORDER BY ts_us) AS capacity
        FROM (
            SELECT cluster, namespace, pvc, epoch_us(ts) AS ts_us,
                arg_max(value, position) FILTER (metric = 'pvc_used_bytes') AS used,
                arg_max(value, position) FILTER (metric = 'pvc_capacity_bytes') AS capacity
            FROM pvc_samples WHERE ts > ? AND ts <= ?{condition}
            GROUP BY cluster, namespace, pvc, ts
        )
        GROUP BY cluster, namespace, pvc ORDER BY cluster, namespace, pvc"""
    # A cursor of its own: the caller's may still hold an unfinished result.
    cur = con.cursor()
    try:
        table = cur.sql(sql, params=[as_of - lookback, as_of, *params]).to_arrow_table()
    finally:
        cur.close()
    if table.num_rows == 0:
        return []
    keys = list(
        zip(*(table.column(c).to_pylist() for c in ("cluster", "namespace", "pvc")), strict=True)
    )
    lists = {c: table.column(c).combine_chunks() for c in ("ts_us", "used", "capacity")}
    starts = lists["ts_us"].offsets.to_numpy()
    ts = lists["ts_us"].flatten().to_numpy().astype(np.float64) / 1e6
    used = _floats(lists["used"].flatten())
    capacity = _floats(lists["capacity"].flatten())
    as_of_s = (as_of - datetime(1970, 1, 1)).total_seconds()
    items = []
    for k, (a, b) in enumerate(itertools.pairwise(starts.tolist())):
        f = forecast_pvc(
            ts[a:b],
            used[a:b],
            capacity[a:b],
            as_of_s,
            method=method,
            window_s=None if window is None else window.total_seconds(),
            horizon_s=horizon.total_seconds(),
        )
        fields = {
            "used_bytes": f.used_bytes,
            "capacity_bytes": f.capacity_bytes,
            "used_ratio": f.used_ratio,
            "growth_bytes_per_day": f.growth_bytes_per_day,
            "days_to_85": f.days_to_85,
            "days_to_90": f.days_to_90,
            "days_to_full": f.days_to_full,
            "eta_90": _eta(as_of, f.days_to_90),
            "eta_90_low": _eta(as_of, f.days_to_90_low),
            "eta_90_high": _eta(as_of, f.days_to_90_high),
            "method": f.method,
            "status": f.status,
        }
        items.append((keys[k], _item(keys[k], fields)))
    return items


def _floats(values: Any) -> npt.NDArray[np.float64]:
    """An Arrow numeric array as float64, NULL as NaN."""
    filled = pc.fill_null(values.cast("double"), float("nan"))
    out: npt.NDArray[np.float64] = filled.to_numpy(zero_copy_only=False)
    return out


def _eta(as_of: datetime, days: float | None) -> str | None:
    if days is None:
        return None
    return (as_of + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
