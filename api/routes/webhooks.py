"""`/v1/webhooks/*`: Alertmanager and PagerDuty deliveries recorded as incident events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.bodies import model_schema
from api.deps import LedgerDep, SettingsDep, WriteKey
from api.routes.events import read_limited
from api.schemas import ErrorResponse
from ingest.webhooks import (
    AlertmanagerPayload,
    AlertmanagerRules,
    Delivered,
    Fault,
    PagerDutyPayload,
    PagerDutyRules,
    PayloadError,
    Translation,
    append_delivery,
    decode_json,
    translate_alertmanager,
    translate_pagerduty,
    verify_pagerduty_signature,
)
from store.ledger import Ledger

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


class SkippedItem(BaseModel):
    """Part of a delivery that was not recorded."""

    index: int | None = Field(description="Index of the alert in `alerts` (null for PagerDuty).")
    id: str | None = Field(description="The event id it would have had, when known.")
    reason: str


class WebhookResponse(BaseModel):
    """What a webhook delivery recorded."""

    appended: int = Field(description="Events newly written.")
    duplicates: int = Field(description="Events already recorded with identical content.")
    ignored: list[SkippedItem] = Field(description="What was left out, and why.")
    incidents: list[str] = Field(description="Incident ids the recorded events concern.")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "appended": 1,
                    "duplicates": 1,
                    "ignored": [],
                    "incidents": ["am-a1bc48475b20e73d-20200206T001758.432911Z"],
                }
            ]
        }
    }


_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Malformed JSON."},
    401: {"model": ErrorResponse, "description": "No, unknown or revoked API key."},
    403: {"model": ErrorResponse, "description": "The key lacks the write scope."},
    413: {"model": ErrorResponse, "description": "Body over OPSLEDGER_MAX_BODY_BYTES."},
    415: {"model": ErrorResponse, "description": "A compressed body (Content-Encoding)."},
    422: {"model": ErrorResponse, "description": "Wrong payload shape: each index, field, reason."},
}


def _body(model: type[BaseModel]) -> dict[str, Any]:
    schema = model_schema(model)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _unprocessable(faults: list[Fault]) -> JSONResponse:
    return JSONResponse(
        {
            "detail": f"{len(faults)} invalid field(s) in the payload; nothing was written",
            "errors": [f.as_dict() for f in faults],
        },
        status_code=422,
    )


async def _record(
    request: Request,
    ledger: Ledger,
    body: bytes,
    max_events: int,
    translate: Callable[[Any], Translation],
) -> WebhookResponse | JSONResponse:
    def work() -> Delivered:
        # Parsing, validating and appending block: off the event loop, like POST /v1/events.
        t = translate(decode_json(body))
        if len(t.events) > max_events:
            reason = f"makes {len(t.events)} events; at most {max_events} (max_batch_events)"
            raise PayloadError([Fault(None, "", reason)])
        return append_delivery(ledger, t)

    try:
        delivered = await run_in_threadpool(work)
    except PayloadError as exc:
        return _unprocessable(exc.faults)
    projector = getattr(request.app.state, "projector", None)
    if projector is not None and delivered.appended:
        projector.poke()
    return WebhookResponse.model_validate(delivered.as_dict())


@router.post(
    "/alertmanager",
    response_model=WebhookResponse,
    summary="Record an Alertmanager webhook delivery (version 4)",
    responses=_RESPONSES,
    openapi_extra=_body(AlertmanagerPayload),
)
async def alertmanager(
    request: Request, ledger: LedgerDep, settings: SettingsDep, _key: WriteKey
) -> WebhookResponse | JSONResponse:
    """A firing alert opens an incident, a resolved one resolves it; redelivery is a no-op."""
    body = await read_limited(request, settings.max_body_bytes)
    rules = AlertmanagerRules.from_settings(settings)
    return await _record(
        request,
        ledger,
        body,
        settings.max_batch_events,
        lambda doc: translate_alertmanager(doc, rules),
    )


@router.post(
    "/pagerduty",
    response_model=WebhookResponse,
    summary="Record a PagerDuty V3 webhook event",
    openapi_extra=_body(PagerDutyPayload),
    responses={
        **_RESPONSES,
        401: {
            "model": ErrorResponse,
            "description": "No, unknown or revoked API key, or a bad X-PagerDuty-Signature.",
        },
    },
)
async def pagerduty(
    request: Request, ledger: LedgerDep, settings: SettingsDep, _key: WriteKey
) -> WebhookResponse | JSONResponse:
    """Incident lifecycle events become incident events; other event types are ignored."""
    body = await read_limited(request, settings.max_body_bytes)
    secret = settings.pagerduty_webhook_secret
    if secret is not None and not verify_pagerduty_signature(
        body, request.headers.get("x-pagerduty-signature"), secret.get_secret_value()
    ):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "X-PagerDuty-Signature is missing or matches no v1 signature of the body",
        )
    rules = PagerDutyRules.from_settings(settings)
    return await _record(
        request,
        ledger,
        body,
        settings.max_batch_events,
        lambda doc: translate_pagerduty(doc, rules),
    )
