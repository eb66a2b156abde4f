"""Liveness and readiness probes (no API key: they reveal nothing)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from api.deps import LedgerDep
from api.schemas import Health
from store.migrate import current_revision, head_revision

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
def healthz() -> Health:
    """Always 200 while the process serves requests."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    summary="Readiness: the ledger is reachable and migrated",
    responses={503: {"model": Health, "description": "Not ready, with the reason."}},
)
async def readyz(ledger: LedgerDep) -> Health | JSONResponse:
    """200 when the ledger answers and its schema is at this version's head revision."""
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
    return Health(status="ok")
