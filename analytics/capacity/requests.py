"""Requests summed from the containers: a daily series per node pool and per cluster.

Pool requests at a timestamp are the sum of the requests of the `wl_values` rows at that
timestamp whose node is in the pool (node metadata at `as_of`); a cluster's are the sum over
all its rows. A day's value is the mean of those sums over the day's timestamps
(docs/metrics.md, "Pool commitment by requests").
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

import duckdb

from analytics.capacity.nodes import NODE_META

#: (cluster, node pool or None for the whole cluster, resource).
Scope = tuple[str, str | None, str]
#: (UTC day start, value) in day order.
Daily = list[tuple[datetime, float]]

_DAILY: Final = f"""
WITH meta AS ({NODE_META}),
r AS (
    SELECT v.cluster, m.nodepool, v.ts, v.cpu_request, v.memory_request
    FROM wl_values v LEFT JOIN meta m ON m.cluster = v.cluster AND m.node = v.node
    WHERE v.ts >= $lo AND v.ts < $hi AND ($cluster::VARCHAR IS NULL OR v.cluster = $cluster)
      AND (v.cpu_request IS NOT NULL OR v.memory_request IS NOT NULL)
),
per_ts AS (
    SELECT cluster, nodepool, grouping(nodepool) AS whole, ts,
        fsum(cpu_request) AS cpu, fsum(memory_request) AS memory
    FROM r
    GROUP BY GROUPING SETS ((cluster, nodepool, ts), (cluster, ts))
)
SELECT cluster, CASE WHEN whole = 0 THEN nodepool END AS nodepool,
    date_trunc('day', ts) AS day, fsum(cpu) / count(cpu) AS cpu,
    fsum(memory) / count(memory) AS memory
FROM per_ts
WHERE whole = 1 OR nodepool IS NOT NULL
GROUP BY ALL
ORDER BY cluster, nodepool NULLS FIRST, day
"""


def day_start(t: datetime) -> datetime:
    """The start of the UTC day holding `t`."""
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def window_days(as_of: datetime, window: timedelta) -> tuple[datetime, datetime]:
    """[lo, hi) holding every timestamp of the days whose start is in [as_of − window, as_of)."""
    lo = as_of - window
    first = day_start(lo) if lo == day_start(lo) else day_start(lo) + timedelta(days=1)
    last = day_start(as_of) if as_of == day_start(as_of) else day_start(as_of) + timedelta(days=1)
    return first, last


def daily_requests(
    con: duckdb.DuckDBPyConnection,
    as_of: datetime,
    window: timedelta = timedelta(days=30),
    cluster: str | None = None,
) -> dict[Scope, Daily]:
    """Per pool and cluster and resource: the daily requests of the window's days, known ones."""
    lo, hi = window_days(as_of, window)
    rows = con.execute(_DAILY, {"at": as_of, "lo": lo, "hi": hi, "cluster": cluster}).fetchall()
    out: dict[Scope, Daily] = {}
    for name, pool, day, cpu, memory in rows:
        for resource, value in (("cpu", cpu), ("memory", memory)):
            if value is not None:
                out.setdefault((name, pool, resource), []).append((day, float(value)))
    return out
