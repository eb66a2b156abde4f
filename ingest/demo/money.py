"""Money: each finished day's spend per AWS service and per instance type, and the budgets."""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

import numpy as np

from ingest.demo.catalogue import INSTANCE_TYPES
from ingest.demo.draws import T_COST, keyed_rng
from ingest.demo.facts import cloudevent
from ingest.demo.units import DAY, GIB, date_us, month_start, next_month
from ingest.demo.world import World, growth
from store.event_types import EventType

#: Expected spend per day at the reference month, for sizing budgets (all services, USD).
_DAILY_USD: Final = 930.0


def node_hours(w: World, day: int) -> dict[str, int]:
    """Instance-hours per instance type on one day."""
    out: dict[str, int] = {}
    for h in range(day * 24, day * 24 + 24):
        for i in w.alive_all(h):
            name = w.nodes[i].itype.name
            out[name] = out.get(name, 0) + 1
    return out


def cost_raws(w: World, day: int) -> list[dict[str, Any]]:
    """One finished day's spend per service (Cost Explorer's daily granularity), and its EC2
    instance spend and hours per instance type (what prices the nodes)."""
    rng = keyed_rng(w.seed, day, T_COST)
    noise = rng.normal(0.0, 1.0, 8)
    hours = node_hours(w, day)
    compute = sum(INSTANCE_TYPES[t].usd_hour * n for t, n in hours.items())
    mid = np.array([float(day * DAY + DAY // 2)])
    ebs_gib = float(w.pvcs.state(mid)[1].sum()) / GIB
    g = float(growth(mid)[0])
    spend = {
        "AmazonEC2": compute + ebs_gib * 0.096 / 30.4,
        "AmazonEKS": 2.40 + 0.12 * compute,
        "AmazonS3": 38.0 * g * (1 + 0.04 * noise[0]),
        "AmazonRDS": 172.0 * (1 + 0.01 * noise[1]),
        "AmazonCloudWatch": 24.0 * g * (1 + 0.05 * noise[2]),
        "AmazonGuardDuty": 11.0 * (1 + 0.06 * noise[3]),
        "AWSSecurityHub": 4.5 * (1 + 0.05 * noise[4]),
    }
    date = dt.date(1970, 1, 1) + dt.timedelta(days=day)
    by_type = [
        cloudevent(
            "cost",
            f"cost-instance-type/{date}/{name}",
            EventType.COST_INSTANCE_TYPE_DAILY,
            (day + 1) * DAY,
            {
                "date": date.isoformat(),
                "instance_type": name,
                # On-demand: the spend is the hours at the instance type's hourly price.
                "amount": round(INSTANCE_TYPES[name].usd_hour * n, 2),
                "usage_hours": float(n),
                "currency": "USD",
            },
            cluster=False,
        )
        for name, n in sorted(hours.items())
    ]
    return by_type + [
        cloudevent(
            "cost",
            f"cost/{date}/{service}",
            EventType.COST_DAILY,
            (day + 1) * DAY,
            {
                "date": date.isoformat(),
                "service": service,
                "amount": round(float(amount), 2),
                "currency": "USD",
            },
            cluster=False,
        )
        for service, amount in spend.items()
    ]


def _budget_amount(seed: int, month: dt.date) -> float:
    """Budgets are set near the expected spend; every other month (per seed, the reference
    month among them for the default seed) too tight by 13 %."""
    index = month.year * 12 + month.month - 1
    days = (next_month(month) - month).days
    mid = np.array([float(date_us(month) + days * DAY // 2)])
    factor = 1.12 if (index + seed) % 2 else 0.87
    return float(round(_DAILY_USD * float(growth(mid)[0]) * days * factor, -2))


def budget_raws(seed: int, since: dt.date, start_us: int, now_us: int) -> list[dict[str, Any]]:
    """Budgets of the months from `since` to now; one already under way is observed at the start."""
    tag = since.isoformat()
    out: list[dict[str, Any]] = []
    month = month_start(since)
    while date_us(month) <= now_us:
        at = max(date_us(month), start_us)
        event_id = f"budget/{month:%Y-%m}" + ("" if at == date_us(month) else f"@{tag}")
        data = {
            "month": f"{month:%Y-%m}",
            "amount": _budget_amount(seed, month),
            "currency": "USD",
        }
        out.append(cloudevent("budget", event_id, EventType.BUDGET_SET, at, data, cluster=False))
        month = next_month(month)
    return out
