"""Decisions for the API, the CLI and the report: the policy from the settings, and the list."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import duckdb

from analytics.decisions.gather import decisions, month_as_of, policy_of
from store.settings import Settings


def month_decisions(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    month: str,
    now: datetime,
    cluster: str | None = None,
) -> dict[str, Any]:
    """The month's ranked actions, judged as of its end (or now, while it runs)."""
    return decisions(con, month, month_as_of(month, now), policy_of(settings), cluster)


def expansion_costs(
    con: duckdb.DuckDBPyConnection, settings: Settings, month: str, as_of: datetime
) -> list[dict[str, Any]]:
    """The month's `expand_pool` decisions as `{target, by, monthly_cost, currency}`."""
    found = decisions(con, month, as_of, policy_of(settings))
    return [
        {k: d[k] for k in ("target", "by", "monthly_cost", "currency")}
        for d in found["items"]
        if d["kind"] == "expand_pool"
    ]
