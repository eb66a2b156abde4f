"""Cost: daily spend per service and monthly budgets, and spend projected to month end."""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from datetime import date
from typing import Any, Final

import duckdb

from store.ledger import RecordedEvent

COST_DAILY: Final = "opsledger.cost.daily"
BUDGET_SET: Final = "opsledger.budget.set"
#: Over budget when the projection exceeds the budget by more than this share (BRIEF.md).
OVER_BUDGET_MARGIN: Final = 0.10

_DDL: Final = (
    """CREATE TABLE IF NOT EXISTS cost_daily (
        day DATE, service VARCHAR, amount DOUBLE, currency VARCHAR, cluster VARCHAR,
        position BIGINT)""",
    """CREATE TABLE IF NOT EXISTS budgets (
        month VARCHAR, amount DOUBLE, currency VARCHAR, position BIGINT)""",
)


class CostProjection:
    """Cost and budget events as recorded; a restated day or budget keeps the latest."""

    name = "cost"
    version = 1
    types: tuple[str, ...] = (COST_DAILY, BUDGET_SET)
    batch_events = 5000

    def create(self, con: duckdb.DuckDBPyConnection) -> None:
        """Create the cost tables."""
        for ddl in _DDL:
            con.execute(ddl)

    def drop(self, con: duckdb.DuckDBPyConnection) -> None:
        """Drop the cost tables."""
        for table in ("cost_daily", "budgets"):
            con.execute(f"DROP TABLE IF EXISTS {table}")

    def apply(self, con: duckdb.DuckDBPyConnection, events: Sequence[RecordedEvent]) -> None:
        """Append the page's cost days and budgets."""
        days, budgets = [], []
        for ev in events:
            d = ev.data or {}
            if ev.type == COST_DAILY:
                days.append(
                    (d["date"], d["service"], d["amount"], d["currency"], ev.cluster, ev.position)
                )
            else:
                budgets.append((d["month"], d["amount"], d["currency"], ev.position))
        if days:
            con.executemany("INSERT INTO cost_daily VALUES (?, ?, ?, ?, ?, ?)", days)
        if budgets:
            con.executemany("INSERT INTO budgets VALUES (?, ?, ?, ?)", budgets)


#: One amount per (day, service): the one recorded last.
DAILY: Final = """
SELECT day, service, arg_max(amount, position) AS amount, arg_max(currency, position) AS currency
FROM cost_daily GROUP BY day, service
"""


def month_cost(con: duckdb.DuckDBPyConnection, month: str, as_of: date) -> dict[str, Any]:
    """Spend of `month` (YYYY-MM) up to `as_of`, projected to month end, against its budget.

    The projection is the run rate: spend to date ÷ days elapsed × days in the month, where
    days elapsed run from the 1st to the last day with recorded spend (not after `as_of`).
    """
    year, mon = (int(p) for p in month.split("-"))
    first = date(year, mon, 1)
    days_in_month = calendar.monthrange(year, mon)[1]
    last = date(year, mon, days_in_month)
    rows = con.execute(
        f"SELECT day, sum(amount), any_value(currency) FROM ({DAILY}) "
        "WHERE day >= ? AND day <= ? AND day <= ? GROUP BY day ORDER BY day",
        [first, last, as_of],
    ).fetchall()
    by_service = con.execute(
        f"SELECT service, sum(amount) FROM ({DAILY}) WHERE day >= ? AND day <= ? AND day <= ? "
        "GROUP BY service ORDER BY sum(amount) DESC, service",
        [first, last, as_of],
    ).fetchall()
    budget = con.execute(
        "SELECT arg_max(amount, position), arg_max(currency, position) FROM budgets "
        "WHERE month = ?",
        [month],
    ).fetchone()
    spend = float(sum(r[1] for r in rows))
    elapsed = (rows[-1][0] - first).days + 1 if rows else 0
    projected = spend / elapsed * days_in_month if elapsed else None
    budget_amount = budget[0] if budget and budget[0] is not None else None
    over = (
        projected is not None
        and budget_amount is not None
        and projected > budget_amount * (1 + OVER_BUDGET_MARGIN)
    )
    return {
        "month": month,
        "currency": (rows[0][2] if rows else None) or (budget[1] if budget else None),
        "spend_to_date": spend,
        "days_elapsed": elapsed,
        "days_in_month": days_in_month,
        "projected": projected,
        "budget": budget_amount,
        "projected_vs_budget": (projected / budget_amount)
        if projected is not None and budget_amount
        else None,
        "over_budget": bool(over),
        "daily": [{"date": r[0].isoformat(), "amount": float(r[1])} for r in rows],
        "by_service": [{"service": s, "amount": float(a)} for s, a in by_service],
    }
