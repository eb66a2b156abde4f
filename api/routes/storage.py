"""`/v1/storage`: PVC fill forecasts from the read model."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool

from analytics.storage.projection import forecasts
from api.deps import ProjectorDep, ReadKey, SettingsDep
from api.params import INSTANT_NOTE, Instant, text_matching
from api.routes.capacity import OnlyCluster, naive_utc
from api.routes.events import bad_query
from api.schemas import READ_MODEL_RESPONSES, ErrorResponse, ForecastResponse
from store.settings import Settings
from store.timefmt import duration_seconds

router = APIRouter(prefix="/v1/storage", tags=["storage"], responses=READ_MODEL_RESPONSES)
_DURATION_PATTERN = r"^[0-9]{1,9}(\.[0-9]{1,6})?[smhdw]$"
SpanText = Annotated[str, text_matching(_DURATION_PATTERN)]


def _duration(name: str, value: str | None, default: timedelta | None) -> timedelta | None:
    if value is None:
        return default
    try:
        seconds = duration_seconds(value, "smhdw", digits=9, decimals=6)
    except ValueError:
        raise bad_query(name, "must be a duration like 90m, 6h, 7d or 2w") from None
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
    request: Request,
    _key: ReadKey,
    projector: ProjectorDep,
    settings: SettingsDep,
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
    span = _duration("window", window, None)
    ahead = _duration("horizon", horizon, timedelta(days=30))
    assert ahead is not None
    explicit = naive_utc("as_of", as_of, datetime.min) if as_of is not None else None

    def compute() -> tuple[datetime, list[dict[str, Any]]]:
        when = explicit or datetime.now(UTC).replace(tzinfo=None)
        # The cursor is per thread: take it on the worker thread that uses it.
        found = forecasts(
            projector.model.cursor(),
            when,
            cluster=cluster,
            namespace=namespace,
            pvc=pvc,
            method=method,
            window=span,
            horizon=ahead,
        )
        return when, found

    key = (cluster, namespace, pvc, method, span, ahead)
    when, items = await _cache(request, settings).get(key, explicit is None, compute)
    return {"as_of": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "items": items}


class ForecastCache:
    """Forecasts as of now, reused for a while: they move in days, not seconds.

    One forecast is computed at a time: a forecast of every PVC holds a month of samples in
    memory, and concurrent requests would each hold their own. Waiting happens on the event
    loop, never on a worker thread.
    """

    MAX_ENTRIES = 64

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = asyncio.Lock()
        self._entries: OrderedDict[Any, tuple[float, datetime, list[dict[str, Any]]]] = (
            OrderedDict()
        )

    async def get(
        self,
        key: Any,
        reusable: bool,
        compute: Callable[[], tuple[datetime, list[dict[str, Any]]]],
    ) -> tuple[datetime, list[dict[str, Any]]]:
        """The cached forecast for `key` when `reusable` and fresh, else `compute`'s."""
        async with self._lock:
            hit = self._entries.get(key) if reusable else None
            if hit is not None and time.monotonic() - hit[0] < self.seconds:
                return hit[1], hit[2]
            when, items = await run_in_threadpool(compute)
            if reusable and self.seconds > 0:
                self._entries[key] = (time.monotonic(), when, items)
                self._entries.move_to_end(key)
                while len(self._entries) > self.MAX_ENTRIES:
                    self._entries.popitem(last=False)
            return when, items


def _cache(request: Request, settings: Settings) -> ForecastCache:
    cache: ForecastCache | None = getattr(request.app.state, "forecast_cache", None)
    if cache is None:
        cache = request.app.state.forecast_cache = ForecastCache(settings.forecast_cache_seconds)
    return cache
