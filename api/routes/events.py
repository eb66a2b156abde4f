"""`/v1/events`: append CloudEvents and page through the ledger."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError

from api.deps import LedgerDep, ReadKey, SettingsDep, WriteKey
from api.params import INSTANT_NOTE, PAGE_CEILING, ClusterName, EventTypes, Instant
from api.schemas import (
    EXAMPLE_EVENT,
    EXAMPLE_SAMPLES,
    AppendResponse,
    ConflictResponse,
    ErrorResponse,
    EventsPage,
)
from ingest.events import BodyError, decode_body, ingest
from store.contract import KNOWN_TYPES
from store.ledger import AppendResult
from store.timefmt import TimeFormatError, parse_rfc3339_us

router = APIRouter(prefix="/v1", tags=["events"])

_event_schema = {"$ref": "#/components/schemas/CloudEvent"}
_REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/cloudevents+json": {
            "schema": _event_schema,
            "examples": {
                "incident": {"value": EXAMPLE_EVENT},
                "samples": {"value": EXAMPLE_SAMPLES},
            },
        },
        "application/cloudevents-batch+json": {
            "schema": {"type": "array", "items": _event_schema},
            "examples": {"batch": {"value": [EXAMPLE_EVENT, EXAMPLE_SAMPLES]}},
        },
        "application/json": {
            "schema": {"oneOf": [_event_schema, {"type": "array", "items": _event_schema}]},
            "examples": {"one": {"value": EXAMPLE_EVENT}, "batch": {"value": [EXAMPLE_SAMPLES]}},
        },
    },
}


class BodyTooLarge(Exception):
    """The request body passed the configured limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds OPSLEDGER_MAX_BODY_BYTES ({limit} bytes)")
        self.limit = limit


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, refusing it as soon as it passes `limit` bytes (declared or streamed)."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # Never inflated: a compressed body could unpack far past the body limit.
        raise BodyError(
            f"Content-Encoding {encoding[:40]!r} is not accepted; send the body uncompressed", 415
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/events",
    response_model=AppendResponse,
    summary="Append one CloudEvent or an atomic batch",
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses={
        400: {"model": ErrorResponse, "description": "Malformed JSON or wrong body shape."},
        401: {"model": ErrorResponse, "description": "No, unknown or revoked API key."},
        403: {"model": ErrorResponse, "description": "The key lacks the write scope."},
        409: {
            "model": ConflictResponse,
            "description": "(source, id) recorded with other content.",
        },
        413: {"model": ErrorResponse, "description": "Body over OPSLEDGER_MAX_BODY_BYTES."},
        415: {"model": ErrorResponse, "description": "Unsupported content type."},
        422: {"model": ErrorResponse, "description": "Invalid events: each index, field, reason."},
    },
)
async def post_events(
    request: Request, ledger: LedgerDep, settings: SettingsDep, _key: WriteKey
) -> AppendResponse:
    """Validate every event against the contract, then append all or nothing.

    Re-sending an event with the same `(source, id)` and content is a duplicate (counted, not
    written again), so clients can retry safely.
    """
    body = await read_limited(request, settings.max_body_bytes)
    content_type = request.headers.get("content-type")

    def decode_and_append() -> AppendResult:
        # Decoding a large batch takes long enough to stall the event loop: off it, with the rest.
        return ingest(ledger, decode_body(body, content_type), settings.max_batch_events)

    result = await run_in_threadpool(decode_and_append)
    projector = getattr(request.app.state, "projector", None)
    if projector is not None and result.accepted:
        projector.poke()
    return AppendResponse(**result.as_dict())


def bad_query(name: str, reason: str) -> RequestValidationError:
    """A 422 naming the query parameter at fault, shaped like FastAPI's own."""
    return RequestValidationError([{"loc": ("query", name), "msg": reason, "type": "value_error"}])


def _instant(name: str, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_rfc3339_us(value)
    except TimeFormatError as exc:
        raise bad_query(name, str(exc)) from None


@router.get(
    "/events",
    response_model=EventsPage,
    summary="Page through the ledger by position",
    responses={
        401: {"model": ErrorResponse, "description": "No, unknown or revoked API key."},
        422: {"model": ErrorResponse, "description": "A bad query parameter."},
    },
)
def get_events(
    ledger: LedgerDep,
    settings: SettingsDep,
    _key: ReadKey,
    after: Annotated[
        int, Query(ge=0, le=2**63 - 1, description="Return events after this position.")
    ] = 0,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=PAGE_CEILING,
            description="Most events to return (default 100, at most max_page_size).",
        ),
    ] = None,
    type: Annotated[
        list[EventTypes] | None,
        Query(description="Only these types (repeat the parameter or separate with commas)."),
    ] = None,
    cluster: Annotated[ClusterName | None, Query(description="Only this cluster.")] = None,
    since: Annotated[
        Instant | None, Query(description=f"Event time ≥ this ({INSTANT_NOTE}).")
    ] = None,
    until: Annotated[
        Instant | None, Query(description=f"Event time < this ({INSTANT_NOTE}).")
    ] = None,
) -> EventsPage:
    """Events in position order; follow `next_after` to read on without missing any."""
    if limit is None:
        limit = min(100, settings.max_page_size)
    elif limit > settings.max_page_size:
        raise bad_query("limit", f"must be at most {settings.max_page_size} (max_page_size)")
    types = [t for value in type or [] for t in value.split(",") if t]
    unknown = [t for t in types if t not in KNOWN_TYPES]
    if unknown:
        raise bad_query(
            "type", f"{unknown[0]!r} is not a known type; known: " + ", ".join(KNOWN_TYPES)
        )
    page = ledger.read(
        after,
        limit,
        types=types or None,
        cluster=cluster,
        since_us=_instant("since", since),
        until_us=_instant("until", until),
    )
    return EventsPage(
        events=[e.to_cloudevent() for e in page],
        next_after=page[-1].position if page else after,
    )
