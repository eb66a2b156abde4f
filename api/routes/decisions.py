"""`/v1/decisions`: the month's ranked actions (reclaim, expand, raise a limit, …)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status

from api.deps import ProjectorDep, ReadKey, SettingsDep
from api.params import ClusterName, Month
from api.schemas import READ_MODEL_RESPONSES, ErrorResponse
from api.services.decisions import month_decisions
from store.prices import PriceTableError

router = APIRouter(prefix="/v1/decisions", tags=["decisions"], responses=READ_MODEL_RESPONSES)


@router.get(
    "",
    summary="One ranked list of capacity and cost actions for a month, with evidence and money",
    responses={
        422: {"model": ErrorResponse, "description": "A bad query parameter."},
        503: {
            "model": ErrorResponse,
            "description": "The read model is not open in this process, or the price table "
            "file (`OPSLEDGER_PRICE_TABLE_FILE`) cannot be read or does not follow the format.",
        },
    },
)
def get_decisions(
    _key: ReadKey,
    projector: ProjectorDep,
    settings: SettingsDep,
    month: Annotated[
        Month | None, Query(description="YYYY-MM, from 1970-01 to 2199-12; default this month.")
    ] = None,
    cluster: Annotated[ClusterName | None, Query(description="Only this cluster.")] = None,
) -> dict[str, Any]:
    """Judged as of the month's end (or now while it runs): what to reclaim, expand or raise,
    by when, and at what cost. `now` first, then by date, then by money (docs/metrics.md,
    "Decisions")."""
    now = datetime.now(UTC).replace(tzinfo=None)
    try:
        return month_decisions(
            projector.model.cursor(), settings, month or now.strftime("%Y-%m"), now, cluster
        )
    except PriceTableError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
