"""Showback: each node-hour's price shared among the containers that held its capacity.

docs/metrics.md, "Showback": a node present in an hour costs its instance type's hourly price;
each container sample on it is charged its allocation (the larger of request and usage) at
the node's CPU and memory prices, over the cluster's container samples in that hour; what is
left of the node-hour is the cluster's idle.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final, Literal

import duckdb

from analytics.capacity.nodes import NODE_META
from analytics.cost.prices import (
    NODE_HOURS,
    PRICED_NODES,
    Price,
    currency_of,
    node_prices,
    priced_nodes_relation,
)
from analytics.readmodel.model import snapshot
from store.prices import PriceTable
from store.timefmt import naive_iso

By = Literal["namespace", "nodepool", "workload"]
#: The columns naming an item, per `by`.
KEYS: Final[dict[str, tuple[str, ...]]] = {
    "namespace": ("namespace",),
    "nodepool": ("nodepool",),
    "workload": ("namespace", "workload_kind", "workload"),
}
#: How many causes an item's reason names before "and N more".
_MAX_CAUSES: Final = 3

# Sums are fsum (Kahan-Babuska): DuckDB adds a group's rows in whatever order its threads
# meet them, and a plain sum's last bits would then differ between two identical requests.
# The container samples of the window, summed per item key, node and hour: allocation is the
# larger of request and usage (an unknown one counts 0), memory in GiB.
_ROWS: Final = """
SELECT w.cluster, {keys}, w.node, date_trunc('hour', w.ts) AS h,
    fsum(greatest(coalesce(w.cpu_request, 0), coalesce(w.cpu_usage, 0))) AS cpu,
    fsum(greatest(coalesce(w.memory_request, 0), coalesce(w.memory_usage, 0)))
        / 1073741824.0 AS mem,
    count(*) AS n
FROM wl_values w {join}
WHERE w.ts >= $lo AND w.ts < $hi AND date_trunc('hour', w.ts) < $cutoff
  AND ($cluster::VARCHAR IS NULL OR w.cluster = $cluster)
GROUP BY ALL
"""
# M: the cluster's container sampling grid in each hour.
_GRID: Final = """
SELECT cluster, date_trunc('hour', ts) AS h, count(DISTINCT ts) AS m
FROM wl_values
WHERE ts >= $lo AND ts < $hi AND date_trunc('hour', ts) < $cutoff
  AND ($cluster::VARCHAR IS NULL OR cluster = $cluster)
GROUP BY ALL
"""
# Every node-hour with its price p (NULL: unpriced) and, when it has allocatable CPU and
# memory, its prices per core-hour and GiB-hour and the CPU and memory parts of p.
_NODE_HOUR_PRICES: Final = f"""
SELECT nh.cluster, nh.node, nh.h, pr.p,
    CASE WHEN nh.c > 0 AND nh.g > 0 THEN pr.p * nh.c * $wc / (nh.c * $wc + nh.g * $wm) END
        AS cpu_part,
    CASE WHEN nh.c > 0 AND nh.g > 0 THEN pr.p * nh.g * $wm / (nh.c * $wc + nh.g * $wm) END
        AS mem_part,
    cpu_part / nh.c AS cpu_price, mem_part / nh.g AS mem_price
FROM ({NODE_HOURS}) nh LEFT JOIN ({PRICED_NODES}) pr USING (cluster, node)
"""
# Per item: the cost of its costed samples, and the causes of the others.
_ITEMS: Final = f"""
WITH n AS MATERIALIZED ({_NODE_HOUR_PRICES}),
meta AS ({NODE_META}),
grid AS ({_GRID}),
r AS ({{rows}})
SELECT r.cluster, {{item_keys}},
    fsum(r.cpu / grid.m * n.cpu_price) FILTER (n.cpu_price IS NOT NULL) AS cpu_cost,
    fsum(r.mem / grid.m * n.mem_price) FILTER (n.cpu_price IS NOT NULL) AS mem_cost,
    coalesce(sum(r.n) FILTER (n.cpu_price IS NULL), 0) AS uncosted,
    list(DISTINCT [
        CASE WHEN r.node IS NULL THEN 'label' WHEN n.node IS NULL THEN 'absent'
             WHEN n.p IS NULL THEN 'unpriced' ELSE 'split' END,
        coalesce(r.node, '')]) FILTER (n.cpu_price IS NULL) AS causes
FROM r JOIN grid ON grid.cluster = r.cluster AND grid.h = r.h
LEFT JOIN n ON n.cluster = r.cluster AND n.node = r.node AND n.h = r.h
GROUP BY ALL
"""
# Per cluster: the cost of its priced node-hours that have allocatable CPU and memory.
_TOTALS: Final = f"""
SELECT cluster, fsum(p), fsum(cpu_part), fsum(mem_part)
FROM ({_NODE_HOUR_PRICES}) WHERE cpu_part IS NOT NULL GROUP BY cluster
"""


def month_window(month: str, now: datetime) -> tuple[datetime, datetime, datetime]:
    """[start, end) of `month` (YYYY-MM) and T = min(end, now), all naive UTC."""
    year, mon = int(month[:4]), int(month[5:7])
    start = datetime(year, mon, 1)
    end = start + timedelta(days=calendar.monthrange(year, mon)[1])
    return start, end, min(end, now)


def showback(
    con: duckdb.DuckDBPyConnection,
    month: str,
    by: By,
    now: datetime,
    table: PriceTable | None,
    w_cpu: float,
    w_mem: float,
    cluster: str | None = None,
) -> dict[str, Any]:
    """The cost of `month`'s hours before `now` (naive UTC) per item of `by`, and idle."""
    with snapshot(con) as cur:
        return _showback(cur, month, by, now, table, w_cpu, w_mem, cluster)


