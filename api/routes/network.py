"""`/v1/network`: subnet addresses against the pod-count trend."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from analytics.capacity.network import ip_headroom
from api.deps import ProjectorDep, ReadKey
from api.params import INSTANT_NOTE, Instant
from api.routes.capacity import OnlyCluster, naive_utc
from api.schemas import READ_MODEL_RESPONSES, ErrorResponse

router = APIRouter(prefix="/v1/network", tags=["network"], responses=READ_MODEL_RESPONSES)


@router.get(
    "/ip-headroom",
    summary="Days until each zone's subnets run out of IP addresses at the pod-count trend",
    responses={422: {"model": ErrorResponse, "description": "A bad query parameter."}},
)
def get_ip_headroom(
    _key: ReadKey,
    projector: ProjectorDep,
    cluster: OnlyCluster = None,
    as_of: Annotated[
        Instant | None,
        Query(description=f"Evaluate as of this time ({INSTANT_NOTE}); default now."),
    ] = None,
) -> dict[str, Any]:
    """Each zone's free addresses (its subnets' sum) ÷ the daily growth of its pods; every
    subnet of a zone runs out with it."""
    when = naive_utc("as_of", as_of, datetime.now(UTC).replace(tzinfo=None))
    return ip_headroom(projector.model.cursor(), when, cluster)
