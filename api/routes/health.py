"""Liveness and readiness probes (no API key: they reveal nothing)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from analytics.readmodel.projector import Projector
from api.deps import LedgerDep
from api.schemas import Health
from store.migrate import current_revision, head_revision

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> Health:
    """Always 200 while the process serves requests."""
    # In the event loop, never on a worker thread: it answers while slow requests hold those.
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    summary="Readiness: the ledger is reachable and migrated, the read model usable",
    responses={503: {"model": Health, "description": "Not ready, with the reason."}},
)
async def readyz(request: Request, ledger: LedgerDep) -> Health | JSONResponse:
    """200 when the ledger answers at this version's head revision and the read model works."""
    try:
        current = await run_in_threadpool(current_revision, ledger.engine)
    except SQLAlchemyError as exc:
        return JSONResponse(
            {"status": "unavailable", "detail": f"ledger unreachable: {type(exc).__name__}"}, 503
        )
    head = head_revision()
    if current != head:
        return JSONResponse(
            {
                "status": "unavailable",
                "detail": f"schema at {current}, needs {head}: run `opsledger db upgrade`",
            },
            503,
        )
    projector: Projector | None = getattr(request.app.state, "projector", None)
    if projector is not None and projector.model.problem is not None:
        # The reason names server paths, and this probe needs no key: the log has it.
        detail = "the read model failed and is being reopened; see the server log"
        return JSONResponse({"status": "unavailable", "detail": detail}, 503)
    return Health(status="ok")
