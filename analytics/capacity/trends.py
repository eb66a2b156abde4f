"""Queries over the capacity rollups: trend series per scope."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal

import duckdb

Resource = Literal["cpu", "memory", "pods", "nodes"]
Scope = Literal["cluster", "nodepool", "node", "namespace"]
Step = Literal["1h", "1d"]

POINT_FIELDS: Final = (
    "usage_avg",
    "usage_p95",
    "usage_max",
    "requests_avg",
    "allocatable_avg",
    "utilization_avg",
    "utilization_p95",
    "commitment_avg",
)
_KEY_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "cluster": ("cluster",),
    "nodepool": ("cluster", "nodepool"),
    "node": ("cluster", "nodepool", "node"),
    "namespace": ("cluster", "namespace"),
}


def trends(
    con: duckdb.DuckDBPyConnection,
    metric: Resource,
    scope: Scope,
    step: Step,
    start: datetime,
    end: datetime,
    cluster: str | None = None,
) -> list[dict[str, Any]]:
    """Rollup points in [start, end) (naive UTC), one series per scope member."""
    sql = (
        "SELECT cluster, nodepool, node, namespace, t, "
        + ", ".join(POINT_FIELDS)
        + " FROM cap_rollup WHERE step = ? AND scope = ? AND resource = ? AND t >= ? AND t < ?"
    )
    params: list[Any] = [step, scope, metric, start, end]
    if cluster is not None:
        sql += " AND cluster = ?"
        params.append(cluster)
    sql += " ORDER BY cluster, nodepool NULLS FIRST, node NULLS FIRST, namespace NULLS FIRST, t"
    rows = con.execute(sql, params).fetchall()
    series: list[dict[str, Any]] = []
    current: tuple[Any, ...] | None = None
    names = _KEY_FIELDS[scope]
    for row in rows:
        ident = row[:4]
        if ident != current:
            current = ident
            members = dict(zip(("cluster", "nodepool", "node", "namespace"), ident, strict=True))
            series.append({"key": {k: members[k] for k in names}, "points": []})
        point: dict[str, Any] = {"t": row[4].strftime("%Y-%m-%dT%H:%M:%SZ")}
        point.update(zip(POINT_FIELDS, row[5:], strict=True))
        series[-1]["points"].append(point)
    return series
