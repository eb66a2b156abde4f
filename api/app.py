"""The FastAPI application: routes, error bodies and the ledger it serves."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from analytics.readmodel.model import ReadModelBusy, ReadModelUnavailable
from analytics.readmodel.projector import Projector
from analytics.sql.service import QueryService
from api.disk_full import install as install_disk_full
from api.incident_schemas import Incident as IncidentBody
from api.logs import install as install_log_redaction
from api.metrics import install as install_metrics
from api.openapi import install as install_openapi
from api.routes import capacity, collectors, events, health, incidents, sla, storage
from api.routes import cost as cost_routes
from api.routes import decisions as decision_routes
from api.routes import digest as digest_routes
from api.routes import exports as export_routes
from api.routes import metrics as metrics_routes
from api.routes import network as network_routes
from api.routes import projections as projection_routes
from api.routes import query as query_routes
from api.routes import reports as report_routes
from api.routes import webhooks as webhook_routes
from api.routes.events import BodyTooLarge
from api.server import BodyTimeout
from api.services.incidents import state_body
from ingest.collectors.config import load_collectors
from ingest.collectors.runtime import Collector
from ingest.collectors.scheduler import CollectorScheduler
from ingest.events import BodyError
from ingest.incidents import CommandError, IncidentNotFound, InvalidTransition
from store.contract import ContractError, reason_of
from store.errors import ConflictError, StreamVersionError
from store.ledger import Ledger
from store.settings import Settings, get_settings

log = logging.getLogger("opsledger.api")

DESCRIPTION = """\
Event-sourced incident and capacity analytics for Kubernetes.

Every `/v1` route needs `Authorization: Bearer <token>` with a key from
`opsledger keys create`; scopes nest: admin ⊇ write ⊇ read, and `query` (read plus
`POST /v1/query`) is granted only explicitly. Errors are
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
                {
                    "index": c.index,
                    "source": c.source,
                    "id": c.id,
                    "position": c.position,
                    "first_index": c.first_index,
                }
                for c in exc.conflicts
            ],
        )

    @app.exception_handler(StreamVersionError)
    async def stale(_r: Request, exc: StreamVersionError) -> JSONResponse:
        return _error(409, f"{exc}; nothing was written", current_version=exc.current)

    @app.exception_handler(IncidentNotFound)
    async def no_incident(_r: Request, exc: IncidentNotFound) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(InvalidTransition)
    async def transition(_r: Request, exc: InvalidTransition) -> JSONResponse:
        state = IncidentBody(**state_body(exc.state)).model_dump()
        return _error(409, f"{exc}; nothing was written", state=state)

    @app.exception_handler(CommandError)
    async def command(_r: Request, exc: CommandError) -> JSONResponse:
        return _error(422, str(exc), [{"index": None, "field": exc.field, "reason": exc.reason}])

    @app.exception_handler(BodyError)
    async def body(_r: Request, exc: BodyError) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.exception_handler(ReadModelUnavailable)
    async def read_model_down(_r: Request, exc: ReadModelUnavailable) -> JSONResponse:
        # The projector reopens it by itself (a fatal DuckDB error invalidated it): retry.
        return _error(503, str(exc), headers={"Retry-After": "5"})

    @app.exception_handler(BodyTooLarge)
    async def too_large(_r: Request, exc: BodyTooLarge) -> JSONResponse:
        return _error(413, str(exc))

    @app.exception_handler(RequestValidationError)
    async def request_invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            reason = next(str(e.get("ctx", {}).get("error", e["msg"])) for e in exc.errors())
            return _error(400, f"malformed JSON: {reason}")
        errors = [
            {"index": None, "field": ".".join(str(p) for p in e["loc"]), "reason": reason_of(e)}
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


def _announce(path: Path, url: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole, then renamed: the CLI never reads half an announcement.
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(orjson.dumps({"url": url, "pid": os.getpid()}))
    os.replace(tmp, path)


def _withdraw(path: Path) -> None:
    # Only our own announcement: another server may have taken over the read model since.
    try:
        if orjson.loads(path.read_bytes()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, orjson.JSONDecodeError, AttributeError):
        pass


def create_app(
    settings: Settings | None = None,
    ledger: Ledger | None = None,
    projections: bool = True,
    announce_url: str | None = None,
    sources: Sequence[Collector] | None = None,
) -> FastAPI:
    """Build the application for the given settings (default: from the environment).

    With `projections`, startup opens the read model and keeps it caught up; with
    `announce_url`, it also tells the CLI where to reach this server while it holds it.
    `sources` are the collectors to schedule (default: those of the collectors file).
    """
    settings = settings or get_settings()
    if sources is None and settings.collectors_file is not None:
        # Read at build time, so a bad file stops `opsledger serve` before it listens.
        sources = load_collectors(settings.collectors_file)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The read model opens only in a served process, which holds it until it stops: one
        # server per home. Another holding it refuses the start, before the server listens.
        projector = None
        app.state.query_service = None
        if projections:
            try:
                projector = Projector(
                    app.state.ledger, settings.read_model, settings.projection_interval_seconds
                )
            except ReadModelBusy as exc:
                log.error("not starting: %s", exc)
                raise
            try:
                projector.start()
                if announce_url is not None:
                    _announce(settings.server_file, announce_url)
                # Read-only SQL runs in worker processes on snapshots of the read model.
                app.state.query_service = QueryService(projector.model, settings)
            except BaseException:
                _withdraw(settings.server_file)
                projector.stop()
                raise
        app.state.projector = projector
        scheduler = None
        if sources:
            scheduler = CollectorScheduler(
                app.state.ledger, sources, projector.poke if projector else None
            )
            scheduler.start()
        app.state.collectors = scheduler
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.stop()
            if app.state.query_service is not None:
                app.state.query_service.close()
            if projector is not None:
                _withdraw(settings.server_file)
                projector.stop()
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
    install_disk_full(app)
    install_log_redaction()
    app.add_middleware(
        BodyTimeout,
        idle_seconds=settings.request_read_timeout_seconds,
        total_seconds=settings.request_body_timeout_seconds,
    )
    app.include_router(health.router)
    app.include_router(events.router)
    app.include_router(projection_routes.router)
    app.include_router(capacity.router)
    app.include_router(storage.router)
    app.include_router(network_routes.router)
    app.include_router(cost_routes.router)
    app.include_router(decision_routes.router)
    app.include_router(incidents.router)
    app.include_router(sla.router)
    app.include_router(webhook_routes.router)
    app.include_router(collectors.router)
    app.include_router(query_routes.router)
    app.include_router(export_routes.router)
    app.include_router(digest_routes.router)
    app.include_router(report_routes.router)
    app.include_router(metrics_routes.router)
    install_metrics(app, settings)
    install_openapi(app)
    return app
