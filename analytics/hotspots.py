"""Capacity questions over the read model: sustained hot runs, growth, and headroom."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final

import duckdb
import numpy as np

SUSTAINED_THRESHOLD: Final = 0.85
SUSTAINED_MIN: Final = timedelta(hours=1)
# A hole this long between samples ends a run: the member was not observed being hot.
MAX_GAP: Final = timedelta(minutes=15)
HEADROOM_TARGET: Final = 0.85

_SUSTAINED: Final = """
WITH p AS (
    SELECT cluster, scope, nodepool, node, resource, ts, usage / allocatable AS u
    FROM cap_points
    WHERE scope IN ('cluster', 'nodepool', 'node') AND resource IN ('cpu', 'memory')
      AND allocatable > 0 AND usage IS NOT NULL AND ts >= ? AND ts < ? {cluster}
),
f AS (
    SELECT *, u > ? AS hot,
        lag(ts) OVER w AS prev_ts,
        lag(u > ?) OVER w AS prev_hot
    FROM p
    WINDOW w AS (PARTITION BY cluster, scope, nodepool, node, resource ORDER BY ts)
),
g AS (
    SELECT *, sum(CASE WHEN hot AND (prev_hot IS DISTINCT FROM TRUE OR ts - prev_ts > ?)
                       THEN 1 ELSE 0 END)
              OVER (PARTITION BY cluster, scope, nodepool, node, resource ORDER BY ts) AS run
    FROM f
)
SELECT cluster, scope, nodepool, node, resource, min(ts) AS start, max(ts) AS "end",
       avg(u) AS utilization_avg, max(u) AS utilization_max, count(*) AS samples
FROM g WHERE hot
GROUP BY cluster, scope, nodepool, node, resource, run
HAVING max(ts) - min(ts) >= ?
ORDER BY start, cluster, scope, nodepool NULLS FIRST, node NULLS FIRST, resource
"""


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def sustained(
    con: duckdb.DuckDBPyConnection, start: datetime, end: datetime, cluster: str | None = None
) -> list[dict[str, Any]]:
    """Runs above 85 % CPU or memory utilisation lasting at least an hour, per member."""
    params: list[Any] = [start, end]
    clause = ""
    if cluster is not None:
        clause, params = "AND cluster = ?", [*params, cluster]
    params += [SUSTAINED_THRESHOLD, SUSTAINED_THRESHOLD, MAX_GAP, SUSTAINED_MIN]
    rows = con.execute(_SUSTAINED.format(cluster=clause), params).fetchall()
    return [
        {
            "cluster": r[0],
            "scope": r[1],
            "nodepool": r[2],
            "node": r[3],
            "resource": r[4],
            "start": _iso(r[5]),
            "end": _iso(r[6]),
            "duration_seconds": (r[6] - r[5]).total_seconds(),
            "utilization_avg": r[7],
            "utilization_max": r[8],
            "samples": r[9],
        }
        for r in rows
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


def _days_to(level: float, slope: float, target: float) -> float | None:
    """Days until a linear trend from `level` reaches `target`: 0 if past, None if never."""
    if level >= target:
        return 0.0
    if slope <= 0:
        return None
    return (target - level) / slope


def headroom(
    con: duckdb.DuckDBPyConnection, as_of: datetime, window: timedelta = timedelta(days=30)
) -> list[dict[str, Any]]:
    """Per cluster and node pool: commitment now and when requests (or usage) pass 85 %.

    Requests are known per namespace, so only a cluster has a commitment; a node pool is
    judged by its usage. N-1 removes the pool's (or cluster's) largest node's allocatable.
    """
    rows = con.execute(
        """
        SELECT scope, cluster, nodepool, resource, t, usage_avg, requests_avg, allocatable_avg
        FROM cap_rollup
        WHERE step = '1d' AND scope IN ('cluster', 'nodepool') AND resource IN ('cpu', 'memory')
          AND t >= ? AND t < ?
        ORDER BY scope, cluster, nodepool, resource, t
        """,
        [as_of - window, as_of],
    ).fetchall()
    largest = _largest_nodes(con, as_of)
    groups: dict[tuple[str, str, str | None, str], list[tuple[Any, ...]]] = {}
    for r in rows:
        groups.setdefault((r[0], r[1], r[2], r[3]), []).append(r)
    out = []
    for (scope, cluster, nodepool, resource), pts in groups.items():
        by = "requests" if scope == "cluster" else "usage"
        col = 6 if by == "requests" else 5
        series = [(p[4], p[col], p[7]) for p in pts if p[col] is not None and p[7]]
        if not series:
            continue
        days = np.array([(t - series[0][0]).total_seconds() / 86400 for t, _, _ in series])
        level_series = np.array([v for _, v, _ in series])
        allocatable = float(series[-1][2])
        slope = float(np.polyfit(days, level_series, 1)[0]) if len(series) >= 3 else 0.0
        level = float(level_series[-1])
        big = largest.get((cluster, nodepool if scope == "nodepool" else None, resource), 0.0)
        n1 = max(allocatable - big, 0.0)
        out.append(
            {
                "cluster": cluster,
                "nodepool": nodepool,
                "resource": resource,
                "basis": by,
                "commitment": level / allocatable if by == "requests" else None,
                "utilization": level / allocatable if by == "usage" else None,
                "level": level,
                "allocatable": allocatable,
                "largest_node_allocatable": big,
                "growth_per_day": slope,
            }
        )
        for suffix, capacity in (("", allocatable), ("_n_minus_1", n1)):
            days_left = _days_to(level, slope, HEADROOM_TARGET * capacity)
            out[-1][f"days_to_85{suffix}"] = days_left
            out[-1][f"eta_85{suffix}"] = (
                None if days_left is None else _iso(as_of + timedelta(days=days_left))
            )
    return out


def _largest_nodes(
    con: duckdb.DuckDBPyConnection, as_of: datetime
) -> dict[tuple[str, str | None, str], float]:
    """The largest node allocatable per (cluster, node pool or None, resource) on the last day."""
    rows = con.execute(
        """
        WITH last AS (
            SELECT cluster, nodepool, node, resource, arg_max(allocatable, ts) AS a
            FROM cap_points
            WHERE scope = 'node' AND resource IN ('cpu', 'memory') AND allocatable IS NOT NULL
              AND ts >= ? - INTERVAL 1 DAY AND ts < ?
            GROUP BY ALL
        )
        SELECT cluster, nodepool, resource, max(a) FROM last GROUP BY ALL
        """,
        [as_of, as_of],
    ).fetchall()
    out: dict[tuple[str, str | None, str], float] = {}
    for cluster, nodepool, resource, a in rows:
        out[(cluster, nodepool, resource)] = float(a)
        key = (cluster, None, resource)
        out[key] = max(out.get(key, 0.0), float(a))
    return out
