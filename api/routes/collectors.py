"""`/v1/collectors`: the health of each collector, from the ledger."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from api.deps import LedgerDep, ReadKey
from api.services.collectors import status_rows
from ingest.collectors.scheduler import CollectorScheduler
from store.collectors import states


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
