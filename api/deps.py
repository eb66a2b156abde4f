"""FastAPI dependencies: the ledger, the settings and the calling API key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from analytics.readmodel.projector import Projector
from store.keys import ApiKey, Scope, authenticate
from store.ledger import Ledger
from store.settings import Settings

_bearer = HTTPBearer(
    auto_error=False,
    description="An API key from `opsledger keys create`: `Authorization: Bearer olk_…`.",
)


def get_ledger(request: Request) -> Ledger:
    """The application's ledger."""
    ledger: Ledger = request.app.state.ledger
    return ledger


def get_settings(request: Request) -> Settings:
    """The application's settings."""
    settings: Settings = request.app.state.settings
    return settings


def get_projector(request: Request) -> Projector:
    """The server's projector (503 when the read model is not open in this process)."""
    projector: Projector | None = getattr(request.app.state, "projector", None)
    if projector is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "the read model is not open in this process (projections are off)",
        )
    return projector


LedgerDep = Annotated[Ledger, Depends(get_ledger)]
ProjectorDep = Annotated[Projector, Depends(get_projector)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def require(scope: Scope) -> Callable[..., object]:
    """A dependency admitting keys whose scope covers `scope` (401 unknown, 403 too small)."""

    async def dependency(ledger: LedgerDep, credentials: Credentials) -> ApiKey:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing API key: send Authorization: Bearer <token>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        key = await run_in_threadpool(authenticate, ledger.engine, credentials.credentials)
        if key is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "unknown or revoked API key",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if not key.allows(scope):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"this route needs the {scope!r} scope; key {key.key_id} has {key.scope!r}",
            )
        return key

    # api/openapi.py declares 401 (and 403 for scopes above read) on every route using it.
    dependency.opsledger_scope = scope  # type: ignore[attr-defined]
    return dependency


ReadKey = Annotated[ApiKey, Depends(require("read"))]
WriteKey = Annotated[ApiKey, Depends(require("write"))]
AdminKey = Annotated[ApiKey, Depends(require("admin"))]
QueryKey = Annotated[ApiKey, Depends(require("query"))]
