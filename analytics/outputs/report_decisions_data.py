"""The report's decisions, rightsizing, subnet addresses, showback and spend forecast, as of the
month's end: each read from its slice inside the report's snapshot, then frozen.

Every part is judged as of `month.end` (00:00 UTC on the 1st of the next month), like
`GET /v1/decisions?month=` for a month that has ended, so the report and the API agree.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date
from typing import Any, Final

import duckdb

from analytics.capacity.network import ip_headroom
from analytics.cost.forecast import forecast
from analytics.cost.showback import showback
from analytics.decisions.gather import Policy, decisions
from analytics.outputs.report_decisions import (
    Decision,
    Decisions,
    Network,
    Rightsizing,
    RightsizingRow,
    Showback,
    ShowbackRow,
    ShowbackTotal,
    SpendForecast,
    StatusCount,
    SubnetAddresses,
    Unpriced,
    ZoneAddresses,
)
from analytics.outputs.report_model import Month
from store.timefmt import z_to_naive, z_to_naive_or_none

#: Rightsizing rows listed: the most to save, and the under-requested (a risk, not a saving).
RIGHTSIZING_TOP: Final = 15
RIGHTSIZING_UNDER: Final = 25
#: Statuses in the order the report counts them.
RIGHTSIZING_STATUSES: Final = ("over", "under", "ok", "no_requests", "insufficient_data")
#: The kinds whose rule prices them (the others carry no money by definition).
PRICED_KINDS: Final = frozenset(
    {"reclaim_workload", "expand_pool", "zone_risk", "expand_pvc", "budget"}
)
# analytics.decisions.actions ends the evidence of an unpriced action with this clause.
_COST_UNKNOWN: Final = re.compile(r" Cost unknown: (.+)\.$")


def month_decisions(
    con: duckdb.DuckDBPyConnection,
    month: Month,
    policy: Policy,
    cluster: str | None,
    rightsizing: list[dict[str, Any]],
) -> Decisions:
    """The month's ranked actions as of its end, from its `rightsized` containers."""
    found = decisions(con, month.name, month.end, policy, cluster, rightsizing)
    return Decisions(
        as_of=z_to_naive(found["as_of"]),
        horizon_days=float(found["horizon_days"]),
        items=tuple(_decision(d) for d in found["items"]),
    )


def _decision(d: dict[str, Any]) -> Decision:
    reason = None
    if d["kind"] in PRICED_KINDS and d["monthly_cost"] is None and d["monthly_savings"] is None:
        why = _COST_UNKNOWN.search(d["evidence"])
        reason = why.group(1) if why else "no price is known"
    return Decision(
        rank=int(d["rank"]),
        kind=str(d["kind"]),
        target=str(d["target"]),
        by=None if d["by"] == "now" else date.fromisoformat(d["by"]),
        evidence=str(d["evidence"]),
        monthly_savings=d["monthly_savings"],
        monthly_cost=d["monthly_cost"],
        currency=d["currency"],
        section=str(d["section"]),
        cost_reason=reason,
    )


def month_rightsizing(items: Sequence[dict[str, Any]], policy: Policy) -> Rightsizing:
    """Containers' requests against usage over the look-back before the month's end."""
    rows = [_rightsizing_row(i) for i in items]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    order = {s: n for n, s in enumerate(RIGHTSIZING_STATUSES)}
    # Already ranked by savings (unknown last): an over-requested container with unknown
    # savings (no prices) still has requests to reclaim, so it is listed in name order.
    top = [r for r in rows if r.status == "over" or (r.monthly_savings or 0.0) > 0][
        :RIGHTSIZING_TOP
    ]
    under = [r for r in rows if r.status == "under"]
    over = [r.monthly_savings for r in rows if r.status == "over"]
    known = [s for s in over if s is not None]
    currencies = sorted({r.currency for r in rows if r.currency is not None})
    return Rightsizing(
        lookback_days=policy.lookback.total_seconds() / 86400,
        containers=len(rows),
        by_status=tuple(
            StatusCount(s, counts[s]) for s in sorted(counts, key=lambda s: (order.get(s, 99), s))
        ),
        # Amounts in different currencies have no sum.
        over_savings=sum(known) if known and len(currencies) == 1 else None,
        currency=currencies[0] if len(currencies) == 1 else None,
        top=tuple(top),
        under=tuple(under[:RIGHTSIZING_UNDER]),
        under_count=len(under),
    )


