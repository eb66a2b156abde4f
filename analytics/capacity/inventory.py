"""Inventory: the history of each cluster's NodePools and subnets, as their status events say.

At an instant T the state of a NodePool or subnet is its latest event with ts ≤ T (ties: the
later recorded); a deleted one no longer exists (docs/analytics.md, "Inventory").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import duckdb

from analytics.readmodel.model import insert_rows
from store.event_types import EventType
from store.ledger import RecordedEvent
from store.timefmt import us_to_naive

_DDL: Final = (
    """CREATE TABLE IF NOT EXISTS k8s_nodepools (
        cluster VARCHAR, nodepool VARCHAR, deleted BOOLEAN, cpu_limit DOUBLE,
        memory_limit DOUBLE, cpu_resources DOUBLE, memory_resources DOUBLE, nodes BIGINT,
        zones VARCHAR, ts TIMESTAMP, position BIGINT)""",
    """CREATE TABLE IF NOT EXISTS net_subnets (
        cluster VARCHAR, subnet_id VARCHAR, vpc_id VARCHAR, zone VARCHAR, cidr VARCHAR,
        available_ips BIGINT, total_ips BIGINT, deleted BOOLEAN, ts TIMESTAMP,
        position BIGINT)""",
)
_TABLES: Final = ("k8s_nodepools", "net_subnets")


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def nodepool_row(ev: RecordedEvent, d: Mapping[str, Any]) -> tuple[Any, ...]:
    """One k8s_nodepools row."""
    limits, resources = _obj(d.get("limits")), _obj(d.get("resources"))
    zones = d.get("zones")
    return (
        ev.cluster,
        d.get("nodepool"),
        bool(d.get("deleted", False)),
        limits.get("cpu_cores"),
        limits.get("memory_bytes"),
        resources.get("cpu_cores"),
        resources.get("memory_bytes"),
        resources.get("nodes"),
        ",".join(zones) if isinstance(zones, list) else None,
        us_to_naive(ev.time_us),
        ev.position,
    )


def subnet_row(ev: RecordedEvent, d: Mapping[str, Any]) -> tuple[Any, ...]:
    """One net_subnets row."""
    return (
        ev.cluster,
        d.get("subnet_id"),
        d.get("vpc_id"),
        d.get("zone"),
        d.get("cidr"),
        d.get("available_ips"),
        d.get("total_ips"),
        bool(d.get("deleted", False)),
        us_to_naive(ev.time_us),
        ev.position,
    )


class InventoryProjection:
    """NodePool and subnet status events, one row each."""

    name = "inventory"
    version = 1
    types: tuple[str, ...] = (EventType.K8S_NODEPOOL_STATUS, EventType.SUBNET_STATUS)
    batch_events = 2000

    def create(self, con: duckdb.DuckDBPyConnection) -> None:
        """Create the inventory tables."""
        for ddl in _DDL:
            con.execute(ddl)

    def drop(self, con: duckdb.DuckDBPyConnection) -> None:
        """Drop the inventory tables."""
        for table in _TABLES:
            con.execute(f"DROP TABLE IF EXISTS {table}")

    def apply(self, con: duckdb.DuckDBPyConnection, events: Sequence[RecordedEvent]) -> None:
        """Append a row per event of the page."""
        pools, subnets = [], []
        for ev in events:
            if ev.data is None:
                continue
            if ev.type == EventType.K8S_NODEPOOL_STATUS:
                pools.append(nodepool_row(ev, ev.data))
            elif ev.type == EventType.SUBNET_STATUS:
                subnets.append(subnet_row(ev, ev.data))
        insert_rows(con, "k8s_nodepools", pools)
        insert_rows(con, "net_subnets", subnets)


@dataclass(frozen=True, slots=True)
class NodePool:
    """A NodePool object as of an instant; limits in cores and bytes (None: no limit)."""

    cpu_limit: float | None
    memory_limit: float | None


def nodepools_at(con: duckdb.DuckDBPyConnection, at: datetime) -> dict[tuple[str, str], NodePool]:
    """(cluster, nodepool) → the NodePool at `at`; deleted ones are left out."""
    rows = con.execute(
        """
        SELECT cluster, nodepool, cpu_limit, memory_limit FROM (
            SELECT * FROM k8s_nodepools WHERE ts <= ?
            QUALIFY row_number() OVER (
                PARTITION BY cluster, nodepool ORDER BY ts DESC, position DESC) = 1
        ) WHERE NOT deleted
        """,
        [at],
    ).fetchall()
    return {(c, p): NodePool(cpu, mem) for c, p, cpu, mem in rows}


#: The subnets at `$at` that are not deleted, a row each (cluster, subnet_id, vpc_id, zone,
#: cidr, available_ips, total_ips, ts).
SUBNETS_AT: Final = """
SELECT cluster, subnet_id, vpc_id, zone, cidr, available_ips, total_ips, ts FROM (
    SELECT * FROM net_subnets WHERE ts <= $at
    QUALIFY row_number() OVER (PARTITION BY cluster, subnet_id ORDER BY ts DESC, position DESC) = 1
) WHERE NOT deleted
"""
