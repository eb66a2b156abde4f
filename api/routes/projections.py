"""`/v1/projections`: checkpoints, catch-up and rebuilds of the read model."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import WithJsonSchema

from analytics.readmodel.registry import default_projections
from api.deps import AdminKey, ProjectorDep, ReadKey
from api.routes.events import bad_query
from api.schemas import (
    ADMIN_RESPONSES,
    READ_MODEL_RESPONSES,
    ErrorResponse,
    ProjectionsResponse,
    ProjectionState,
)

#: A projection's name (the route names an unknown one in its 422).
ProjectionName = Annotated[
    str, WithJsonSchema({"type": "string", "enum": [p.name for p in default_projections()]})
]
router = APIRouter(prefix="/v1/projections", tags=["projections"], responses=READ_MODEL_RESPONSES)


def _states(projector: ProjectorDep) -> ProjectionsResponse:
    return ProjectionsResponse(
        projections=[ProjectionState.model_validate(s.as_dict()) for s in projector.runner.status()]
    )


@router.get("", response_model=ProjectionsResponse, summary="Each projection's checkpoint and lag")
def get_projections(_key: ReadKey, projector: ProjectorDep) -> ProjectionsResponse:
    """Position folded in, ledger head, lag in positions, and the events each projection
    skipped because it cannot apply them (`poisoned`), with its last error if it is failing."""
    return _states(projector)


@router.post(
    "/catch-up",
    response_model=ProjectionsResponse,
    summary="Fold in everything recorded so far, now",
    responses=ADMIN_RESPONSES,
)
async def post_catch_up(_key: AdminKey, projector: ProjectorDep) -> ProjectionsResponse:
    """Runs the catch-up the server otherwise runs on its schedule and after ingests."""
    await run_in_threadpool(projector.runner.catch_up)
    return _states(projector)


@router.post(
    "/rebuild",
    response_model=ProjectionsResponse,
    summary="Drop projections and replay them from the start of the ledger",
    responses={
        **ADMIN_RESPONSES,
        422: {"model": ErrorResponse, "description": "An unknown projection name."},
    },
)
async def post_rebuild(
    _key: AdminKey,
    projector: ProjectorDep,
    name: Annotated[
        list[ProjectionName] | None, Query(description="Projections to rebuild; default all.")
    ] = None,
) -> ProjectionsResponse:
    """Replays synchronously; the response comes when the rebuild is done."""
    unknown = [n for n in name or [] if n not in projector.runner.projections]
    if unknown:
        raise bad_query(
            "name",
            f"{unknown[0]!r} is not a projection; known: "
            + ", ".join(projector.runner.projections),
        )
    await run_in_threadpool(projector.runner.rebuild, name)
    return _states(projector)
