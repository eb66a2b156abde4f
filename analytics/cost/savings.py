"""Rightsizing with money: what reclaiming each container's excess requests saves a month.

The cluster's average price of a core-hour and of a GiB-hour over the look-back
(analytics.cost.prices.cluster_unit_prices) prices the reclaimable cores and bytes;
docs/metrics.md, "Rightsizing".
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import duckdb

from analytics.capacity.rightsizing import rightsizing
from analytics.cost.prices import GIB, HOURS_PER_MONTH, UnitPrices, cluster_unit_prices
from analytics.readmodel.model import snapshot
from store.prices import PriceTable
from store.settings import Settings


def rightsizing_options(settings: Settings) -> dict[str, Any]:
    """The recommendation's settings as `priced_rightsizing` (and `rightsizing`) take them."""
    return {
        "percentile": settings.rightsizing_cpu_percentile,
        "memory_buffer": settings.rightsizing_memory_buffer,
        "min_cpu_cores": settings.rightsizing_min_cpu_cores,
        "min_memory_bytes": settings.rightsizing_min_memory_bytes,
    }


def monthly_savings(item: dict[str, Any], prices: UnitPrices) -> float | None:
    """(cpu reclaim × CPU price + memory reclaim in GiB × memory price) × 730; None when both
    reclaims or the prices are unknown (one unknown reclaim counts 0)."""
    cpu, mem = item["cpu_reclaim_cores"], item["memory_reclaim_bytes"]
    if (cpu is None and mem is None) or prices.cpu_core_hour is None:
        return None
    if prices.memory_gib_hour is None:
        return None
    hourly = (cpu or 0.0) * prices.cpu_core_hour + (mem or 0.0) / GIB * prices.memory_gib_hour
    return hourly * HOURS_PER_MONTH


def _order(item: dict[str, Any]) -> tuple[Any, ...]:
    savings = item["monthly_savings"]
    return (
        savings is None,
        -(savings or 0.0),
        item["cluster"],
        item["namespace"],
        item["workload"],
        item["container"],
        item["workload_kind"],
    )


def priced_rightsizing(
    con: duckdb.DuckDBPyConnection,
    as_of: datetime,
    lookback: timedelta,
    *,
    table: PriceTable | None,
    w_cpu: float,
    w_mem: float,
    **options: Any,
) -> list[dict[str, Any]]:
    """`rightsizing` (its keyword `options`: percentile, memory_buffer, min_cpu_cores,
    min_memory_bytes, cluster, namespace, workload) with `monthly_savings` and `currency`,
    sorted by savings (unknown last), then cluster, namespace, workload, container."""
    with snapshot(con) as cur:
        items = rightsizing(cur, as_of, lookback, **options)
        prices: dict[str, UnitPrices] = {}
        for item in items:
            cluster = item["cluster"]
            if cluster not in prices:
                prices[cluster] = cluster_unit_prices(
                    cur, cluster, as_of - lookback, as_of, table, w_cpu, w_mem
                )
            unit = prices[cluster]
            item["monthly_savings"] = monthly_savings(item, unit)
            item["currency"] = unit.currency if unit.cpu_core_hour is not None else None
    return sorted(items, key=_order)
