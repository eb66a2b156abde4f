"""`/v1/cost`: showback of node cost and the month's spend forecast, from the read model."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import duckdb
from fastapi import APIRouter, HTTPException, Query, status

from analytics.cost.forecast import forecast
from analytics.cost.showback import showback
from analytics.decisions.gather import month_as_of
from api.deps import ProjectorDep, ReadKey, SettingsDep
from api.params import INSTANT_NOTE, ClusterName, Instant, Month
from api.routes.capacity import naive_utc
from api.schemas import READ_MODEL_RESPONSES, ErrorResponse
from api.services.decisions import expansion_costs
from store.prices import PriceTable, PriceTableError, load_price_table
from store.settings import Settings

router = APIRouter(prefix="/v1/cost", tags=["cost"], responses=READ_MODEL_RESPONSES)
_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorResponse, "description": "A bad query parameter."},
    503: {
        "model": ErrorResponse,
        "description": "The read model is not open in this process, or the price table file "
        "(`OPSLEDGER_PRICE_TABLE_FILE`) cannot be read or does not follow the format.",
    },
}
MonthParam = Annotated[Month, Query(description="YYYY-MM, from 1970-01 to 2199-12.")]


def price_table(settings: Settings) -> PriceTable | None:
    """The configured price table, read on each request so an edit needs no restart (503 when
    the file is bad: ingest and every other route keep working)."""
    try:
        return load_price_table(settings.price_table_file)
    except PriceTableError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@router.get(
    "/showback",
    summary="Each namespace's, node pool's or workload's share of the node cost, and idle",
    responses=_RESPONSES,
)
def get_showback(
    _key: ReadKey,
    projector: ProjectorDep,
    settings: SettingsDep,
    month: MonthParam,
    by: Annotated[
        Literal["namespace", "nodepool", "workload"],
        Query(description="Group by namespace, node pool, or (namespace, kind, workload)."),
    ] = "namespace",
    cluster: Annotated[ClusterName | None, Query(description="Only this cluster.")] = None,
) -> dict[str, Any]:
    """A node-hour costs its instance type's hourly price (Cost Explorer, else the price
    table); each container sample on it is charged its allocation, max(request, usage), at
    the node's CPU and memory prices; the rest is the cluster's idle. Uncostable items have
    null costs and a `reason`."""
    table = price_table(settings)
    return showback(
        projector.model.cursor(),
        month,
        by,
        _now(),
        table,
        settings.cost_cpu_core_hour_weight,
        settings.cost_memory_gib_hour_weight,
        cluster,
    )


def expansions(
    con: duckdb.DuckDBPyConnection, settings: Settings, month: str, as_of: datetime
) -> list[Any]:
    """The month's `expand_pool` decisions: `{target, by, monthly_cost, currency}` each (503
    when the price table is bad)."""
    try:
        return expansion_costs(con, settings, month, month_as_of(month, as_of))
    except PriceTableError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None


@router.get(
    "/forecast",
    summary="The month's spend to date, forecast to month end with an 80 % band, and budget",
    responses=_RESPONSES,
)
def get_forecast(
    _key: ReadKey,
    projector: ProjectorDep,
    settings: SettingsDep,
    month: Annotated[
        Month | None, Query(description="YYYY-MM, from 1970-01 to 2199-12; default as_of's month.")
    ] = None,
    as_of: Annotated[
        Instant | None,
        Query(description=f"Forecast as of this time ({INSTANT_NOTE}); default now."),
    ] = None,
) -> dict[str, Any]:
    """Each remaining day is forecast by the mean spend of its weekday over the 56 days of
    history before the first remaining day; the band is ± 1.2816 σ √(remaining days)."""
    when = naive_utc("as_of", as_of, _now())
    name = month or when.strftime("%Y-%m")
    con = projector.model.cursor()
    return forecast(con, name, when, expansions(con, settings, name, when))
