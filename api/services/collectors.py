"""Collectors' health: the ledger's collector states joined with the configured intervals."""

from __future__ import annotations

from typing import Any

from store.collectors import CollectorState
from store.timefmt import format_us


def _t(us: int | None) -> str | None:
    return None if us is None else format_us(us)


def status_rows(
    known: list[CollectorState], intervals: dict[str, float], now_us: int
) -> list[dict[str, Any]]:
    """Join the ledger's collector states with the configured intervals."""
    by_name = {s.name: s for s in known}
    out = []
    for name in sorted(set(by_name) | set(intervals)):
        st = by_name.get(name)
        interval = intervals.get(name)
        lag = None
        if st is not None and st.last_success_at_us is not None:
            lag = (now_us - st.last_success_at_us) / 1e6
        if st is None or st.last_run_at_us is None:
            status = "never_run"
        elif st.failures:
            status = "failing"
        elif interval is not None and (lag is None or lag > 3 * interval):
            status = "stale"
        else:
            status = "ok"
        out.append(
            {
                "name": name,
                "configured": interval is not None,
                "interval_seconds": interval,
                "status": status,
                "last_run_at": _t(st.last_run_at_us) if st else None,
                "last_success_at": _t(st.last_success_at_us) if st else None,
                "last_error": st.last_error if st else None,
                "last_error_at": _t(st.last_error_at_us) if st else None,
                "failures": st.failures if st else 0,
                "runs": st.runs if st else 0,
                "events_appended": st.events_appended if st else 0,
                "last_run_events": st.last_run_events if st else 0,
                "cursor_at": _t(st.cursor_at_us) if st else None,
                "lag_seconds": lag,
            }
        )
    return out
