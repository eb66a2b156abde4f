"""Storage: PVC used and capacity samples, and forecasts of when each volume fills."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import duckdb
import numpy as np

from analytics.forecast import Method, forecast_pvc
from analytics.samples import samples_table
from store.contract import METRIC_SAMPLES
from store.ledger import RecordedEvent

PVC_METRICS: Final = frozenset({"pvc_used_bytes", "pvc_capacity_bytes"})
LOOKBACK: Final = timedelta(days=35)

_DDL: Final = """CREATE TABLE IF NOT EXISTS pvc_samples (
    cluster VARCHAR, metric VARCHAR, namespace VARCHAR, pvc VARCHAR, ts TIMESTAMP,
    value DOUBLE, position BIGINT)"""


class StorageProjection:
    """PVC samples as recorded; forecasts are computed per query, as of any time."""

    name = "storage"
    version = 1
    types: tuple[str, ...] = (METRIC_SAMPLES,)
    batch_events = 200

    def create(self, con: duckdb.DuckDBPyConnection) -> None:
        """Create the storage table."""
        con.execute(_DDL)

    def drop(self, con: duckdb.DuckDBPyConnection) -> None:
        """Drop the storage table."""
        con.execute("DROP TABLE IF EXISTS pvc_samples")

    def apply(self, con: duckdb.DuckDBPyConnection, events: Sequence[RecordedEvent]) -> None:
        """Append the PVC samples of the page."""
        table = samples_table(events, PVC_METRICS, ("namespace", "persistentvolumeclaim"))
        if table.num_rows == 0:
            return
        con.register("_pvc_page", table)
        try:
            con.execute(
                "INSERT INTO pvc_samples SELECT cluster, metric, namespace, "
                "persistentvolumeclaim, ts, value, position FROM _pvc_page"
            )
        finally:
            con.unregister("_pvc_page")


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
    lookback = max(LOOKBACK, window or LOOKBACK)
    sql = """
        SELECT cluster, namespace, pvc, epoch_us(ts) AS ts_us,
            arg_max(value, position) FILTER (metric = 'pvc_used_bytes') AS used,
            arg_max(value, position) FILTER (metric = 'pvc_capacity_bytes') AS capacity
        FROM pvc_samples WHERE ts > ? AND ts <= ?"""
    params: list[Any] = [as_of - lookback, as_of]
    for column, value in (("cluster", cluster), ("namespace", namespace), ("pvc", pvc)):
        if value is not None:
            sql += f" AND {column} = ?"
            params.append(value)
    sql += " GROUP BY cluster, namespace, pvc, ts ORDER BY cluster, namespace, pvc, ts"
    cols = con.execute(sql, params).fetchnumpy()
    n = len(cols["ts_us"])
    if n == 0:
        return []
    keys = list(zip(cols["cluster"], cols["namespace"], cols["pvc"], strict=True))
    starts = [0] + [i for i in range(1, n) if keys[i] != keys[i - 1]] + [n]
    ts = np.asarray(cols["ts_us"], dtype=np.float64) / 1e6
    used = np.ma.filled(np.ma.asarray(cols["used"], dtype=np.float64), np.nan)
    capacity = np.ma.filled(np.ma.asarray(cols["capacity"], dtype=np.float64), np.nan)
    as_of_s = (as_of - datetime(1970, 1, 1)).total_seconds()
    items = []
    for a, b in itertools.pairwise(starts):
        f = forecast_pvc(
            ts[a:b],
            used[a:b],
            capacity[a:b],
            as_of_s,
            method=method,
            window_s=None if window is None else window.total_seconds(),
            horizon_s=horizon.total_seconds(),
        )
        c, ns, name = keys[a]
        items.append(
            {
                "cluster": str(c),
                "namespace": str(ns),
                "pvc": str(name),
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
        )
    items.sort(key=lambda i: (i["days_to_90"] is None, i["days_to_90"] or 0.0, i["pvc"]))
    return items


def _eta(as_of: datetime, days: float | None) -> str | None:
    if days is None:
        return None
    return (as_of + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
