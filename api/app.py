"""The FastAPI application: routes, error bodies and the ledger it serves."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.routes import events, health
from api.routes.events import BodyTooLarge
from ingest.events import BodyError
from store.contract import ContractError
from store.errors import ConflictError, StreamVersionError
from store.ledger import Ledger
from store.settings import Settings, get_settings

log = logging.getLogger("opsledger.api")

DESCRIPTION = """\
Event-sourced incident and capacity analytics for Kubernetes.

Every `/v1` route needs `Authorization: Bearer <token>` with a key from
`opsledger keys create`; scopes nest: admin ⊇ write ⊇ read. Errors are
`{"detail": "...", "errors": [{"index", "field", "reason"}]}`.
"""


def _error(
    status: int,
    detail: str,
    errors: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail, "errors": errors or []}
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=dict(headers) if headers else None)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ContractError)
    async def contract(_r: Request, exc: ContractError) -> JSONResponse:
        bad = len({p.index for p in exc.problems})
        return _error(
            422, f"{bad} invalid event(s); nothing was written", [p.as_dict() for p in exc.problems]
        )

    @app.exception_handler(ConflictError)
    async def conflict(_r: Request, exc: ConflictError) -> JSONResponse:
        return _error(
            409,
            f"{exc}; nothing was written",
            conflicts=[
                {"index": c.index, "source": c.source, "id": c.id, "position": c.position}
                for c in exc.conflicts
            ],
        )

    @app.exception_handler(StreamVersionError)
    async def stale(_r: Request, exc: StreamVersionError) -> JSONResponse:
        return _error(409, str(exc), current_version=exc.current)

    @app.exception_handler(BodyError)
    async def body(_r: Request, exc: BodyError) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.exception_handler(BodyTooLarge)
    async def too_large(_r: Request, exc: BodyTooLarge) -> JSONResponse:
        return _error(413, str(exc))

    @app.exception_handler(RequestValidationError)
    async def request_invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"index": None, "field": ".".join(str(p) for p in e["loc"]), "reason": e["msg"]}
            for e in exc.errors()
        ]
        return _error(422, "invalid request", errors)

    @app.exception_handler(StarletteHTTPException)
    async def http(_r: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal error; see the server log")


def create_app(settings: Settings | None = None, ledger: Ledger | None = None) -> FastAPI:
    """Build the application for the given settings (default: from the environment)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if owns_ledger:
            app.state.ledger.engine.dispose()

    owns_ledger = ledger is None
    app = FastAPI(
        title="opsledger",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # The interactive pages load their scripts from a CDN, which an air-gapped install
        # cannot reach; /openapi.json is served and works with any local OpenAPI viewer.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.ledger = ledger or Ledger.from_url(settings.ledger_url)
    _install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(events.router)
    return app
