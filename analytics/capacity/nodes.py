"""Node metadata at an instant: each node's node pool, zone and instance type.

The latest `opsledger.k8s.node.status` at or before the instant decides (table `node_status`);
a node no status event describes takes the latest labels of its `node_*` series (`wl_nodes`).
The instance type comes only from node status.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

import duckdb

#: A query of (cluster, node, nodepool, zone, instance_type) at `$at`: embed it as a CTE.
NODE_META: Final = """
SELECT coalesce(st.cluster, lb.cluster) AS cluster, coalesce(st.node, lb.node) AS node,
    CASE WHEN st.node IS NOT NULL THEN st.nodepool ELSE lb.nodepool END AS nodepool,
    CASE WHEN st.node IS NOT NULL THEN st.zone ELSE lb.zone END AS zone,
    st.instance_type AS instance_type
FROM (
    SELECT cluster, node, nodepool, zone, instance_type
    FROM node_status
    WHERE ts <= $at AND node IS NOT NULL AND cluster IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY cluster, node ORDER BY ts DESC, position DESC) = 1
) st
FULL JOIN (
    -- arg_max skips NULLs: each label is the latest one a series carried.
    SELECT cluster, node, arg_max(nodepool, ts) AS nodepool, arg_max(zone, ts) AS zone
    FROM wl_nodes WHERE ts <= $at GROUP BY cluster, node
) lb ON st.cluster = lb.cluster AND st.node = lb.node
"""


@dataclass(frozen=True, slots=True)
class NodeMeta:
    """What is known of a node at an instant."""

    nodepool: str | None
    zone: str | None
    instance_type: str | None


def node_metadata(
    con: duckdb.DuckDBPyConnection, at: datetime, cluster: str | None = None
) -> dict[tuple[str, str], NodeMeta]:
    """(cluster, node) → its metadata at `at` (naive UTC), for every node known by then."""
    rows = con.execute(
        f"SELECT * FROM ({NODE_META}) WHERE $cluster::VARCHAR IS NULL OR cluster = $cluster",
        {"at": at, "cluster": cluster},
    ).fetchall()
    return {(c, n): NodeMeta(p, z, t) for c, n, p, z, t in rows}
