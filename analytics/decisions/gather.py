"""One ranked list of actions for a month: every rule of decisions.actions, as of its end."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import duckdb

from analytics.capacity.headroom import headroom
from analytics.capacity.network import ip_headroom
from analytics.capacity.nodes import NODE_META
from analytics.cost.forecast import forecast, month_bounds
from analytics.cost.prices import instance_prices
from analytics.cost.savings import priced_rightsizing
from analytics.decisions import actions
from analytics.readmodel.model import snapshot
from analytics.storage.projection import forecasts, month_end_forecasts
from store.prices import PriceTable, load_price_table
from store.settings import Settings


@dataclass(frozen=True, slots=True)
class Policy:
    """What the rules are judged with: the settings that shape decisions."""

    horizon_days: float
    min_savings: float
    lookback: timedelta
    percentile: float
    memory_buffer: float
    min_cpu_cores: float
    min_memory_bytes: float
    prices: PriceTable | None
    w_cpu: float
    w_mem: float


def policy_of(settings: Settings) -> Policy:
    """The rules' settings; raises store.prices.PriceTableError when the price table is bad."""
    return Policy(
        horizon_days=settings.decisions_horizon_days,
        min_savings=settings.decisions_min_monthly_savings,
        lookback=timedelta(days=settings.rightsizing_lookback_days),
        percentile=settings.rightsizing_cpu_percentile,
        memory_buffer=settings.rightsizing_memory_buffer,
        min_cpu_cores=settings.rightsizing_min_cpu_cores,
        min_memory_bytes=settings.rightsizing_min_memory_bytes,
        prices=load_price_table(settings.price_table_file),
        w_cpu=settings.cost_cpu_core_hour_weight,
        w_mem=settings.cost_memory_gib_hour_weight,
    )


# The largest node (by the resource's allocatable on the last day) of each pool and cluster, and
# its instance type: an expansion adds nodes like it.
_LARGEST: Final = f"""
WITH meta AS ({NODE_META}),
last AS (
    SELECT cluster, nodepool, node, resource, arg_max(allocatable, ts) AS a
    FROM cap_points
    WHERE scope = 'node' AND resource IN ('cpu', 'memory') AND allocatable IS NOT NULL
      AND ts >= $at - INTERVAL 1 DAY AND ts < $at
    GROUP BY ALL
),
typed AS (
    SELECT l.cluster, l.nodepool, l.resource, l.node, l.a, m.instance_type
    FROM last l LEFT JOIN meta m ON m.cluster = l.cluster AND m.node = l.node
)
SELECT cluster, nodepool, resource, arg_max(instance_type, (a, node)) FROM typed GROUP BY ALL
UNION ALL
SELECT cluster, NULL, resource, arg_max(instance_type, (a, node)) FROM typed GROUP BY ALL
"""


def month_as_of(month: str, now: datetime) -> datetime:
    """A month is judged as of its end, or now while it runs."""
    _, last = month_bounds(month)
    end = datetime.combine(last + timedelta(days=1), datetime.min.time())
    return min(end, now)


def rightsized(
    con: duckdb.DuckDBPyConnection, as_of: datetime, policy: Policy, cluster: str | None
) -> list[dict[str, Any]]:
    """Every container's rightsizing, priced, over the policy's look-back ending at `as_of`."""
    return priced_rightsizing(
        con,
        as_of,
        policy.lookback,
        percentile=policy.percentile,
        memory_buffer=policy.memory_buffer,
        min_cpu_cores=policy.min_cpu_cores,
        min_memory_bytes=policy.min_memory_bytes,
        cluster=cluster,
        table=policy.prices,
        w_cpu=policy.w_cpu,
        w_mem=policy.w_mem,
    )


def decisions(
    con: duckdb.DuckDBPyConnection,
    month: str,
    as_of: datetime,
    policy: Policy,
    cluster: str | None = None,
    rightsizing: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The month's ranked actions as of `as_of` (naive UTC), in one snapshot of the read model.

    `rightsizing`: `rightsized(con, as_of, policy, cluster)` when the caller has it already.
    """
    with snapshot(con) as cur:
        if rightsizing is None:
            rightsizing = rightsized(cur, as_of, policy, cluster)
        return _decisions(cur, month, as_of, policy, cluster, rightsizing)


def _decisions(
    con: duckdb.DuckDBPyConnection,
    month: str,
    as_of: datetime,
    policy: Policy,
    cluster: str | None,
    rs: list[dict[str, Any]],
) -> dict[str, Any]:
    rooms = headroom(con, as_of, cluster=cluster)
    price_of = _pricer(con, as_of, policy.prices)
    found: list[actions.Action] = []
    found += actions.reclaims(rs, as_of, policy.min_savings)
    expand = actions.expansions(rooms, price_of, policy.horizon_days, as_of)
    found += expand
    found += actions.limits(rooms, policy.horizon_days, as_of)
    found += actions.zones(rooms, price_of)
    found += actions.subnets(
        ip_headroom(con, as_of, cluster=cluster)["zones"], policy.horizon_days, as_of
    )
    table = policy.prices
    found += actions.pvcs(
        _pvc_forecasts(con, as_of, cluster),
        None if table is None else table.storage_gib_month,
        None if table is None else table.currency,
        policy.horizon_days,
        as_of,
    )
    spend = forecast(
        con,
        month,
        as_of,
        [{"target": a.target, "monthly_cost": a.monthly_cost} for a in expand],
    )
    found += actions.budget(spend, month_bounds(month)[1])
    return {
        "month": month,
        "as_of": as_of.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "horizon_days": policy.horizon_days,
        "items": actions.ranked(found),
    }


def _pvc_forecasts(
    con: duckdb.DuckDBPyConnection, as_of: datetime, cluster: str | None
) -> list[dict[str, Any]]:
    """The PVC forecasts as of `as_of`: at a month's end, those the report shows (samples
    before the boundary, kept by the storage projection), so both give the same answer."""
    if as_of == datetime(as_of.year, as_of.month, 1):
        return month_end_forecasts(con, as_of, cluster)
    return forecasts(con, as_of, cluster=cluster)


def _pricer(
    con: duckdb.DuckDBPyConnection, as_of: datetime, table: PriceTable | None
) -> actions.PriceOf:
    """The hourly price of the node an expansion of (cluster, pool, resource) would add."""
    rows = con.execute(_LARGEST, {"at": as_of}).fetchall()
    kinds = {(c, p, r): t for c, p, r, t in rows}
    prices = instance_prices(con, (t for t in kinds.values() if t is not None), as_of, table)

    def price_of(cluster: str, nodepool: str | None, resource: str) -> actions.Price:
        kind = kinds.get((cluster, nodepool, resource))
        if kind is None:
            where = f"{cluster}/{nodepool}" if nodepool else cluster
            return actions.Price(None, None, f"no instance type is known for the nodes of {where}")
        p = prices[kind]
        return actions.Price(p.hourly, p.currency, p.reason)

    return price_of
