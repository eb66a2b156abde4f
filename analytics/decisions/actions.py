"""The decision kinds: each rule turns figures from capacity, storage and cost into an action."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Final, Literal

from analytics.thresholds import HEADROOM_TARGET, STORAGE_EXPAND

Kind = Literal[
    "reclaim_workload",
    "expand_pool",
    "raise_nodepool_limit",
    "zone_risk",
    "subnet_ips",
    "expand_pvc",
    "budget",
]
KINDS: Final[tuple[Kind, ...]] = (
    "reclaim_workload",
    "expand_pool",
    "raise_nodepool_limit",
    "zone_risk",
    "subnet_ips",
    "expand_pvc",
    "budget",
)
HOURS_PER_MONTH: Final = 730
GIB: Final = 2**30
#: A reclaim is due by the next review: this long after the as-of instant.
RECLAIM_BY: Final = timedelta(days=30)
#: Expansions are sized for the trend's level this long ahead (the next review).
SIZE_AHEAD_DAYS: Final = 30.0


@dataclass(frozen=True, slots=True)
class Price:
    """An hourly price of a node, its currency, or why there is none."""

    hourly: float | None
    currency: str | None
    reason: str | None = None


#: (cluster, node pool or None, resource) → the price of the node an expansion would add.
PriceOf = Callable[[str, str | None, str], Price]


@dataclass(frozen=True, slots=True)
class Action:
    """One decision before ranking."""

    kind: Kind
    target: str
    #: None: now.
    by: date | None
    evidence: str
    section: str
    monthly_savings: float | None = None
    monthly_cost: float | None = None
    currency: str | None = None
    figures: dict[str, Any] = field(default_factory=dict)

    def money(self) -> float:
        """The amount at stake, for ranking (0 when unknown)."""
        for v in (self.monthly_cost, self.monthly_savings):
            if v is not None:
                return abs(v)
        return 0.0


def _by(as_of: datetime, days: float | None) -> date | None:
    if days is None or days <= 0:
        return None
    return (as_of + timedelta(days=days)).date()


def _when(as_of: datetime, days: float | None) -> str:
    if days is None or days <= 0:
        return "already"
    return f"in {days:.1f} days ({(as_of + timedelta(days=days)).date().isoformat()})"


def _word(resource: str) -> str:
    return "CPU" if resource == "cpu" else "Memory"


def _fmt(resource: str, value: float | None) -> str:
    if value is None:
        return "unknown"
    if resource == "cpu":
        return f"{value:,.2f} cores"
    return f"{value / GIB:,.1f} GiB"


def _money(
    amount: float | None, currency: str | None, reason: str | None
) -> tuple[float | None, str | None, str]:
    """The amount, its currency, and the clause the evidence ends with."""
    if amount is None:
        return None, None, f" Cost unknown: {reason}." if reason else ""
    return amount, currency, f" About {amount:,.0f} {currency or ''}/month.".replace(" /", "/")


def reclaims(
    items: Iterable[dict[str, Any]], as_of: datetime, min_savings: float = 0.0
) -> list[Action]:
    """Over-requested containers whose lower requests would save more than `min_savings`."""
    out = []
    by = (as_of + RECLAIM_BY).date()
    for i in items:
        savings = i.get("monthly_savings")
        if i.get("status") != "over" or savings is None or savings <= max(min_savings, 0.0):
            continue
        target = "/".join(
            str(i[k]) for k in ("cluster", "namespace", "workload_kind", "workload", "container")
        )
        evidence = (
            f"Requests {i['cpu_request_cores']:.3f} cores and "
            f"{(i['memory_request_bytes'] or 0) / 2**20:,.0f} MiB per pod against a recommended "
            f"{i['cpu_recommended_cores']:.3f} cores (p95 of usage) and "
            f"{i['memory_recommended_bytes'] / 2**20:,.0f} MiB (max working set + buffer) over "
            f"{i.get('pods_avg', 0):.1f} pods on average: the request exceeds the "
            "recommendation by more than 10 %. Lowering it frees "
            f"{i['cpu_reclaim_cores'] or 0:.2f} cores and "
            f"{(i['memory_reclaim_bytes'] or 0) / GIB:.2f} GiB."
        )
        out.append(
            Action(
                "reclaim_workload",
                target,
                by,
                evidence,
                "rightsizing",
                monthly_savings=savings,
                currency=i.get("currency"),
                figures={
                    k: i.get(k)
                    for k in (
                        "cpu_request_cores",
                        "cpu_recommended_cores",
                        "memory_request_bytes",
                        "memory_recommended_bytes",
                        "cpu_reclaim_cores",
                        "memory_reclaim_bytes",
                        "pods_avg",
                    )
                },
            )
        )
    return out


def _pool(h: dict[str, Any]) -> str:
    return f"{h['cluster']}/{h['nodepool']}" if h.get("nodepool") else str(h["cluster"])


def expansions(
    headroom: Iterable[dict[str, Any]],
    price_of: PriceOf,
    horizon_days: float,
    as_of: datetime,
) -> list[Action]:
    """Node pools whose usage or requests reach 85 % of N-1 within the horizon, sized and priced."""
    out = []
    for h in headroom:
        if h.get("nodepool") is None:
            continue
        days = [
            d
            for d in (h.get("days_to_85_n_minus_1"), h.get("days_to_85_by_requests_n_minus_1"))
            if d is not None and d <= horizon_days
        ]
        if not days:
            continue
        soonest = min(days)
        big = h.get("largest_node_allocatable") or 0.0
        if big <= 0:
            continue
        ahead = [h["level"] + max(h.get("growth_per_day") or 0.0, 0.0) * SIZE_AHEAD_DAYS]
        if h.get("requests") is not None:
            slope = max(h.get("requests_growth_per_day") or 0.0, 0.0)
            ahead.append(h["requests"] + slope * SIZE_AHEAD_DAYS)
        need = max(ahead) / HEADROOM_TARGET - (h["allocatable"] - big)
        nodes = max(1, math.ceil(need / big))
        price = price_of(h["cluster"], h["nodepool"], h["resource"])
        cost = None if price.hourly is None else nodes * price.hourly * HOURS_PER_MONTH
        amount, currency, money = _money(cost, price.currency, price.reason)
        evidence = (
            f"{_word(h['resource'])} {'requests' if len(ahead) > 1 else h['basis']} reach 85 % of "
            f"the allocatable without the largest node (N-1) {_when(as_of, soonest)}: "
            f"{_fmt(h['resource'], max(ahead))} expected in 30 days against "
            f"{_fmt(h['resource'], h['allocatable'] - big)} N-1. Add {nodes} node"
            f"{'s' if nodes > 1 else ''} of {_fmt(h['resource'], big)}.{money}"
        )
        out.append(
            Action(
                "expand_pool",
                f"{_pool(h)} ({h['resource']})",
                _by(as_of, soonest),
                evidence,
                "headroom",
                monthly_cost=amount,
                currency=currency,
                figures={"nodes_to_add": nodes, "days": soonest, "resource": h["resource"]},
            )
        )
    return out


def limits(
    headroom: Iterable[dict[str, Any]], horizon_days: float, as_of: datetime
) -> list[Action]:
    """NodePools whose requests reach their `spec.limits` within the horizon."""
    out = []
    for h in headroom:
        lim = h.get("nodepool_limit")
        if not lim or lim.get("days_to_limit") is None or lim["days_to_limit"] > horizon_days:
            continue
        days = lim["days_to_limit"]
        evidence = (
            f"{_word(h['resource'])} requests ({_fmt(h['resource'], h.get('requests'))}, "
            f"growing {_fmt(h['resource'], h.get('requests_growth_per_day'))} a day) reach the "
            f"NodePool limit of {_fmt(h['resource'], lim['limit'])} {_when(as_of, days)}: "
            "Karpenter will not provision past it."
        )
        out.append(
            Action(
                "raise_nodepool_limit",
                f"{_pool(h)} ({h['resource']})",
                _by(as_of, days),
                evidence,
                "headroom",
                figures={"limit": lim["limit"], "days": days, "resource": h["resource"]},
            )
        )
    return out


def zones(headroom: Iterable[dict[str, Any]], price_of: PriceOf) -> list[Action]:
    """Pools (and clusters) whose requests do not fit once their largest zone is lost."""
    out = []
    for h in headroom:
        z = h.get("zone_loss")
        if not z or z.get("survives") is not False:
            continue
        big = h.get("largest_node_allocatable") or 0.0
        deficit = (h.get("requests") or 0.0) - z["allocatable_without_largest_zone"]
        nodes = max(1, math.ceil(deficit / big)) if big > 0 else None
        price = price_of(h["cluster"], h.get("nodepool"), h["resource"])
        cost = None
        if nodes is not None and price.hourly is not None:
            cost = nodes * price.hourly * HOURS_PER_MONTH
        amount, currency, money = _money(cost, price.currency, price.reason)
        left = z["allocatable_without_largest_zone"]
        evidence = (
            f"Losing {z['largest_zone']} leaves {_fmt(h['resource'], left)}"
            f" of {h['resource']} for {_fmt(h['resource'], h.get('requests'))} of requests: "
            f"{_fmt(h['resource'], deficit)} would not reschedule."
            + (f" Covering it takes {nodes} more node{'s' if nodes != 1 else ''}." if nodes else "")
            + money
        )
        out.append(
            Action(
                "zone_risk",
                f"{_pool(h)} ({h['resource']})",
                None,
                evidence,
                "headroom",
                monthly_cost=amount,
                currency=currency,
                figures={"largest_zone": z["largest_zone"], "deficit": deficit, "nodes": nodes},
            )
        )
    return out


def subnets(zones_: Iterable[dict[str, Any]], horizon_days: float, as_of: datetime) -> list[Action]:
    """Zones whose subnets run out of pod addresses within the horizon."""
    out = []
    for z in zones_:
        days = z.get("days_to_exhaustion")
        if days is None or days > horizon_days:
            continue
        subnets = z["subnets"] if isinstance(z["subnets"], list) else []
        names = ", ".join(subnets) or "its subnets"
        if days <= 0:
            evidence = (
                f"No free address left in {z['zone']} ({names}): pods scheduled there cannot "
                "start (the VPC CNI gives every pod an address)."
            )
        else:
            evidence = (
                f"{z['available_ips']:,} free addresses in {z['zone']} ({names}), and pods there "
                f"grow by {z.get('pods_per_day') or 0:.1f} a day: the zone runs out "
                f"{_when(as_of, days)} (the VPC CNI gives every pod an address)."
            )
        out.append(
            Action(
                "subnet_ips",
                f"{z['cluster']}/{z['zone']}",
                _by(as_of, days),
                evidence,
                "network",
                figures={"available_ips": z["available_ips"], "days": days},
            )
        )
    return out


def pvcs(
    items: Iterable[dict[str, Any]],
    storage_gib_month: float | None,
    currency: str | None,
    horizon_days: float,
    as_of: datetime,
) -> list[Action]:
    """PVCs at 90 % or forecast to reach it within the horizon; doubling is the expansion."""
    out = []
    for p in items:
        days = p.get("days_to_90")
        ratio = p.get("used_ratio")
        if not (ratio is not None and ratio >= STORAGE_EXPAND) and (
            days is None or days > horizon_days
        ):
            continue
        if ratio is not None and ratio >= STORAGE_EXPAND:
            days = 0.0
        added = (p.get("capacity_bytes") or 0.0) / GIB
        cost = None if storage_gib_month is None else added * storage_gib_month
        reason = "the price table has no storage_gib_month price"
        amount, cur, money = _money(cost, currency, reason)
        evidence = (
            f"Used {100 * (ratio or 0):.1f} % of {added:,.0f} GiB; it reaches 90 % "
            f"{_when(as_of, days)}. Double it (+{added:,.0f} GiB).{money}"
        )
        out.append(
            Action(
                "expand_pvc",
                f"{p['cluster']}/{p['namespace']}/{p['pvc']}",
                _by(as_of, days),
                evidence,
                "storage",
                monthly_cost=amount,
                currency=cur,
                figures={"used_ratio": ratio, "days_to_90": days, "added_gib": added},
            )
        )
    return out


def budget(fc: dict[str, Any], month_last_day: date) -> list[Action]:
    """The month's spend forecast over (or at risk of going over) its budget."""
    if fc.get("status") not in ("over_budget", "at_risk"):
        return []
    over = fc["forecast"] - fc["budget"]
    cur = fc.get("currency") or ""
    figure = (
        f"Spent {fc['forecast']:,.0f} {cur}"
        if not fc.get("remaining_days")
        else f"Forecast {fc['forecast']:,.0f} {cur} (80 % band {fc['low']:,.0f}–{fc['high']:,.0f})"
    )
    evidence = f"{figure} against a budget of {fc['budget']:,.0f} {cur}: " + (
        "more than 10 % over."
        if fc["status"] == "over_budget"
        else "the band reaches more than 10 % over."
    )
    return [
        Action(
            "budget",
            fc["month"],
            month_last_day,
            evidence,
            "cost",
            monthly_cost=over,
            currency=fc.get("currency"),
            figures={"forecast": fc["forecast"], "budget": fc["budget"], "status": fc["status"]},
        )
    ]


def _cents(amount: float | None) -> float | None:
    return None if amount is None else round(amount, 2)


def ranked(actions: Sequence[Action]) -> list[dict[str, Any]]:
    """Now first, then the earliest date, then the most money; numbered from 1."""
    order = sorted(
        actions,
        key=lambda a: (
            a.by is not None,
            a.by or date.min,
            -a.money(),
            KINDS.index(a.kind),
            a.target,
        ),
    )
    return [
        {
            "rank": n,
            "kind": a.kind,
            "target": a.target,
            "by": "now" if a.by is None else a.by.isoformat(),
            "evidence": a.evidence,
            "monthly_savings": _cents(a.monthly_savings),
            "monthly_cost": _cents(a.monthly_cost),
            "currency": a.currency,
            "section": a.section,
            "figures": a.figures,
        }
        for n, a in enumerate(order, 1)
    ]
