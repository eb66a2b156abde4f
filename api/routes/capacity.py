"""`/v1/capacity`: trends from the read model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, HTTPException, Query, status

from analytics.capacity.headroom import headroom
from analytics.capacity.hotspots import growth, sustained
from analytics.capacity.trends import trends
from analytics.cost.savings import priced_rightsizing, rightsizing_options
from api.deps import ProjectorDep, ReadKey, SettingsDep
from api.params import INSTANT_NOTE, ClusterName, Instant, Month, text_matching
from api.routes.events import bad_query
from api.schemas import READ_MODEL_RESPONSES, ErrorResponse, TrendsResponse
from store.prices import PriceTableError, load_price_table
from store.settings import Settings
from store.timefmt import TimeFormatError, duration_seconds, parse_rfc3339_us, us_to_datetime

router = APIRouter(prefix="/v1/capacity", tags=["capacity"], responses=READ_MODEL_RESPONSES)


def naive_utc(name: str, value: str | None, default: datetime) -> datetime:
    """A query parameter's instant as naive UTC (the read model's convention), or `default`."""
    if value is None:
        return default
    try:
        return us_to_datetime(parse_rfc3339_us(value)).replace(tzinfo=None)
    except TimeFormatError as exc:
        raise bad_query(name, str(exc)) from None


def window(from_: str | None, to: str | None) -> tuple[datetime, datetime]:
    """The [from, to) query window: `to` defaults to now, `from` to 30 days before `to`."""
    end = naive_utc("to", to, datetime.now(UTC).replace(tzinfo=None))
    start = naive_utc("from", from_, end - timedelta(days=30))
    if start >= end:
        raise bad_query("from", "must be before `to`")
    if end - start > timedelta(days=800):
        raise bad_query("from", "the window spans more than 800 days")
    return start, end


#: Query parameters the capacity routes share: the [from, to) window and the cluster filter.
WindowFrom = Annotated[
    Instant | None,
    Query(alias="from", description=f"Start ({INSTANT_NOTE}); default `to` − 30 days."),
]
WindowTo = Annotated[
    Instant | None, Query(description=f"End, exclusive ({INSTANT_NOTE}); default now.")
]
OnlyCluster = Annotated[ClusterName | None, Query(description="Only this cluster.")]


@router.get(
    "/trends",
    response_model=TrendsResponse,
    summary="Capacity rollups per cluster, node pool, node or namespace",
    responses={422: {"model": ErrorResponse, "description": "A bad query parameter."}},
)
def get_trends(
    _key: ReadKey,
    projector: ProjectorDep,
    metric: Annotated[Literal["cpu", "memory", "pods", "nodes"], Query()] = "cpu",
    scope: Annotated[Literal["cluster", "nodepool", "node", "namespace"], Query()] = "cluster",
    step: Annotated[Literal["1h", "1d"], Query()] = "1d",
    from_: WindowFrom = None,
    to: WindowTo = None,
    cluster: OnlyCluster = None,
) -> dict[str, Any]:
    """Buckets are [t, t + step) in UTC; avg / p95 / max over the timestamps in each bucket.

    Utilisation is usage ÷ allocatable and commitment requests ÷ allocatable, taken per
    timestamp after summing the scope's members; fields that do not apply are null.
    """
    start, end = window(from_, to)
    con = projector.model.cursor()
    return {"series": trends(con, metric, scope, step, start, end, cluster)}


@router.get(
    "/sustained",
    summary="Runs above 85 % CPU or memory utilisation lasting at least an hour",
    responses={422: {"model": ErrorResponse, "description": "A bad query parameter."}},
)
def get_sustained(
    _key: ReadKey,
    projector: ProjectorDep,
    from_: WindowFrom = None,
    to: WindowTo = None,
    cluster: OnlyCluster = None,
) -> dict[str, Any]:
    """Per cluster, node pool and node: each maximal run of samples above 85 % utilisation
    (usage ÷ allocatable) spanning at least one hour; a gap over 15 minutes ends a run."""
    start, end = window(from_, to)
    return {"runs": sustained(projector.model.cursor(), start, end, cluster)}


@router.get(
    "/headroom",
    summary="Commitment now and when requests pass 85 % of allocatable (and of N-1)",
    responses={422: {"model": ErrorResponse, "description": "A bad query parameter."}},
)
def get_headroom(
    _key: ReadKey,
    projector: ProjectorDep,
    as_of: Annotated[
        Instant | None,
        Query(description=f"Evaluate as of this time ({INSTANT_NOTE}); default now."),
    ] = None,
    cluster: OnlyCluster = None,
) -> dict[str, Any]:
    """Trend of the last 30 daily averages extrapolated linearly; N-1 removes the largest node."""
    when = naive_utc("as_of", as_of, datetime.now(UTC).replace(tzinfo=None))
    items = headroom(projector.model.cursor(), when, cluster=cluster)
    return {"as_of": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "items": items}


@router.get(
    "/growth",
    summary="Month-over-month growth of usage, requests and allocatable",
    responses={422: {"model": ErrorResponse, "description": "A bad query parameter."}},
)
def get_growth(
    _key: ReadKey,
    projector: ProjectorDep,
    month: Annotated[Month, Query(description="YYYY-MM, from 1970-01 to 2199-12.")],
    metric: Annotated[Literal["cpu", "memory", "pods", "nodes"], Query()] = "cpu",
    scope: Annotated[Literal["cluster", "nodepool", "node", "namespace"], Query()] = "cluster",
) -> dict[str, Any]:
    """Average of the month's daily averages against the previous month's; growth = ratio − 1."""
    start = datetime(int(month[:4]), int(month[5:7]), 1)
    return {"month": month, "items": growth(projector.model.cursor(), start, metric, scope)}


#: The longest rightsizing look-back.
MAX_LOOKBACK: Final = timedelta(days=400)
LookbackText = Annotated[str, text_matching(r"^[0-9]{1,6}[dh]$")]


def lookback_span(value: str | None, settings: Settings) -> tuple[timedelta, str]:
    """The look-back and how the response names it: `Nd` or `Nh`, default the setting's."""
    if value is None:
        span = timedelta(days=settings.rightsizing_lookback_days)
        hours = span / timedelta(hours=1)
        if hours % 24 == 0:
            return span, f"{int(hours // 24)}d"
        return span, f"{hours:g}h"
    try:
        span = timedelta(seconds=duration_seconds(value, "dh", digits=6))
    except ValueError:
        raise bad_query("lookback", "must be a whole number of days or hours: 14d, 36h") from None
    if not timedelta(0) < span <= MAX_LOOKBACK:
        raise bad_query("lookback", "must be more than 0 and at most 400d")
    return span, value


