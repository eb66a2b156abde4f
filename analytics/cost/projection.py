"""Cost: daily spend per service and per instance type, monthly budgets, spend to month end."""

from __future__ import annotations

import calendar
import math
from collections.abc import Sequence
from datetime import date
from typing import Any, Final

import duckdb

from store.datamodels import MAX_AMOUNT
from store.event_types import EventType
from store.ledger import RecordedEvent

#: Over budget when the projection exceeds the budget by more than this share (docs/metrics.md).
OVER_BUDGET_MARGIN: Final = 0.10

_DDL: Final = (
    """CREATE TABLE IF NOT EXISTS cost_daily (
        day DATE, service VARCHAR, amount DOUBLE, currency VARCHAR, cluster VARCHAR,
        position BIGINT)""",
    """CREATE TABLE IF NOT EXISTS budgets (
        month VARCHAR, amount DOUBLE, currency VARCHAR, position BIGINT)""",
    # EC2 spend and usage hours per instance type and day: the hourly prices of showback.
    """CREATE TABLE IF NOT EXISTS cost_instance_daily (
        day DATE, instance_type VARCHAR, amount DOUBLE, usage_hours DOUBLE, currency VARCHAR,
        cluster VARCHAR, position BIGINT)""",
)
_TABLES: Final = ("cost_daily", "budgets", "cost_instance_daily")


class CostProjection:
    """Cost and budget events as recorded; a restated day or budget keeps the latest."""

    name = "cost"
    # 2: EC2 cost per instance type and day (cost_instance_daily).
    version = 2
    types: tuple[str, ...] = (
        EventType.COST_DAILY,
        EventType.BUDGET_SET,
        EventType.COST_INSTANCE_TYPE_DAILY,
    )
    batch_events = 5000

    def create(self, con: duckdb.DuckDBPyConnection) -> None:
        """Create the cost tables."""
        for ddl in _DDL:
            con.execute(ddl)

    def drop(self, con: duckdb.DuckDBPyConnection) -> None:
        """Drop the cost tables."""
        for table in _TABLES:
            con.execute(f"DROP TABLE IF EXISTS {table}")

    def apply(self, con: duckdb.DuckDBPyConnection, events: Sequence[RecordedEvent]) -> None:
        """Append the page's cost days, budgets and instance-type days."""
        days, budgets, instances = [], [], []
        for ev in events:
            d = ev.data or {}
            if ev.type == EventType.COST_DAILY:
                days.append(
                    (d["date"], d["service"], d["amount"], d["currency"], ev.cluster, ev.position)
                )
            elif ev.type == EventType.COST_INSTANCE_TYPE_DAILY:
                instances.append(
                    (
                        d["date"],
                        d["instance_type"],
                        d["amount"],
                        d["usage_hours"],
                        d["currency"],
                        ev.cluster,
                        ev.position,
                    )
                )
            else:
                budgets.append((d["month"], d["amount"], d["currency"], ev.position))
        if days:
            con.executemany("INSERT INTO cost_daily VALUES (?, ?, ?, ?, ?, ?)", days)
        if budgets:
            con.executemany("INSERT INTO budgets VALUES (?, ?, ?, ?)", budgets)
        if instances:
            con.executemany(
                "INSERT INTO cost_instance_daily VALUES (?, ?, ?, ?, ?, ?, ?)", instances
            )


#: One amount per (day, service): the one recorded last.
DAILY: Final = """
SELECT day, service, arg_max(amount, position) AS amount, arg_max(currency, position) AS currency
FROM cost_daily GROUP BY day, service
"""


def in_range(amount: float | None) -> bool:
    """Whether a recorded amount is one the contract accepts: finite, within ±MAX_AMOUNT."""
    return amount is not None and math.isfinite(amount) and abs(amount) <= MAX_AMOUNT


def month_cost(con: duckdb.DuckDBPyConnection, month: str, as_of: date) -> dict[str, Any]:
    """Spend of `month` (YYYY-MM) up to `as_of`, projected to month end, against its budget.

    The projection is the run rate: spend to date ÷ days elapsed × days in the month, where
    days elapsed run from the 1st to the last day with recorded spend (not after `as_of`).
    """
    year, mon = (int(p) for p in month.split("-"))
    first = date(year, mon, 1)
    days_in_month = calendar.monthrange(year, mon)[1]
    last = date(year, mon, days_in_month)
    amounts = con.execute(
        f"SELECT day, service, amount, currency FROM ({DAILY}) "
        "WHERE day >= ? AND day <= ? AND day <= ? ORDER BY day, service",
        [first, last, as_of],
    ).fetchall()
    budget = con.execute(
        "SELECT arg_max(amount, position), arg_max(currency, position) FROM budgets "
        "WHERE month = ?",
        [month],
    ).fetchone()
    # Ledgers written before the contract bounded amounts may hold any double (1.7e308 twice
    # sums to inf): such an amount makes every sum it enters unknown, not a number to show.
    bad = [(d, s) for d, s, a, _ in amounts if not in_range(a)]
    bad_days, bad_services = {d for d, _ in bad}, {s for _, s in bad}
    by_day: dict[date, float] = {}
    by_service: dict[str, float] = {}
    for d, service, amount, _ in amounts:
        by_day[d] = by_day.get(d, 0.0) + (amount if d not in bad_days else 0.0)
        if service not in bad_services:
            by_service[service] = by_service.get(service, 0.0) + amount
    days = sorted(by_day)
    elapsed = (days[-1] - first).days + 1 if days else 0
    budget_amount = budget[0] if budget and budget[0] is not None else None
    budget_bad = budget_amount is not None and not in_range(budget_amount)
    spend: float | None = None if bad else float(sum(by_day.values()))
    projected = spend / elapsed * days_in_month if spend is not None and elapsed else None
    usable_budget = None if budget_bad else budget_amount
    over = (
        projected is not None
        and usable_budget is not None
        and projected > usable_budget * (1 + OVER_BUDGET_MARGIN)
    )
    ranked = sorted(by_service.items(), key=lambda kv: (-kv[1], kv[0]))
    services: list[tuple[str, float | None]] = [*ranked, *((s, None) for s in sorted(bad_services))]
    return {
        "month": month,
        "currency": (amounts[0][3] if amounts else None) or (budget[1] if budget else None),
        "spend_to_date": spend,
        "days_elapsed": elapsed,
        "days_in_month": days_in_month,
        "projected": projected,
        "budget": usable_budget,
        "projected_vs_budget": (projected / usable_budget)
        if projected is not None and usable_budget
        else None,
        "over_budget": bool(over),
        # None where an out-of-range amount enters the sum.
        "daily": [
            {"date": d.isoformat(), "amount": None if d in bad_days else by_day[d]} for d in days
        ],
        "by_service": [{"service": s, "amount": a} for s, a in services],
        "out_of_range": {
            "amounts": [{"date": d.isoformat(), "service": s} for d, s in bad],
            "budget": budget_bad,
        },
    }
