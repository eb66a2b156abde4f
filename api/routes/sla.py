"""`/v1/sla`: the SLA policy and the breaches it finds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool

from analytics.incidents.metrics import breaches
from analytics.incidents.reads import policy_in_force
from api.bodies import policy_schema
from api.deps import AdminKey, LedgerDep, ProjectorDep, ReadKey, SettingsDep
from api.incident_schemas import BreachesResponse, PolicyResponse
from api.params import INSTANT_NOTE, Instant
from api.routes.capacity import naive_utc, window
from api.routes.events import read_limited
from api.routes.incidents import OpenedFrom, OpenedTo
from api.schemas import ADMIN_RESPONSES, READ_MODEL_RESPONSES, ErrorResponse
from ingest.sla import parse_policy, set_policy
from store.datamodels import SlaPolicy
from store.timefmt import datetime_to_us, format_us

router = APIRouter(prefix="/v1/sla", tags=["sla"])


def _policy_body() -> dict[str, Any]:
    schema = policy_schema()
    content = {media: {"schema": schema} for media in ("application/json", "application/yaml")}
    return {"requestBody": {"required": True, "content": content}}


@router.put(
    "/policy",
    response_model=PolicyResponse,
    summary="Set the SLA policy (JSON or YAML)",
    openapi_extra=_policy_body(),
    responses={
        **ADMIN_RESPONSES,
        400: {"model": ErrorResponse, "description": "Malformed JSON or YAML."},
        401: {"model": ErrorResponse, "description": "No, unknown or revoked API key."},
        413: {"model": ErrorResponse, "description": "Body over OPSLEDGER_MAX_BODY_BYTES."},
        415: {"model": ErrorResponse, "description": "Neither JSON nor YAML."},
        422: {"model": ErrorResponse, "description": "A bad field, as `data.<path>`."},
        507: {"description": "The ledger's storage is full: nothing was written."},
    },
)
async def put_policy(
    request: Request,
    ledger: LedgerDep,
    settings: SettingsDep,
    _key: AdminKey,
    effective_from: Annotated[
        Instant | None,
        Query(
            description=f"In force from ({INSTANT_NOTE}); default now. Incidents opened from "
            "then on are judged by it."
        ),
    ] = None,
) -> dict[str, Any]:
    """Records an `opsledger.sla.policy_set` event. Send `Content-Type: application/yaml` for
    YAML. Omitted fields take their defaults (UTC, Mon–Fri 09:00–17:00, no holidays, P0 15m,
    P1 1h, P2 4h, P3 next_business_day, no resolution targets)."""
    body = await read_limited(request, settings.max_body_bytes)
    doc = parse_policy(body, request.headers.get("content-type"))
    when = naive_utc("effective_from", effective_from, datetime.now(UTC).replace(tzinfo=None))
    effective_us = datetime_to_us(when.replace(tzinfo=UTC))
    policy, position = await run_in_threadpool(set_policy, ledger, doc, effective_us)
    projector = getattr(request.app.state, "projector", None)
    if projector is not None:
        projector.poke()
    return {"policy": policy, "effective_from": format_us(effective_us), "position": position}


@router.get(
    "/policy",
    response_model=PolicyResponse,
    summary="The SLA policy in force",
    responses={**READ_MODEL_RESPONSES, 422: {"model": ErrorResponse}},
)
def get_policy(
    _key: ReadKey,
    projector: ProjectorDep,
    at: Annotated[
        Instant | None, Query(description=f"In force at ({INSTANT_NOTE}); default now.")
    ] = None,
) -> dict[str, Any]:
    """`effective_from` is null when no policy was ever set and the defaults apply."""
    when = naive_utc("at", at, datetime.now(UTC).replace(tzinfo=None))
    doc, t, position = policy_in_force(
        projector.model.cursor(), datetime_to_us(when.replace(tzinfo=UTC))
    )
    return {
        "policy": SlaPolicy.model_validate(doc, strict=False).model_dump(),
        "effective_from": None if t is None else format_us(t),
        "position": position,
    }


@router.get(
    "/breaches",
    response_model=BreachesResponse,
    summary="Response and resolution breaches per severity",
    responses={**READ_MODEL_RESPONSES, 422: {"model": ErrorResponse}},
)
def get_breaches(
    _key: ReadKey,
    projector: ProjectorDep,
    from_: OpenedFrom = None,
    to: OpenedTo = None,
    severity: Annotated[
        Literal["P0", "P1", "P2", "P3"] | None,
        Query(description="Only incidents whose most severe level was this."),
    ] = None,
) -> dict[str, Any]:
    """Each incident is judged by the policy in force when it opened, with everything the
    ledger knows now: an unacknowledged incident past its due time is an open breach."""
    start, end = window(from_, to)
    now = datetime.now(UTC).replace(tzinfo=None)
    return breaches(projector.model.cursor(), start, end, now, severity)
