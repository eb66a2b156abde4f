"""Capacity questions over the read model: sustained hot runs and growth.

Headroom is in analytics.capacity.headroom.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, Final, NamedTuple

import duckdb
import numpy as np
import numpy.typing as npt

from analytics.readmodel.model import snapshot
from analytics.thresholds import (
    SUSTAINED_MAX_GAP,
    SUSTAINED_MIN,
    SUSTAINED_UTILIZATION,
)
from store.timefmt import us_to_naive

# Sustained runs are found in numpy over the base tables: window functions over the cap_points
# view (a UNION ALL with joins) took 2 s for a month of 200 nodes. A point (one row of the view)
# counts only with allocatable > 0 and usage not NULL; any other neither joins nor breaks a run.
_NODE_UTILISATION: Final = """
SELECT member_id, epoch_us(ts) AS ts,
    CASE WHEN cpu_a > 0 THEN cpu_u / cpu_a END AS cpu,
    CASE WHEN mem_a > 0 THEN mem_u / mem_a END AS memory
FROM cap_node_values
WHERE ts >= ? AND ts < ? {cluster}
ORDER BY member_id, ts
"""
_SCOPE_POINTS: Final = """
FROM cap_scope_points
WHERE scope IN ('cluster', 'nodepool') AND resource IN ('cpu', 'memory')
  AND allocatable > 0 AND usage IS NOT NULL AND ts >= ? AND ts < ? {cluster}
"""
_SCOPE_SERIES: Final = (
    f"SELECT cluster, scope, nodepool, resource, count(*) {_SCOPE_POINTS} "
    "GROUP BY ALL ORDER BY cluster, scope, nodepool, resource"
)
# In the order of _SCOPE_SERIES, so its counts say where each series begins.
_SCOPE_UTILISATION: Final = (
    f"SELECT epoch_us(ts) AS ts, usage / allocatable AS u {_SCOPE_POINTS} "
    "ORDER BY cluster, scope, nodepool, resource, ts"
)
_GAP_US: Final = SUSTAINED_MAX_GAP // timedelta(microseconds=1)
_MIN_US: Final = SUSTAINED_MIN // timedelta(microseconds=1)


class _Run(NamedTuple):
    """A sustained run of one member and resource; start and end in µs since the epoch."""

    cluster: str | None
    scope: str
    nodepool: str | None
    node: str | None
    resource: str
    start: int
    end: int
    avg: float
    peak: float
    samples: int


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


#: start and end (µs), avg, max and samples of a run.
_Figures = tuple[int, int, float, float, int]


def _runs(
    part: npt.NDArray[Any], ts: npt.NDArray[Any], utilisation: npt.NDArray[Any]
) -> Iterator[tuple[int, _Figures]]:
    """The part and figures of each sustained run in rows sorted by part (a series), then ts.

    Rows whose utilisation is masked (NULL) are not points: they neither join nor break runs.
    """
    masked = np.ma.asarray(utilisation, dtype=np.float64)
    ts, u = np.asarray(ts, np.int64), np.ma.getdata(masked)
    if masked.mask is not np.ma.nomask and masked.mask.any():
        kept = ~masked.mask
        part, ts, u = part[kept], ts[kept], u[kept]
    hot = u > SUSTAINED_UTILIZATION
    # A row continues the run of the row before it when that one is hot, of the same series and
    # at most SUSTAINED_MAX_GAP earlier; a hot row that does not starts a run.
    joins = np.zeros(len(u), bool)
    joins[1:] = hot[:-1] & (part[1:] == part[:-1]) & (np.diff(ts) <= _GAP_US)
    rows = np.flatnonzero(hot)
    heads = np.flatnonzero(~joins[rows])
    if len(heads) == 0:
        return
    first, last = rows[heads], rows[np.append(heads[1:], len(rows)) - 1]
    long = ts[last] - ts[first] >= _MIN_US
    samples = np.diff(np.append(heads, len(rows)))[long]
    avg = np.add.reduceat(u[rows], heads)[long] / samples
    peak = np.maximum.reduceat(u[rows], heads)[long]
    figures = zip(
        ts[first[long]].tolist(),
        ts[last[long]].tolist(),
        avg.tolist(),
        peak.tolist(),
        samples.tolist(),
        strict=True,
    )
    yield from zip(part[first[long]].tolist(), figures, strict=True)


def _columns(
    con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]
) -> dict[str, npt.NDArray[Any]]:
    """A query's columns as numpy arrays, NULLs masked."""
    # Through Arrow: a month of 200 nodes' values arrives in 0.09 s, fetchnumpy() takes 0.13 s.
    table = con.sql(sql, params=params).to_arrow_table()
    out: dict[str, npt.NDArray[Any]] = {}
    for name in table.column_names:
        col = table[name]
        values = col.to_numpy()
        out[name] = (
            np.ma.masked_array(values, col.is_null().to_numpy()) if col.null_count else values
        )
    return out


