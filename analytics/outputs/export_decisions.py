"""Export rows of the money datasets: rightsizing, showback and decisions, judged as of a time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, get_args

import duckdb

from analytics.cost.showback import By, showback
from analytics.decisions.gather import decisions, month_as_of, policy_of, rightsized
from store.settings import get_settings

#: Each showback row carries the grouping it belongs to; these are its key columns.
_SHOWBACK_KEYS: Final = ("namespace", "nodepool", "workload_kind", "workload")


def _months(start: datetime | None, end: datetime | None, as_of: datetime) -> Iterator[str]:
    """The months overlapping [start, end): by default the month of `as_of` alone."""
    lo = start or datetime(as_of.year, as_of.month, 1)
    hi = end or as_of
    if lo >= hi:
        hi = lo + timedelta(microseconds=1)
    m = date(lo.year, lo.month, 1)
    while datetime.combine(m, datetime.min.time()) < hi:
        yield m.strftime("%Y-%m")
        m = (m + timedelta(days=32)).replace(day=1)


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC)


def rightsizing_rows(
    con: duckdb.DuckDBPyConnection,
    start: datetime | None,
    end: datetime | None,
    cluster: str | None,
    as_of: datetime,
) -> list[dict[str, Any]]:
    """One row per container as of `as_of`, over the configured look-back."""
    policy = policy_of(get_settings())
    items = rightsized(con, as_of, policy, cluster)
    days = policy.lookback.total_seconds() / 86400
    return [{**i, "as_of": _utc(as_of), "lookback_days": days} for i in items]


def showback_rows(
    con: duckdb.DuckDBPyConnection,
    start: datetime | None,
    end: datetime | None,
    cluster: str | None,
    as_of: datetime,
) -> list[dict[str, Any]]:
    """Each month's showback, by namespace, node pool and workload, as of min(its end, as_of)."""
    policy = policy_of(get_settings())
    out = []
    for month in _months(start, end, as_of):
        for by in get_args(By):
            body = showback(
                con, month, by, as_of, policy.prices, policy.w_cpu, policy.w_mem, cluster
            )
            for item in body["items"]:
                row = {k: item.get(k) for k in _SHOWBACK_KEYS}
                out.append(
                    {
                        **row,
                        "month_start": date.fromisoformat(month + "-01"),
                        "by": by,
                        "cluster": item["cluster"],
                        "idle": item["idle"],
                        "cpu_cost": item["cpu_cost"],
                        "memory_cost": item["memory_cost"],
                        "cost": item["cost"],
                        "share": item["share"],
                        "currency": body["currency"],
                        "reason": item.get("reason"),
                        "as_of": _utc(month_as_of(month, as_of)),
                    }
                )
    return out


def decision_rows(
    con: duckdb.DuckDBPyConnection,
    start: datetime | None,
    end: datetime | None,
    cluster: str | None,
    as_of: datetime,
) -> list[dict[str, Any]]:
    """Each month's ranked actions, judged as of min(its end, as_of)."""
    policy = policy_of(get_settings())
    out = []
    for month in _months(start, end, as_of):
        when = month_as_of(month, as_of)
        for d in decisions(con, month, when, policy, cluster)["items"]:
            out.append(
                {
                    "month_start": date.fromisoformat(month + "-01"),
                    "as_of": _utc(when),
                    "rank": d["rank"],
                    "kind": d["kind"],
                    "target": d["target"],
                    "now": d["by"] == "now",
                    "by_date": None if d["by"] == "now" else date.fromisoformat(d["by"]),
                    "evidence": d["evidence"],
                    "monthly_savings": d["monthly_savings"],
                    "monthly_cost": d["monthly_cost"],
                    "currency": d["currency"],
                    "section": d["section"],
                }
            )
    return out
