"""`/metrics`: Prometheus exposition of the service's requests and the read model's figures."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client.exposition import choose_encoder

from api.deps import Credentials, LedgerDep, SettingsDep, require
from api.metrics import AppMetrics
from api.schemas import ErrorResponse

router = APIRouter(tags=["metrics"])
# Every scope covers read, so a key is either unknown (401) or good enough.
_read_key = cast(Callable[..., Awaitable[Any]], require("read"))


async def metrics_access(
    settings: SettingsDep, ledger: LedgerDep, credentials: Credentials
) -> None:
    """A read key, unless OPSLEDGER_METRICS_PUBLIC lets scrapers in without one."""
    if not settings.metrics_public:
        await _read_key(ledger, credentials)


metrics_access.opsledger_authenticates = True  # type: ignore[attr-defined]


@router.get(
    "/metrics",
    summary="Prometheus metrics: MTTA/MTTR, open SLA breaches, PVCs, lag, collectors, requests",
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain; version=0.0.4": {}, "application/openmetrics-text": {}},
            "description": "The Prometheus text format, or OpenMetrics when the scraper asks.",
        },
        401: {"model": ErrorResponse, "description": "No, unknown or revoked API key."},
    },
)
def get_metrics(request: Request, _access: Annotated[None, Depends(metrics_access)]) -> Response:
    """Read-model figures are computed at scrape time and reused for
    OPSLEDGER_METRICS_CACHE_SECONDS; request metrics count every request this process served."""
    app_metrics: AppMetrics = request.app.state.metrics
    try:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    except (TypeError, ValueError):
        # prometheus_client cannot parse some OpenMetrics versions (`version=x`): a scraper
        # that asks for one it does not know gets the text format every scraper reads.
        encoder, content_type = choose_encoder("")
    return Response(encoder(app_metrics.registry), media_type=content_type)