def _order(run: _Run) -> tuple[Any, ...]:
    """ORDER BY start, cluster, scope, nodepool NULLS FIRST, node NULLS FIRST, resource."""
    # DuckDB puts NULL last unless told otherwise; None does not compare with a str.
    return (
        run.start,
        run.cluster is None,
        run.cluster or "",
        run.scope,
        run.nodepool is not None,
        run.nodepool or "",
        run.node is not None,
        run.node or "",
        run.resource,
    )


def _node_runs(
    con: duckdb.DuckDBPyConnection, window: list[Any], cluster: str | None
) -> list[_Run]:
    """The sustained runs of nodes: a series per member and resource."""
    sql, params = _NODE_UTILISATION.format(cluster=""), window
    if cluster is not None:
        sql = _NODE_UTILISATION.format(
            cluster="AND member_id IN (SELECT member_id FROM cap_members WHERE cluster = ?)"
        )
        params = [*window, cluster]
    members = {
        r[0]: r[1:]
        for r in con.execute(
            "SELECT member_id, cluster, nodepool, node FROM cap_members"
        ).fetchall()
    }
    cols = _columns(con, sql, params)
    found = []
    for resource in ("cpu", "memory"):
        for member, figures in _runs(cols["member_id"], cols["ts"], cols[resource]):
            c, nodepool, node = members[member]
            found.append(_Run(c, "node", nodepool, node, resource, *figures))
    return found


def _scope_runs(
    con: duckdb.DuckDBPyConnection, window: list[Any], cluster: str | None
) -> list[_Run]:
    """The sustained runs of clusters and node pools: a series per member and resource."""
    clause, params = ("", window) if cluster is None else ("AND cluster = ?", [*window, cluster])
    series = con.execute(_SCOPE_SERIES.format(cluster=clause), params).fetchall()
    cols = _columns(con, _SCOPE_UTILISATION.format(cluster=clause), params)
    part = np.repeat(np.arange(len(series)), [s[4] for s in series])
    found = []
    for i, figures in _runs(part, cols["ts"], cols["u"]):
        c, scope, nodepool, resource, _ = series[i]
        found.append(_Run(c, scope, nodepool, None, resource, *figures))
    return found


def sustained(
    con: duckdb.DuckDBPyConnection, start: datetime, end: datetime, cluster: str | None = None
) -> list[dict[str, Any]]:
    """Runs above 85 % CPU or memory utilisation lasting at least an hour, per member."""
    with snapshot(con):
        runs = _node_runs(con, [start, end], cluster) + _scope_runs(con, [start, end], cluster)
    runs.sort(key=_order)
    return [
        {
            "cluster": r.cluster,
            "scope": r.scope,
            "nodepool": r.nodepool,
            "node": r.node,
            "resource": r.resource,
            "start": _iso(us_to_naive(r.start)),
            "end": _iso(us_to_naive(r.end)),
            "duration_seconds": (us_to_naive(r.end) - us_to_naive(r.start)).total_seconds(),
            "utilization_avg": r.avg,
            "utilization_max": r.peak,
            "samples": r.samples,
        }
        for r in runs
    ]


def growth(
    con: duckdb.DuckDBPyConnection, month_start: datetime, resource: str, scope: str
) -> list[dict[str, Any]]:
    """Month-over-month change of average usage and requests per scope member."""
    prev_start = (month_start - timedelta(days=1)).replace(day=1)
    next_start = (month_start + timedelta(days=32)).replace(day=1)
    rows = con.execute(
        """
        SELECT cluster, nodepool, node, namespace,
            avg(usage_avg) FILTER (t >= ?) AS usage_now,
            avg(usage_avg) FILTER (t < ?) AS usage_before,
            avg(requests_avg) FILTER (t >= ?) AS requests_now,
            avg(requests_avg) FILTER (t < ?) AS requests_before,
            avg(allocatable_avg) FILTER (t >= ?) AS allocatable_now,
            avg(allocatable_avg) FILTER (t < ?) AS allocatable_before
        FROM cap_rollup
        WHERE step = '1d' AND resource = ? AND scope = ? AND t >= ? AND t < ?
        GROUP BY ALL
        ORDER BY cluster, nodepool NULLS FIRST, node NULLS FIRST, namespace NULLS FIRST
        """,
        [month_start] * 6 + [resource, scope, prev_start, next_start],
    ).fetchall()
    out = []
    for r in rows:
        item: dict[str, Any] = {
            "key": {
                k: v
                for k, v in zip(("cluster", "nodepool", "node", "namespace"), r[:4], strict=True)
                if v is not None
            }
        }
        for name, now, before in (
            ("usage", r[4], r[5]),
            ("requests", r[6], r[7]),
            ("allocatable", r[8], r[9]),
        ):
            item[name] = {"month": now, "previous_month": before, "growth": _ratio(now, before)}
        out.append(item)
    return out


def _ratio(now: float | None, before: float | None) -> float | None:
    if now is None or before is None or before == 0:
        return None
    return now / before - 1.0