@router.get(
    "/rightsizing",
    summary="Per container: requests against usage, the recommendation and what to reclaim",
    responses={
        422: {"model": ErrorResponse, "description": "A bad query parameter."},
        503: {
            "model": ErrorResponse,
            "description": "The read model is not open in this process, or the price table "
            "file (`OPSLEDGER_PRICE_TABLE_FILE`) cannot be read or does not follow the format.",
        },
    },
)
def get_rightsizing(
    _key: ReadKey,
    projector: ProjectorDep,
    settings: SettingsDep,
    cluster: OnlyCluster = None,
    namespace: Annotated[str | None, Query(description="Only this namespace.")] = None,
    workload: Annotated[
        str | None, Query(description="Only this workload (its name, e.g. a Deployment's).")
    ] = None,
    as_of: Annotated[
        Instant | None,
        Query(description=f"Evaluate as of this time ({INSTANT_NOTE}); default now."),
    ] = None,
    lookback: Annotated[
        LookbackText | None,
        Query(description="Samples in [as_of − lookback, as_of): `14d`, `36h`; at most 400d."),
    ] = None,
) -> dict[str, Any]:
    """CPU at the 95th percentile of usage, memory at the peak working set + 15 %, each above
    a minimum (settings); reclaim = (request − recommendation) × pods; sorted by savings."""
    when = naive_utc("as_of", as_of, datetime.now(UTC).replace(tzinfo=None))
    span, text = lookback_span(lookback, settings)
    try:
        # Read on each request, so an edit of the table needs no restart.
        table = load_price_table(settings.price_table_file)
    except PriceTableError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    items = priced_rightsizing(
        projector.model.cursor(),
        when,
        span,
        table=table,
        w_cpu=settings.cost_cpu_core_hour_weight,
        w_mem=settings.cost_memory_gib_hour_weight,
        **rightsizing_options(settings),
        cluster=cluster,
        namespace=namespace,
        workload=workload,
    )
    return {"as_of": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "lookback": text, "items": items}
