"""Headroom per cluster and node pool: when usage or requests pass 85 % of allocatable (and of
N-1), whether the requests survive the loss of a zone, and when they reach the NodePool limit.

docs/analytics.md ("Headroom") defines the usage and namespace-requests figures;
docs/metrics.md the others ("Trends and dates", "Pool commitment by requests", "Zone loss",
"NodePool limit date").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import duckdb
import numpy as np

from analytics.capacity.inventory import NodePool, nodepools_at
from analytics.capacity.nodes import NODE_META
from analytics.capacity.requests import Scope, daily_requests
from analytics.readmodel.model import snapshot
from analytics.thresholds import HEADROOM_TARGET

#: The label of the nodes without a zone in `zone_loss.zones`: a group never lost.
NO_ZONE: Final = "null"
_LATEST_DAY: Final = timedelta(days=1)


#: A least-squares slope at most this share of the series' largest value per day is flat.
FLAT: Final = 1e-12


def iso_z(ts: datetime) -> str:
    """A naive UTC instant as `YYYY-MM-DDTHH:MM:SSZ`."""
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def days_to(level: float, slope: float, target: float) -> float | None:
    """Days until a linear trend from `level` reaches `target`: 0 if past, None if never."""
    if level >= target:
        return 0.0
    if slope <= 0:
        return None
    return (target - level) / slope


def eta(as_of: datetime, days: float | None) -> str | None:
    """`as_of` + `days` as an instant; None for None or beyond what a date can hold."""
    if days is None:
        return None
    try:
        return iso_z(as_of + timedelta(days=days))
    except OverflowError:
        return None


def fit(series: Sequence[tuple[datetime, float]]) -> tuple[float, float]:
    """(level, slope per day) of daily values: the last value and the least-squares slope
    over x = days since the first (0 with fewer than three days)."""
    days = np.array([(t - series[0][0]).total_seconds() / 86400 for t, _ in series])
    values = np.array([v for _, v in series])
    slope = float(np.polyfit(days, values, 1)[0]) if len(series) >= 3 else 0.0
    # A flat series fits a slope of rounding noise (±1e-15 of its level) instead of 0, which
    # would forecast a threshold 10^15 days out: below that noise a trend is flat.
    if abs(slope) <= FLAT * float(np.max(np.abs(values))):
        slope = 0.0
    return float(values[-1]), slope


def headroom(
    con: duckdb.DuckDBPyConnection,
    as_of: datetime,
    window: timedelta = timedelta(days=30),
    cluster: str | None = None,
) -> list[dict[str, Any]]:
    """Per cluster and node pool and resource: commitment now and when usage or requests pass
    85 %; zone loss and the NodePool limit (docs/metrics.md).

    `basis` says what `level` is: a cluster's namespace requests, a node pool's usage.
    N-1 removes the pool's (or cluster's) largest node's allocatable. `cluster`: only its items.
    """
    with snapshot(con):
        rows = con.execute(
            """
            SELECT scope, cluster, nodepool, resource, t, usage_avg, requests_avg,
                allocatable_avg
            FROM cap_rollup
            WHERE step = '1d' AND scope IN ('cluster', 'nodepool')
              AND resource IN ('cpu', 'memory') AND t >= ? AND t < ?
              AND (?::VARCHAR IS NULL OR cluster = ?)
            ORDER BY scope, cluster, nodepool, resource, t
            """,
            [as_of - window, as_of, cluster, cluster],
        ).fetchall()
        largest = _largest_nodes(con, as_of)
        requests = daily_requests(con, as_of, window, cluster)
        zones = _zone_allocatable(con, as_of, cluster)
        pools = nodepools_at(con, as_of)
    groups: dict[tuple[str, str, str | None, str], list[tuple[Any, ...]]] = {}
    for r in rows:
        groups.setdefault((r[0], r[1], r[2], r[3]), []).append(r)
    out = []
    for (scope, name, nodepool, resource), pts in groups.items():
        by = "requests" if scope == "cluster" else "usage"
        col = 6 if by == "requests" else 5
        series = [(p[4], p[col], p[7]) for p in pts if p[col] is not None and p[7]]
        if not series:
            continue
        level, slope = fit([(t, v) for t, v, _ in series])
        allocatable = float(series[-1][2])
        key: Scope = (name, nodepool if scope == "nodepool" else None, resource)
        big = largest.get(key, 0.0)
        n1 = max(allocatable - big, 0.0)
        item: dict[str, Any] = {
            "cluster": name,
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
        for suffix, capacity in (("", allocatable), ("_n_minus_1", n1)):
            days_left = days_to(level, slope, HEADROOM_TARGET * capacity)
            item[f"days_to_85{suffix}"] = days_left
            item[f"eta_85{suffix}"] = eta(as_of, days_left)
        daily = requests.get(key)
        if daily is None and scope == "cluster":
            # No container requests: the namespaces' requests, the cluster's level above.
            daily = [(t, v) for t, v, _ in series]
        trend = fit(daily) if daily else None
        item.update(_by_requests(as_of, trend, allocatable, n1))
        item["zone_loss"] = _zone_loss(zones.get(key), item["requests"])
        pool = None if nodepool is None else pools.get((name, nodepool))
        item["nodepool_limit"] = _limit(as_of, pool, resource, trend)
        out.append(item)
    return out


def _by_requests(
    as_of: datetime, trend: tuple[float, float] | None, allocatable: float, n1: float
) -> dict[str, Any]:
    """The requests fields of an item: level, commitment, trend and days to 85 %."""
    if trend is None:
        return {
            "requests": None,
            "commitment_by_requests": None,
            "requests_growth_per_day": None,
            **{
                f"{f}_85_by_requests{s}": None
                for f in ("days_to", "eta")
                for s in ("", "_n_minus_1")
            },
        }
    level, slope = trend
    out: dict[str, Any] = {
        "requests": level,
        "commitment_by_requests": level / allocatable,
        "requests_growth_per_day": slope,
    }
    for suffix, capacity in (("", allocatable), ("_n_minus_1", n1)):
        days_left = days_to(level, slope, HEADROOM_TARGET * capacity)
        out[f"days_to_85_by_requests{suffix}"] = days_left
        out[f"eta_85_by_requests{suffix}"] = eta(as_of, days_left)
    return out


def _zone_loss(zones: dict[str | None, float] | None, requests: float | None) -> Any:
    """Allocatable per zone and what is left without the largest (None without nodes)."""
    if not zones:
        return None
    named = {z: a for z, a in zones.items() if z is not None}
    largest = min(named, key=lambda z: (-named[z], z)) if named else None
    lost = named[largest] if largest is not None else 0.0
    # fsum: the zones come in whatever order the query grouped them, and a plain sum's last
    # bits would follow that order.
    without = math.fsum(zones.values()) - lost
    return {
        "zones": {
            NO_ZONE if z is None else z: a
            for z, a in sorted(zones.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))
        },
        "largest_zone": largest,
        "largest_zone_allocatable": lost,
        "allocatable_without_largest_zone": without,
        "commitment_without_largest_zone": (
            requests / without if requests is not None and without else None
        ),
        "survives": None if requests is None else requests <= without,
    }


def _limit(
    as_of: datetime, pool: NodePool | None, resource: str, trend: tuple[float, float] | None
) -> dict[str, Any] | None:
    """When the pool's requests reach its NodePool's limit (None: no NodePool or no limit)."""
    limit = None if pool is None else pool.cpu_limit if resource == "cpu" else pool.memory_limit
    if limit is None:
        return None
    days = None if trend is None else days_to(trend[0], trend[1], limit)
    return {"limit": limit, "days_to_limit": days, "eta_limit": eta(as_of, days)}


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


# Each node's latest allocatable of the last day, summed per zone (metadata at $at), per pool
# and per cluster; a node seen in two pools counts once in its cluster, with its latest value.
_ZONES: Final = f"""
WITH meta AS ({NODE_META}),
last AS (
    SELECT cluster, nodepool, node, resource, arg_max(allocatable, ts) AS a, max(ts) AS t
    FROM cap_points
    WHERE scope = 'node' AND resource IN ('cpu', 'memory') AND allocatable IS NOT NULL
      AND ts >= $lo AND ts < $at AND ($cluster::VARCHAR IS NULL OR cluster = $cluster)
    GROUP BY ALL
),
nodes AS (
    SELECT cluster, nodepool, node, resource, a FROM last
    UNION ALL
    SELECT cluster, NULL, node, resource, arg_max(a, t) FROM last GROUP BY cluster, node, resource
)
SELECT n.cluster, n.nodepool, n.resource, m.zone, fsum(n.a)
FROM nodes n LEFT JOIN meta m ON m.cluster = n.cluster AND m.node = n.node
GROUP BY ALL
"""


def _zone_allocatable(
    con: duckdb.DuckDBPyConnection, as_of: datetime, cluster: str | None
) -> dict[Scope, dict[str | None, float]]:
    """Allocatable per zone (None: nodes without one) per (cluster, pool or None, resource)."""
    out: dict[Scope, dict[str | None, float]] = {}
    for name, pool, resource, zone, a in con.execute(
        _ZONES, {"at": as_of, "lo": as_of - _LATEST_DAY, "cluster": cluster}
    ).fetchall():
        out.setdefault((name, pool, resource), {})[zone] = float(a)
    return out
