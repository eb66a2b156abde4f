"""Prices: an instance type's hourly price, and a node's price split into CPU and memory.

An instance type's price at T is what Cost Explorer billed for it over the settled days
before T (amount ÷ usage hours), else the configured price table's, else unknown with a
reason. A node's hourly price splits between its cores and its GiB in OpenCost's default
ratio (docs/metrics.md, "Cost of capacity").
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import duckdb

from analytics.capacity.nodes import node_metadata
from analytics.readmodel.model import snapshot
from store.prices import PriceTable

#: Settled Cost Explorer days at T are [T.date − 31, T.date − 2]: it restates the last two.
SETTLED_FIRST: Final = timedelta(days=31)
SETTLED_LAST: Final = timedelta(days=2)
GIB: Final = 2**30
#: Money per month from money per hour.
HOURS_PER_MONTH: Final = 730

# One row per (day, instance type): the one recorded last (Cost Explorer restates days).
_CE_PRICES: Final = """
WITH latest AS (
    SELECT day, instance_type,
        arg_max(amount, position) AS amount,
        arg_max(usage_hours, position) AS hours,
        arg_max(currency, position) AS currency,
        max(position) AS position
    FROM cost_instance_daily
    WHERE day >= ? AND day <= ? AND instance_type IN (SELECT unnest(?::VARCHAR[]))
    GROUP BY day, instance_type
)
SELECT instance_type, fsum(amount), fsum(hours), arg_max(currency, position)
FROM latest GROUP BY instance_type
"""

# Sums are fsum (compensated) so that two identical requests agree to the last bit whatever
# order DuckDB's threads add the rows in (analytics/cost/showback.py).
# The node-hours of [lo, hi) whose hour starts before `cutoff`: a node is present in an hour
# with at least one allocatable CPU sample; c and g are the means of those samples' CPU cores
# and memory GiB. A node is (cluster, node): a changed pool label makes a second member.
NODE_HOURS: Final = """
SELECT m.cluster, m.node, date_trunc('hour', v.ts) AS h,
    fsum(v.cpu_a) / count(*) AS c, fsum(v.mem_a) / count(*) / 1073741824.0 AS g
FROM cap_node_values v JOIN cap_members m ON m.member_id = v.member_id
WHERE v.cpu_a IS NOT NULL AND m.node IS NOT NULL
  AND v.ts >= $lo AND v.ts < $hi AND date_trunc('hour', v.ts) < $cutoff
  AND ($cluster::VARCHAR IS NULL OR m.cluster = $cluster)
GROUP BY ALL
"""


@dataclass(frozen=True)
class Price:
    """An hourly price, where it came from, or why there is none."""

    hourly: float | None
    currency: str | None
    source: str | None  # "cost_explorer" or "price_table"
    reason: str | None


@dataclass(frozen=True)
class UnitPrices:
    """A cluster's average price of a core-hour and of a GiB-hour over a window."""

    cpu_core_hour: float | None
    memory_gib_hour: float | None
    currency: str | None
    reason: str | None


def no_price(instance_type: str) -> str:
    """Why an instance type has no price."""
    return f"no Cost Explorer usage and no price-table entry for {instance_type}"


def instance_prices(
    con: duckdb.DuckDBPyConnection,
    instance_types: Iterable[str],
    at: datetime,
    table: PriceTable | None,
) -> dict[str, Price]:
    """The hourly price of each instance type as of `at` (naive UTC)."""
    types = sorted(set(instance_types))
    if not types:
        return {}
    day = at.date()
    rows = con.execute(_CE_PRICES, [day - SETTLED_FIRST, day - SETTLED_LAST, types]).fetchall()
    billed = {t: (amount, hours, cur) for t, amount, hours, cur in rows}
    out: dict[str, Price] = {}
    for t in types:
        amount, hours, currency = billed.get(t, (None, None, None))
        if amount is not None and hours and hours > 0 and math.isfinite(amount / hours):
            out[t] = Price(amount / hours, currency, "cost_explorer", None)
        elif table is not None and t in table.instance_types:
            out[t] = Price(table.instance_types[t], table.currency, "price_table", None)
        else:
            out[t] = Price(None, None, None, no_price(t))
    return out


def cpu_share(cores: float, gib: float, w_cpu: float, w_mem: float) -> float:
    """The CPU part s of a node's price: c·w_cpu ÷ (c·w_cpu + g·w_mem)."""
    return cores * w_cpu / (cores * w_cpu + gib * w_mem)


