"""Capacity: node and namespace samples rolled up hourly and daily per scope.

The projection and its tables. `analytics.capacity.parts` decodes a page of samples into rows
of the values tables; `analytics.capacity.rollups` computes the node rollups in numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Final

import duckdb
import numpy as np
import pyarrow as pa

from analytics.capacity.parts import (
    DAY_US,
    NAMESPACE,
    NODE,
    Day,
    Kind,
    Page,
    Part,
    all_exact,
    timestamp_literal,
)
from analytics.capacity.rollups import fresh_days, node_grids, stored_rollups
from store.contract import METRIC_SAMPLES
from store.ledger import RecordedEvent

NODE_METRICS: Final = frozenset(
    {
        "node_cpu_usage_cores",
        "node_cpu_allocatable_cores",
        "node_memory_usage_bytes",
        "node_memory_allocatable_bytes",
    }
)
NAMESPACE_METRICS: Final = frozenset(
    {
        "namespace_cpu_usage_cores",
        "namespace_cpu_requests_cores",
        "namespace_memory_usage_bytes",
        "namespace_memory_requests_bytes",
        "namespace_pod_count",
    }
)
LABELS: Final = ("node", "nodepool", "zone", "namespace")


def _values_ddl(kind: Kind) -> str:
    cols = ", ".join(f"{c} DOUBLE" for c in kind.columns)
    return f"CREATE TABLE IF NOT EXISTS {kind.table} (member_id INTEGER, ts TIMESTAMP, {cols})"


_DDL: Final = (
    # A member is a node (cluster, nodepool, node) or a namespace (cluster, namespace).
    """CREATE TABLE IF NOT EXISTS cap_members (
        member_id INTEGER PRIMARY KEY, cluster VARCHAR, nodepool VARCHAR, node VARCHAR,
        namespace VARCHAR)""",
    # The value each series had at each timestamp, the latest recorded one winning: all a
    # recomputation needs, in a quarter of the rows the raw samples would take.
    _values_ddl(NODE),
    _values_ddl(NAMESPACE),
    # One row per folded-in event: evidence that each was applied exactly once.
    "CREATE TABLE IF NOT EXISTS cap_batches (position BIGINT, samples BIGINT)",
    # One row per node pool, cluster or namespace and timestamp: the sums of its members a
    # scope is judged by (docs/metrics.md, "Aggregation"). Node points are the node values
    # themselves (the cap_points view).
    """CREATE TABLE IF NOT EXISTS cap_scope_points (
        cluster VARCHAR, scope VARCHAR, nodepool VARCHAR, namespace VARCHAR,
        resource VARCHAR, ts TIMESTAMP, usage DOUBLE, requests DOUBLE, allocatable DOUBLE)""",
    """CREATE OR REPLACE VIEW cap_points AS
    SELECT cluster, scope, nodepool, NULL::VARCHAR AS node, namespace, resource, ts, usage,
        requests, allocatable
    FROM cap_scope_points
    UNION ALL
    SELECT m.cluster, 'node', m.nodepool, m.node, NULL, 'cpu', v.ts, v.cpu_u, NULL, v.cpu_a
    FROM cap_node_values v JOIN cap_members m USING (member_id)
    WHERE v.cpu_u IS NOT NULL OR v.cpu_a IS NOT NULL
    UNION ALL
    SELECT m.cluster, 'node', m.nodepool, m.node, NULL, 'memory', v.ts, v.mem_u, NULL, v.mem_a
    FROM cap_node_values v JOIN cap_members m USING (member_id)
    WHERE v.mem_u IS NOT NULL OR v.mem_a IS NOT NULL""",
    """CREATE TABLE IF NOT EXISTS cap_rollup (
        step VARCHAR, scope VARCHAR, cluster VARCHAR, nodepool VARCHAR, node VARCHAR,
        namespace VARCHAR, resource VARCHAR, t TIMESTAMP,
        usage_avg DOUBLE, usage_p95 DOUBLE, usage_max DOUBLE, requests_avg DOUBLE,
        allocatable_avg DOUBLE, utilization_avg DOUBLE, utilization_p95 DOUBLE,
        commitment_avg DOUBLE, points INTEGER)""",
)

# How the statements below find the rows of the dirty (cluster, day) pairs: {lo} and {hi} are
# timestamp literals bounding them (so the scan skips other days' row groups) and {days} joins
# _cap_dirty_members (_DIRTY_RECTANGLE when every day in between is dirty, else _DIRTY_DAYS).
_DIRTY_RECTANGLE: Final = "JOIN _cap_dirty_members d ON d.member_id = v.member_id"
_DIRTY_DAYS: Final = (
    "JOIN _cap_dirty_members d ON d.member_id = v.member_id "
    "AND d.day_start = date_trunc('day', v.ts)"
)

# Rebuilds the scope points of the dirty (cluster, day) pairs from the values. A scope sums
# usage only over nodes that also report allocatable at that timestamp, so a late allocatable
# sample cannot push utilisation past 1; allocatable counts every node reporting it. Rows with
# no figure at all (a resource never reported) are not points.
_POINTS: Final = """
INSERT INTO cap_scope_points
WITH pools AS MATERIALIZED (
    SELECT m.cluster, m.nodepool, v.ts,
        sum(v.cpu_u) FILTER (v.cpu_a IS NOT NULL) AS cpu_u,
        sum(v.cpu_a) AS cpu_a,
        sum(v.mem_u) FILTER (v.mem_a IS NOT NULL) AS mem_u,
        sum(v.mem_a) AS mem_a,
        count(v.cpu_u) AS n
    FROM cap_node_values v {days} JOIN cap_members m ON m.member_id = v.member_id
    WHERE v.ts >= {lo} AND v.ts < {hi}
    GROUP BY ALL
),
ns AS MATERIALIZED (
    SELECT m.cluster, m.namespace, v.ts, v.cpu_u, v.cpu_r, v.mem_u, v.mem_r, v.pods
    FROM cap_ns_values v {days} JOIN cap_members m ON m.member_id = v.member_id
    WHERE v.ts >= {lo} AND v.ts < {hi}
),
alloc AS MATERIALIZED (
    SELECT cluster, ts, sum(cpu_u) AS cpu_u, sum(cpu_a) AS cpu_a, sum(mem_u) AS mem_u,
        sum(mem_a) AS mem_a, sum(n) AS n
    FROM pools GROUP BY ALL
),
req AS (
    SELECT cluster, ts, sum(cpu_r) AS cpu_r, sum(mem_r) AS mem_r, sum(pods) AS pods
    FROM ns GROUP BY ALL
),
cl AS MATERIALIZED (
    SELECT coalesce(a.cluster, r.cluster) AS cluster, coalesce(a.ts, r.ts) AS ts,
           a.cpu_u, a.cpu_a, a.mem_u, a.mem_a, a.n, r.cpu_r, r.mem_r, r.pods
    FROM alloc a FULL JOIN req r ON a.cluster = r.cluster AND a.ts = r.ts
)
SELECT * FROM (
SELECT cluster, 'nodepool', nodepool, NULL, 'cpu', ts, cpu_u, NULL, cpu_a FROM pools
UNION ALL
SELECT cluster, 'nodepool', nodepool, NULL, 'memory', ts, mem_u, NULL, mem_a FROM pools
UNION ALL
SELECT cluster, 'nodepool', nodepool, NULL, 'nodes', ts, n, NULL, NULL FROM pools
UNION ALL
SELECT cluster, 'cluster', NULL, NULL, 'cpu', ts, cpu_u, cpu_r, cpu_a FROM cl
UNION ALL
SELECT cluster, 'cluster', NULL, NULL, 'memory', ts, mem_u, mem_r, mem_a FROM cl
UNION ALL
SELECT cluster, 'cluster', NULL, NULL, 'nodes', ts, n, NULL, NULL FROM cl
    WHERE n IS NOT NULL
UNION ALL
SELECT cluster, 'cluster', NULL, NULL, 'pods', ts, pods, NULL, NULL FROM cl
    WHERE pods IS NOT NULL
UNION ALL
SELECT n.cluster, 'namespace', NULL, n.namespace, 'cpu', n.ts, n.cpu_u, n.cpu_r, a.cpu_a
    FROM ns n LEFT JOIN alloc a ON a.cluster = n.cluster AND a.ts = n.ts
UNION ALL
SELECT n.cluster, 'namespace', NULL, n.namespace, 'memory', n.ts, n.mem_u, n.mem_r, a.mem_a
    FROM ns n LEFT JOIN alloc a ON a.cluster = n.cluster AND a.ts = n.ts
UNION ALL
SELECT cluster, 'namespace', NULL, namespace, 'pods', ts, pods, NULL, NULL FROM ns
    WHERE pods IS NOT NULL
) AS p (cluster, scope, nodepool, namespace, resource, ts, usage, requests, allocatable)
WHERE usage IS NOT NULL OR requests IS NOT NULL OR allocatable IS NOT NULL
"""

# Hourly and daily buckets in one pass: grouping sets by (keys, hour) and (keys, day).
_STEP: Final = "CASE WHEN grouping(hour) = 0 THEN '1h' ELSE '1d' END"
_BUCKET: Final = "coalesce(hour, day)"
_BUCKET_COLUMNS: Final = (
    "time_bucket(INTERVAL 1 HOUR, v.ts) AS hour, date_trunc('day', v.ts) AS day"
)

# Scope points are few (a row per pool, cluster or namespace and timestamp): SQL rolls them up.
_SCOPE_ROLLUP: Final = f"""
INSERT INTO cap_rollup
WITH p AS (
    SELECT v.*, {_BUCKET_COLUMNS}
    FROM cap_scope_points v
    WHERE v.ts >= {{lo}} AND v.ts < {{hi}}
        AND EXISTS (SELECT 1 FROM _cap_dirty d
                    WHERE d.cluster = v.cluster AND d.day_start = date_trunc('day', v.ts))
)
SELECT {_STEP}, scope, cluster, nodepool, NULL, namespace, resource, {_BUCKET},
    avg(usage), quantile_cont(usage, 0.95), max(usage), avg(requests), avg(allocatable),
    avg(usage / nullif(allocatable, 0)), quantile_cont(usage / nullif(allocatable, 0), 0.95),
    avg(requests / nullif(allocatable, 0)), count(*)