def _showback(
    con: duckdb.DuckDBPyConnection,
    month: str,
    by: By,
    now: datetime,
    table: PriceTable | None,
    w_cpu: float,
    w_mem: float,
    cluster: str | None,
) -> dict[str, Any]:
    start, end, at = month_window(month, now)
    window = {"lo": start, "hi": end, "cutoff": at, "cluster": cluster}
    present = con.execute(f"SELECT DISTINCT cluster, node FROM ({NODE_HOURS})", window).fetchall()
    prices = node_prices(con, [(c, n) for c, n in present], at, table)
    params = {**window, **priced_nodes_relation(prices), "wc": w_cpu, "wm": w_mem}
    keys = KEYS[by]
    found = con.execute(_items_sql(keys), {**params, "at": at}).fetchall()
    totals = {r[0]: r[1:] for r in con.execute(_TOTALS, params).fetchall()}
    clusters = sorted({c for c, _ in present} | {r[0] for r in found})
    items = [_item(r, keys, prices) for r in found]
    attributed: dict[str, list[float]] = {}
    for r in found:
        sums = attributed.setdefault(r[0], [0.0, 0.0])
        sums[0] += r[len(keys) + 1] or 0.0
        sums[1] += r[len(keys) + 2] or 0.0
    out_totals = []
    for c in clusters:
        cost, cpu_part, mem_part = totals.get(c, (None, None, None))
        if cost is not None:
            cpu_idle = cpu_part - attributed.get(c, [0.0, 0.0])[0]
            mem_idle = mem_part - attributed.get(c, [0.0, 0.0])[1]
            idle = {k: None for k in keys} | {"cpu_cost": cpu_idle, "memory_cost": mem_idle}
            items.append(
                {"cluster": c, **idle, "idle": True, "cost": cpu_idle + mem_idle, "reason": None}
            )
        own = [(k, p) for k, p in prices.items() if k[0] == c]
        out_totals.append(
            {
                "cluster": c,
                "cost": cost,
                "currency": currency_of(p for _, (_, p) in own),
                "unpriced": [
                    {"node": k[1], "instance_type": t, "reason": p.reason}
                    for k, (t, p) in sorted(own)
                    if p.hourly is None
                ],
            }
        )
    by_cluster = {t["cluster"]: t["cost"] for t in out_totals}
    for item in items:
        whole = by_cluster.get(item["cluster"])
        item["share"] = item["cost"] / whole if item["cost"] is not None and whole else None
    items.sort(key=lambda i: _order(i, keys))
    return {
        "month": month,
        "by": by,
        "cluster": cluster,
        "as_of": naive_iso(at),
        "currency": currency_of(p for _, p in prices.values()),
        "items": items,
        "totals": out_totals,
    }


def _items_sql(keys: tuple[str, ...]) -> str:
    if keys == ("nodepool",):
        # The node's pool as known at T.
        rows = _ROWS.format(
            keys="meta.nodepool",
            join="LEFT JOIN meta ON meta.cluster = w.cluster AND meta.node = w.node",
        )
    else:
        rows = _ROWS.format(keys=", ".join(f"w.{k}" for k in keys), join="")
    return _ITEMS.format(rows=rows, item_keys=", ".join(f"r.{k}" for k in keys))


def _item(
    row: Sequence[Any],
    keys: tuple[str, ...],
    prices: dict[tuple[str, str], tuple[str | None, Price]],
) -> dict[str, Any]:
    cluster, names = row[0], row[1 : len(keys) + 1]
    cpu, mem, uncosted, causes = row[len(keys) + 1 :]
    item: dict[str, Any] = {"cluster": cluster, **dict(zip(keys, names, strict=True))}
    item["idle"] = False
    if uncosted:
        # Never a guess: an item with any sample that cannot be costed has no cost.
        why = [_cause(cluster, kind, node, prices) for kind, node in sorted(causes)]
        more = f"; and {len(why) - _MAX_CAUSES} more" if len(why) > _MAX_CAUSES else ""
        reason = (
            f"{uncosted} container sample(s) not costed: " + "; ".join(why[:_MAX_CAUSES]) + more
        )
        item.update(cpu_cost=None, memory_cost=None, cost=None, reason=reason)
    else:
        item.update(cpu_cost=cpu or 0.0, memory_cost=mem or 0.0, reason=None)
        item["cost"] = item["cpu_cost"] + item["memory_cost"]
    return item


def _cause(
    cluster: str, kind: str, node: str, prices: dict[tuple[str, str], tuple[str | None, Price]]
) -> str:
    if kind == "label":
        return "samples without a node label"
    if kind == "absent":
        return f"node {node} has no allocatable samples in some of their hours"
    if kind == "unpriced":
        reason = prices[(cluster, node)][1].reason
        return f"node {node} is unpriced: {reason}"
    return f"node {node} has no allocatable CPU or memory in some of their hours"


def _order(item: dict[str, Any], keys: tuple[str, ...]) -> tuple[Any, ...]:
    cost = item["cost"]
    names = tuple(item[k] or "" for k in keys)
    return (cost is None, -(cost or 0.0), item["cluster"], item["idle"], names)
