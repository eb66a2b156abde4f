"""`/v1/storage`: PVC fill forecasts from the read model."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from analytics.storage import forecasts
from api.deps import ProjectorDep, ReadKey
from api.params import INSTANT_NOTE, Instant, text_matching
from api.routes.capacity import OnlyCluster, naive_utc
from api.routes.events import bad_query
from api.schemas import READ_MODEL_RESPONSES, ErrorResponse, ForecastResponse

router = APIRouter(prefix="/v1/storage", tags=["storage"], responses=READ_MODEL_RESPONSES)
_DURATION_PATTERN = r"^[0-9]{1,9}(\.[0-9]{1,6})?[smhdw]$"
_DURATION = re.compile(r"^(\d{1,9}(?:\.\d{1,6})?)(s|m|h|d|w)$")
SpanText = Annotated[str, text_matching(_DURATION_PATTERN)]
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _duration(name: str, value: str | None, default: timedelta | None) -> timedelta | None:
    if value is None:
        return default
    m = _DURATION.match(value)
    if m is None:
        raise bad_query(name, "must be a duration like 90m, 6h, 7d or 2w")
    seconds = float(m.group(1)) * _UNITS[m.group(2)]
    # Bounded before it becomes a timedelta, which overflows past 999,999,999 days.
    if not 300 <= seconds <= 366 * 86400:
        raise bad_query(name, "must be between 5m and 366d")
    return timedelta(seconds=seconds)


@router.get(
    "/forecast",
    response_model=ForecastResponse,
    summary="When each PVC reaches 85 %, 90 % and 100 % of its capacity",
    responses={422: {"model": ErrorResponse, "description": "A bad query parameter."}},
)
async def get_forecast(
    _key: ReadKey,
    projector: ProjectorDep,
    cluster: OnlyCluster = None,
    namespace: Annotated[str | None, Query(description="Only this namespace.")] = None,
    pvc: Annotated[str | None, Query(description="Only this PersistentVolumeClaim.")] = None,
    as_of: Annotated[
        Instant | None,
        Query(description=f"Evaluate as if it were this time ({INSTANT_NOTE}); default now."),
    ] = None,
    method: Annotated[
        Literal["auto", "predict_linear"],
        Query(description="`auto` (robust trend) or Prometheus `predict_linear`."),
    ] = "auto",
    window: Annotated[
        SpanText | None,
        Query(
            description="Samples to fit (e.g. 6h, 7d; 5m to 366d); default 6h for predict_linear."
        ),
    ] = None,
    horizon: Annotated[
        SpanText, Query(description="`forecast` status when 90 % comes within this (5m to 366d).")
    ] = "30d",
) -> dict[str, Any]:
    """Days are floats from `as_of`: 0 when already past, null when never reached at the
    current trend. `eta_90_low` / `eta_90_high` bound an 80 % interval of the 90 % date."""
    when = naive_utc("as_of", as_of, datetime.now(UTC).replace(tzinfo=None))
    span = _duration("window", window, None)
    ahead = _duration("horizon", horizon, timedelta(days=30))
    assert ahead is not None
    # The cursor is per thread: take it on the worker thread that uses it, never on the loop's.
    items = await run_in_threadpool(
        lambda: forecasts(
            projector.model.cursor(),
            when,
            cluster=cluster,
            namespace=namespace,
            pvc=pvc,
            method=method,
            window=span,
            horizon=ahead,
        )
    )
    return {"as_of": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "items": items}
