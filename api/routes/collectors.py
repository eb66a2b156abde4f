"""`/v1/collectors`: the health of each collector, from the ledger."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from api.deps import LedgerDep, ReadKey
from ingest.collectors.scheduler import CollectorScheduler
from store.collectors import CollectorState, states
from store.timefmt import format_us


class CollectorStatus(BaseModel):
    """One collector's last runs."""

    name: str
    configured: bool = Field(description="Run on a schedule by this server.")
    interval_seconds: float | None
    status: str = Field(description="ok, failing, stale (no success for 3 intervals), never_run.")
    last_run_at: str | None
    last_success_at: str | None
    last_error: str | None
    last_error_at: str | None
    failures: int = Field(description="Failed runs in a row.")
    runs: int
    events_appended: int = Field(description="Events appended over all runs.")
    last_run_events: int
    cursor_at: str | None = Field(description="When its cursor last moved.")
    lag_seconds: float | None = Field(description="Seconds since the last successful run.")


class CollectorsResponse(BaseModel):
    """Every collector configured here or known to the ledger."""

    collectors: list[CollectorStatus]


router = APIRouter(prefix="/v1/collectors", tags=["collectors"])


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


@router.get("", response_model=CollectorsResponse, summary="Each collector's last runs")
async def get_collectors(request: Request, ledger: LedgerDep, _key: ReadKey) -> dict[str, Any]:
    """Last run, last success, last error, events appended and lag of every collector this
    server schedules or the ledger has a record of (e.g. run by `opsledger collect`)."""
    scheduler: CollectorScheduler | None = getattr(request.app.state, "collectors", None)
    intervals = (
        {n: c.interval_seconds for n, c in scheduler.collectors.items()} if scheduler else {}
    )
    known = await run_in_threadpool(states, ledger.engine)
    return {"collectors": status_rows(known, intervals, time.time_ns() // 1000)}
