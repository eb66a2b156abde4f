"""`opsledger serve`: the HTTP API."""

from __future__ import annotations

from typing import Annotated

import typer

from api.cli.common import err
from api.cli.common import fail as _fail
from store.engine import display_url
from store.settings import get_settings


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
) -> None:
    """Serve the HTTP API."""
    import uvicorn

    from api.app import create_app
    from api.logs import uvicorn_log_config
    from api.server import ReadTimeoutProtocol
    from store.engine import make_engine
    from store.migrate import check_current

    settings = get_settings()
    # Serving a ledger that is unmigrated, behind, or migrated by a newer release would fail
    # request by request (or worse, write rows a newer schema does not expect): refuse up front.
    engine = make_engine(settings.ledger_url)
    try:
        problem = check_current(engine).problem
    finally:
        engine.dispose()
    if problem is not None:
        raise _fail(problem)
    from analytics.readmodel.model import ReadModelBusy, ensure_free

    # One server per home: say so in one line before uvicorn starts (its lifespan would
    # refuse as well, with a traceback).
    try:
        ensure_free(settings.read_model)
    except ReadModelBusy as exc:
        raise _fail(str(exc)) from None
    err.print(
        f"serving http://{host}:{port}  (ledger {display_url(settings.ledger_url)})",
        highlight=False,
    )
    local = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    app_ = create_app(settings, announce_url=f"http://{local}:{port}")
    # The h11 protocol with a deadline for each request head (uvicorn has none), and uvicorn's
    # log configuration with tokens and URL passwords redacted on every handler.
    uvicorn.run(
        app_,
        host=host,
        port=port,
        log_level=settings.log_level,
        log_config=uvicorn_log_config(),
        http=ReadTimeoutProtocol.with_timeout(settings.request_read_timeout_seconds),
    )
