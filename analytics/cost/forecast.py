"""The month's spend forecast: spend to date plus each remaining day's weekday mean.

docs/metrics.md, "Cost forecast": D(d) is a day's spend over every service (a restated day
keeps the amount recorded last); the remaining days are forecast by the mean of the same
weekday over the 56 days of history before them, and the 80 % band by the spread of the
history around those means.
"""

from __future__ import annotations

import calendar
import math
import statistics
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any, Final

import duckdb

from analytics.cost.projection import DAILY, OVER_BUDGET_MARGIN, in_range
from analytics.readmodel.model import snapshot
from store.timefmt import naive_iso

#: Days of history before the first remaining day.
HISTORY_DAYS: Final = 56
#: The 90th percentile of the standard normal: an 80 % band is ± this many σ.
Z_80: Final = 1.2815515655446004


def month_bounds(month: str) -> tuple[date, date]:
    """The first and last day of `month` (YYYY-MM)."""
    year, mon = int(month[:4]), int(month[5:7])
    return date(year, mon, 1), date(year, mon, calendar.monthrange(year, mon)[1])


def _days(
    con: duckdb.DuckDBPyConnection, lo: date, hi: date
) -> tuple[dict[date, float], list[date], str | None]:
    """D(d) for the days in [lo, hi) with data, the days with an out-of-range amount, and the
    currency recorded last."""
    rows = con.execute(
        f"SELECT day, amount, currency FROM ({DAILY}) WHERE day >= ? AND day < ? ORDER BY day",
        [lo, hi],
    ).fetchall()
    totals: dict[date, float] = {}
    bad: set[date] = set()
    for d, amount, _ in rows:
        # A ledger written before the contract bounded amounts may hold any double.
        if not in_range(amount):
            bad.add(d)
        totals[d] = totals.get(d, 0.0) + (amount if in_range(amount) else 0.0)
    currency = next((c for _, _, c in reversed(rows) if c is not None), None)
    return totals, sorted(bad), currency


def _status(forecast: float | None, high: float | None, budget: float | None) -> str:
    if budget is None:
        return "no_budget"
    if forecast is None or high is None:
        return "no_data"
    if forecast > budget * (1 + OVER_BUDGET_MARGIN):
        return "over_budget"
    if high > budget * (1 + OVER_BUDGET_MARGIN):
        return "at_risk"
    return "within_budget"


def forecast(
    con: duckdb.DuckDBPyConnection,
    month: str,
    as_of: datetime,
    expansions: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The forecast spend of `month` as of `as_of` (naive UTC, clamped to the month end).

    Only days before `as_of`'s date count, for the spend and the history alike. `expansions`
    are the pools to grow (`{target, monthly_cost}`), listed as given.
    """
    with snapshot(con) as cur:
        return _forecast(cur, month, as_of, expansions)


def _forecast(
    con: duckdb.DuckDBPyConnection,
    month: str,
    as_of: datetime,
    expansions: Sequence[dict[str, Any]] | None,
) -> dict[str, Any]:
    first, last = month_bounds(month)
    month_end = datetime.combine(last + timedelta(days=1), datetime.min.time())
    as_of = min(as_of, month_end)
    today = as_of.date()
    # Everything the forecast may read: the month so far and the history before it.
    known, bad, currency = _days(
        con, first - timedelta(days=HISTORY_DAYS), min(today, last + timedelta(days=1))
    )
    in_month = sorted(d for d in known if d >= first)
    spent = sum(known[d] for d in in_month)
    start = in_month[-1] + timedelta(days=1) if in_month else first
    remaining = [start + timedelta(days=i) for i in range((last - start).days + 1)]
    history = [d for d in sorted(known) if start - timedelta(days=HISTORY_DAYS) <= d < start]
    used = {*in_month, *history}
    budget_row = con.execute(
        "SELECT arg_max(amount, position), arg_max(currency, position) FROM budgets "
        "WHERE month = ?",
        [month],
    ).fetchone()
    budget = budget_row[0] if budget_row is not None else None
    if budget is not None and not in_range(budget):
        budget = None
    currency = currency or (budget_row[1] if budget_row is not None else None)
    total: float | None = None
    low = high = None
    if not any(d in used for d in bad) and (history or not remaining):
        means = _weekday_means([(d, known[d]) for d in history])
        total = spent + sum(means[r.weekday()] for r in remaining)
        residuals = [known[d] - means[d.weekday()] for d in history]
        sigma = statistics.stdev(residuals) if len(residuals) >= 2 else 0.0
        half = Z_80 * sigma * math.sqrt(len(remaining))
        low, high = total - half, total + half
    return {
        "month": month,
        "as_of": naive_iso(as_of),
        "currency": currency,
        "spent_to_date": None if any(d in bad for d in in_month) else spent,
        "days_with_data": len(in_month),
        "remaining_days": len(remaining),
        "forecast": total,
        "low": low,
        "high": high,
        "budget": budget,
        "status": _status(total, high, budget),
        "out_of_range": [d.isoformat() for d in bad if d in used],
        "expansions": list(expansions or []),
    }


def _weekday_means(history: list[tuple[date, float]]) -> dict[int, float]:
    """μ_w for every weekday: the mean of the history's days of that weekday, else of all."""
    overall = statistics.fmean(v for _, v in history) if history else 0.0
    means = {}
    for w in range(7):
        values = [v for d, v in history if d.weekday() == w]
        means[w] = statistics.fmean(values) if values else overall
    return means