def _rightsizing_row(i: dict[str, Any]) -> RightsizingRow:
    return RightsizingRow(
        cluster=i["cluster"],
        namespace=i["namespace"],
        workload_kind=i["workload_kind"],
        workload=i["workload"],
        container=i["container"],
        status=i["status"],
        reason=i["reason"],
        pods_avg=i["pods_avg"],
        cpu_request_cores=i["cpu_request_cores"],
        cpu_recommended_cores=i["cpu_recommended_cores"],
        memory_request_bytes=i["memory_request_bytes"],
        memory_recommended_bytes=i["memory_recommended_bytes"],
        cpu_reclaim_cores=i["cpu_reclaim_cores"],
        memory_reclaim_bytes=i["memory_reclaim_bytes"],
        monthly_savings=i["monthly_savings"],
        currency=i["currency"],
    )


def month_network(con: duckdb.DuckDBPyConnection, month: Month, cluster: str | None) -> Network:
    """Free subnet addresses per zone and subnet, against the pod trend, as of the month's end."""
    found = ip_headroom(con, month.end, cluster=cluster)
    zones = [
        ZoneAddresses(
            cluster=z["cluster"],
            zone=z["zone"],
            subnets=len(z["subnets"]),
            available_ips=int(z["available_ips"]),
            pods=z["pods"],
            pods_per_day=z["pods_per_day"],
            days_to_exhaustion=z["days_to_exhaustion"],
            eta=z_to_naive_or_none(z["eta"]),
        )
        for z in found["zones"]
    ]
    subnets = [
        SubnetAddresses(
            cluster=s["cluster"],
            subnet_id=s["subnet_id"],
            vpc_id=s["vpc_id"],
            zone=s["zone"],
            cidr=s["cidr"],
            available_ips=int(s["available_ips"]),
            total_ips=None if s["total_ips"] is None else int(s["total_ips"]),
            days_to_exhaustion=s["days_to_exhaustion"],
            eta=z_to_naive_or_none(s["eta"]),
            observed_at=z_to_naive(s["observed_at"]),
        )
        for s in found["subnets"]
    ]
    zones.sort(key=lambda z: (z.cluster, z.zone))
    subnets.sort(key=lambda s: (s.cluster, s.zone, s.subnet_id))
    return Network(tuple(zones), tuple(subnets))


def month_showback(
    con: duckdb.DuckDBPyConnection, month: Month, policy: Policy, cluster: str | None
) -> Showback:
    """The month's node cost per namespace and each cluster's idle."""
    found = showback(
        con, month.name, "namespace", month.end, policy.prices, policy.w_cpu, policy.w_mem, cluster
    )
    rows = [
        ShowbackRow(
            cluster=i["cluster"],
            namespace=i["namespace"],
            idle=bool(i["idle"]),
            cpu_cost=i["cpu_cost"],
            memory_cost=i["memory_cost"],
            cost=i["cost"],
            share=i["share"],
            reason=i.get("reason"),
        )
        for i in found["items"]
    ]
    # Per cluster, the namespaces by cost (unknown last), then its idle.
    rows.sort(
        key=lambda r: (r.cluster, r.idle, r.cost is None, -(r.cost or 0.0), r.namespace or "")
    )
    return Showback(
        currency=found["currency"],
        rows=tuple(rows),
        totals=tuple(
            ShowbackTotal(t["cluster"], t["cost"], t["currency"], _unpriced(t["unpriced"]))
            for t in sorted(found["totals"], key=lambda t: str(t["cluster"]))
        ),
    )


def _unpriced(nodes: Sequence[dict[str, Any]]) -> tuple[Unpriced, ...]:
    """Unpriced nodes counted per instance type (the reason names the type)."""
    by_type: dict[str | None, tuple[int, str | None]] = {}
    for n in nodes:
        count, _ = by_type.get(n["instance_type"], (0, None))
        by_type[n["instance_type"]] = (count + 1, n["reason"])
    return tuple(
        Unpriced(t, count, reason)
        for t, (count, reason) in sorted(by_type.items(), key=lambda kv: (-kv[1][0], kv[0] or ""))
    )


def month_forecast(con: duckdb.DuckDBPyConnection, month: Month) -> SpendForecast:
    """The month's spend forecast as of its end (days missing at the end are forecast)."""
    f = forecast(con, month.name, month.end)
    return SpendForecast(
        currency=f["currency"],
        spent_to_date=f["spent_to_date"],
        days_with_data=int(f["days_with_data"]),
        remaining_days=int(f["remaining_days"]),
        forecast=f["forecast"],
        low=f["low"],
        high=f["high"],
        budget=f["budget"],
        status=str(f["status"]),
    )


__all__ = [
    "RIGHTSIZING_TOP",
    "RIGHTSIZING_UNDER",
    "month_decisions",
    "month_forecast",
    "month_network",
    "month_rightsizing",
    "month_showback",
]