FROM p
GROUP BY GROUPING SETS ((scope, cluster, nodepool, namespace, resource, hour),
                        (scope, cluster, nodepool, namespace, resource, day))
"""


_INSERT_NODE_ROLLUP: Final = """
INSERT INTO cap_rollup
SELECT r.step, 'node', m.cluster, m.nodepool, m.node, NULL, r.resource, r.t, r.usage_avg,
    r.usage_p95, r.usage_max, NULL, r.allocatable_avg, r.utilization_avg, r.utilization_p95,
    NULL, r.points
FROM _cap_node_rollup r JOIN cap_members m USING (member_id)
"""


class CapacityProjection:
    """Node and namespace samples → values per member and timestamp → scope points → rollups."""

    name = "capacity"
    version = 4
    types: tuple[str, ...] = (METRIC_SAMPLES,)
    batch_events = 200

    def create(self, con: duckdb.DuckDBPyConnection) -> None:
        """Create the capacity tables."""
        for ddl in _DDL:
            con.execute(ddl)

    def drop(self, con: duckdb.DuckDBPyConnection) -> None:
        """Drop the capacity tables (and those of earlier versions)."""
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
        con.execute(f"DROP {'VIEW' if 'cap_points' in views else 'TABLE'} IF EXISTS cap_points")
        for table in (
            "cap_rollup",
            "cap_scope_points",
            "cap_batches",
            NAMESPACE.table,
            NODE.table,
            "cap_samples",
            "cap_members",
        ):
            con.execute(f"DROP TABLE IF EXISTS {table}")

    def apply(self, con: duckdb.DuckDBPyConnection, events: Sequence[RecordedEvent]) -> None:
        """Fold the samples into the values tables, then recompute every (cluster, day) touched."""
        page = Page.read(con, events)
        if page is None:
            return
        node_parts = page.parts(NODE)
        ns_parts = page.parts(NAMESPACE)
        # Days whose node values all arrive with this page are rolled up from its arrays.
        grids = node_grids(node_parts)
        fresh = fresh_days(con, grids)
        grids = [g.restricted(fresh) for g in grids if g.days & fresh]
        dirty = {d for part in (*node_parts, *ns_parts) for d in part.days()}
        with ThreadPoolExecutor(1) as pool:
            # numpy works on the second core while DuckDB stores the page (both drop the GIL).
            rollups = pool.submit(lambda: [t for g in grids for t in g.rollups()])
            _store_values(con, NODE, node_parts)
            _store_values(con, NAMESPACE, ns_parts)
            _log_batches(con, page)
            _recompute(con, dirty, {d for g in grids for d in g.days}, rollups)

    def arrow_page(
        self, con: duckdb.DuckDBPyConnection, events: Sequence[RecordedEvent]
    ) -> pa.Table | None:
        """The page's capacity samples as numeric per-sample columns, members resolved to ids.

        This is the per-sample data `apply` folds in (the benchmark's bulk-insert baseline).
        """
        page = Page.read(con, events)
        return None if page is None else page.samples_table()


def _recompute(
    con: duckdb.DuckDBPyConnection,
    dirty: set[Day],
    covered: set[Day],
    rollups: Future[list[pa.Table]],
) -> None:
    """Rebuild the points and rollups of the dirty (cluster, day start µs) pairs.

    `rollups` brings the node rollups of the `covered` days; the others come from the table.
    """
    days = _dirty_members(con, dirty)
    for table, column in (("cap_scope_points", "ts"), ("cap_rollup", "t")):
        con.execute(
            f"DELETE FROM {table} v WHERE v.{column} >= {{lo}} AND v.{column} < {{hi}} "
            f"AND EXISTS (SELECT 1 FROM _cap_dirty d WHERE d.cluster = v.cluster "
            f"AND d.day_start = date_trunc('day', v.{column}))".format(**days)
        )
    con.execute(_POINTS.format(**days))
    con.execute(_SCOPE_ROLLUP.format(**days))
    stale = dirty - covered
    stored = stored_rollups(con, stale) if stale else None
    tables = rollups.result() + ([] if stored is None else [stored])
    if tables:
        con.register("_cap_node_rollup", pa.concat_tables(tables))
        try:
            con.execute(_INSERT_NODE_ROLLUP)
        finally:
            con.unregister("_cap_node_rollup")
    con.execute("DROP TABLE _cap_dirty")
    con.execute("DROP TABLE _cap_dirty_members")


def _dirty_members(con: duckdb.DuckDBPyConnection, days: set[Day]) -> dict[str, str]:
    """(Re)create _cap_dirty and _cap_dirty_members; returns the {lo}, {hi} and {days} SQL."""
    ordered = sorted(days)
    con.register(
        "_cap_dirty_arrow",
        pa.table(
            {
                "cluster": pa.array([c for c, _ in ordered], pa.string()),
                "day_start": pa.array([d for _, d in ordered], pa.timestamp("us")),
            }
        ),
    )
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE _cap_dirty AS FROM _cap_dirty_arrow")
    finally:
        con.unregister("_cap_dirty_arrow")
    first = min(d for _, d in ordered)
    last = max(d for _, d in ordered)
    clusters = {c for c, _ in ordered}
    rectangle = len(ordered) == len(clusters) * ((last - first) // DAY_US + 1)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _cap_dirty_members AS "
        + (
            "SELECT DISTINCT m.member_id FROM cap_members m JOIN _cap_dirty d USING (cluster)"
            if rectangle
            else "SELECT m.member_id, d.day_start FROM cap_members m JOIN _cap_dirty d "
            "USING (cluster)"
        )
    )
    return {
        "lo": timestamp_literal(first),
        "hi": timestamp_literal(last + DAY_US),
        "days": _DIRTY_RECTANGLE if rectangle else _DIRTY_DAYS,
    }


def _store_values(con: duckdb.DuckDBPyConnection, kind: Kind, parts: Sequence[Part]) -> None:
    """Merge a page's rows into a values table: per column, the highest ledger position wins."""
    if not parts:
        return
    lo = timestamp_literal(min(p.lo for p in parts))
    hi = timestamp_literal(max(p.hi for p in parts))
    cols = ", ".join(kind.columns)
    con.register("_cap_rows", pa.concat_tables([p.table for p in parts]))
    try:
        if all_exact(parts):
            stored = f"SELECT count(*) FROM {kind.table} v WHERE v.ts >= {lo} AND v.ts <= {hi}"
            [(near,)] = con.execute(stored).fetchall()  # row group statistics answer most
            if near:
                [(near,)] = con.execute(
                    f"{stored} AND EXISTS (SELECT 1 FROM _cap_rows n "
                    "WHERE n.member_id = v.member_id AND n.ts = v.ts)"
                ).fetchall()
            if near == 0:  # the usual case: new timestamps, a plain bulk insert
                con.execute(f"INSERT INTO {kind.table} SELECT member_id, ts, {cols} FROM _cap_rows")
                return
            new = f"(SELECT member_id, ts, {cols} FROM _cap_rows)"
        else:
            latest = ", ".join(
                f"arg_max({c}, position) FILTER ({c} IS NOT NULL) AS {c}" for c in kind.columns
            )
            new = f"(SELECT member_id, ts, {latest} FROM _cap_rows GROUP BY member_id, ts)"
        update = ", ".join(f"{c} = coalesce(n.{c}, v.{c})" for c in kind.columns)
        con.execute(
            f"MERGE INTO {kind.table} v USING {new} AS n "
            f"ON v.member_id = n.member_id AND v.ts = n.ts AND v.ts >= {lo} AND v.ts <= {hi} "
            f"WHEN MATCHED THEN UPDATE SET {update} "
            f"WHEN NOT MATCHED THEN INSERT (member_id, ts, {cols}) "
            f"VALUES (n.member_id, n.ts, {', '.join(f'n.{c}' for c in kind.columns)})"
        )
    finally:
        con.unregister("_cap_rows")


def _log_batches(con: duckdb.DuckDBPyConnection, page: Page) -> None:
    """Record each folded-in event's position and capacity sample count."""
    log = pa.table(
        {
            "position": pa.array([ev.position for ev in page.events], pa.int64()),
            "samples": pa.array(
                [
                    int(np.count_nonzero(ev.layout.codes[ev.batch.series_index]))
                    for ev in page.events
                ],
                pa.int64(),
            ),
        }
    )
    con.register("_cap_log", log)
    try:
        con.execute("INSERT INTO cap_batches SELECT * FROM _cap_log")
    finally:
        con.unregister("_cap_log")
