"""`/v1/capacity`: trends from the read model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from analytics.capacity.hotspots import growth, headroom, sustained
from analytics.capacity.trends import trends
from api.deps import ProjectorDep, ReadKey
from api.params import INSTANT_NOTE, ClusterName, Instant, Month
from api.routes.events import bad_query
from api.schemas import READ_MODEL_RESPONSES, ErrorResponse, TrendsResponse
from store.timefmt import TimeFormatError, parse_rfc3339_us, us_to_datetime

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
    items = headroom(projector.model.cursor(), when)
    if cluster is not None:
        items = [i for i in items if i["cluster"] == cluster]
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
