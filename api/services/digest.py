"""The daily digest as the API and the CLI give it: the look-back and the projections it reads."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final

import duckdb

from analytics.outputs.digest import digest
from store.timefmt import duration_seconds, utc_now

SINCE_MIN: Final = timedelta(minutes=5)
SINCE_MAX: Final = timedelta(days=31)
#: The read model's projections the digest reads (the CLI catches these up first).
PROJECTIONS: Final = ("incidents", "cluster_events", "capacity", "storage")


def parse_since(value: str) -> timedelta:
    """A look-back like 90m, 24h, 7d or 2w, between 5 minutes and 31 days (ValueError else)."""
    try:
        span = timedelta(seconds=duration_seconds(value, "mhdw", digits=6))
    except ValueError:
        raise ValueError("must be a duration like 90m, 24h, 7d or 2w") from None
    if not SINCE_MIN <= span <= SINCE_MAX:
        raise ValueError("must be between 5m and 31d")
    return span


def build(con: duckdb.DuckDBPyConnection, since: timedelta, max_age_hours: float) -> dict[str, Any]:
    """The digest as of now."""
    return digest(con, utc_now(), since, timedelta(hours=max_age_hours))