def split(
    price: float, cores: float, gib: float, w_cpu: float, w_mem: float
) -> tuple[float, float]:
    """A node's hourly price as (per core-hour, per GiB-hour); cores and GiB must be > 0."""
    s = cpu_share(cores, gib, w_cpu, w_mem)
    return price * s / cores, price * (1 - s) / gib


def node_prices(
    con: duckdb.DuckDBPyConnection,
    nodes: Iterable[tuple[str, str]],
    at: datetime,
    table: PriceTable | None,
) -> dict[tuple[str, str], tuple[str | None, Price]]:
    """(cluster, node) → (instance type, its price at `at`)."""
    meta = node_metadata(con, at)
    kinds = {n: meta[n].instance_type if n in meta else None for n in nodes}
    prices = instance_prices(con, (t for t in kinds.values() if t is not None), at, table)
    out: dict[tuple[str, str], tuple[str | None, Price]] = {}
    for (cluster, node), t in kinds.items():
        if t is None:
            reason = f"no instance type known for node {node} (no node status event names one)"
            out[(cluster, node)] = (None, Price(None, None, None, reason))
        else:
            out[(cluster, node)] = (t, prices[t])
    return out


def priced_nodes_relation(
    prices: dict[tuple[str, str], tuple[str | None, Price]],
) -> dict[str, list[Any]]:
    """Parameters $pc, $pn, $pp: the priced nodes' cluster, node and hourly price as lists."""
    priced = sorted((k, p.hourly) for k, (_, p) in prices.items() if p.hourly is not None)
    return {
        "pc": [k[0] for k, _ in priced],
        "pn": [k[1] for k, _ in priced],
        "pp": [p for _, p in priced],
    }


#: The priced nodes as a relation (cluster, node, p) from the parameters above.
PRICED_NODES: Final = (
    "SELECT unnest($pc::VARCHAR[]) AS cluster, unnest($pn::VARCHAR[]) AS node, "
    "unnest($pp::DOUBLE[]) AS p"
)

# Σ over the priced node-hours of the CPU and memory parts of p, and of c and g.
_UNIT_SUMS: Final = f"""
WITH nh AS ({NODE_HOURS}), priced AS ({PRICED_NODES})
SELECT
    fsum(p * c * $wc / (c * $wc + g * $wm)),
    fsum(p * g * $wm / (c * $wc + g * $wm)),
    fsum(c), fsum(g)
FROM nh JOIN priced USING (cluster, node)
WHERE c > 0 AND g > 0
"""


def currency_of(prices: Iterable[Price]) -> str | None:
    """The currency of the prices (the first in order; amounts are never converted)."""
    return min((p.currency for p in prices if p.currency is not None), default=None)


def cluster_unit_prices(
    con: duckdb.DuckDBPyConnection,
    cluster: str,
    start: datetime,
    end: datetime,
    table: PriceTable | None,
    w_cpu: float,
    w_mem: float,
) -> UnitPrices:
    """A cluster's average CPU price per core-hour and memory price per GiB-hour over [start,
    end): Σ CPU (memory) parts of its priced node-hours ÷ Σ their allocatable core (GiB) hours.

    Prices are those at `end`; node-hours as in showback.
    """
    with snapshot(con) as cur:
        return _unit_prices(cur, cluster, start, end, table, w_cpu, w_mem)


def _unit_prices(
    con: duckdb.DuckDBPyConnection,
    cluster: str,
    start: datetime,
    end: datetime,
    table: PriceTable | None,
    w_cpu: float,
    w_mem: float,
) -> UnitPrices:
    window = {"lo": start, "hi": end, "cutoff": end, "cluster": cluster}
    nodes = con.execute(f"SELECT DISTINCT cluster, node FROM ({NODE_HOURS})", window).fetchall()
    prices = node_prices(con, [(c, n) for c, n in nodes], end, table)
    if not nodes:
        return UnitPrices(None, None, None, f"no node of {cluster} has allocatable samples")
    priced = priced_nodes_relation(prices)
    if not priced["pp"]:
        reasons = sorted({p.reason for _, p in prices.values() if p.reason})
        return UnitPrices(None, None, None, "; ".join(reasons))
    row = con.execute(_UNIT_SUMS, {**window, **priced, "wc": w_cpu, "wm": w_mem}).fetchone()
    cpu, mem, cores, gib = row if row is not None else (None, None, None, None)
    if not cores or not gib:
        return UnitPrices(None, None, None, f"no priced node of {cluster} has allocatable")
    currency = currency_of(p for _, p in prices.values())
    return UnitPrices(cpu / cores, mem / gib, currency, None)
