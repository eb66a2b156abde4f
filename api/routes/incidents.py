"""`/v1/incidents`: lifecycle commands on the ledger, and reads from the read model."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse

from analytics.incidents import reads as incident_reads
from analytics.incidents import timeline
from analytics.incidents.metrics import GROUPS, metrics
from api.deps import LedgerDep, ProjectorDep, ReadKey, SettingsDep, WriteKey
from api.incident_schemas import (
    Incident,
    IncidentAction,
    IncidentList,
    IncidentPatch,
    MetricsResponse,
    OpenIncident,
)
from api.params import (
    INSTANT_NOTE,
    PAGE_CEILING,
    IfMatchValue,
    Instant,
    one_of_list,
    text_matching,
)
from api.routes.capacity import OnlyCluster, naive_utc, window
from api.routes.events import bad_query
from api.schemas import READ_MODEL_RESPONSES, ErrorResponse
from api.services.incidents import build_timeline, parse_span, state_body
from ingest import incidents as commands
from store.incident_state import IncidentState
from store.timefmt import (
    parse_rfc3339_us,
)

router = APIRouter(prefix="/v1/incidents", tags=["incidents"])
IncidentIdPath = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$", max_length=128, description="Incident id.")
]
_COMMAND_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "A body that is not JSON."},
    401: {"model": ErrorResponse, "description": "No, unknown or revoked API key."},
    403: {"model": ErrorResponse, "description": "The key lacks the write scope."},
    404: {"model": ErrorResponse, "description": "No such incident."},
    409: {
        "model": ErrorResponse,
        "description": "A stale `If-Match` version, or a transition the incident's state forbids "
        "(the body carries `state`).",
    },
    422: {"model": ErrorResponse, "description": "A bad field, named in `errors`."},
}
_ETAG = re.compile(r'^(?:W/)?"?(\d{1,9})"?$')
_SPAN_PATTERN = r"^[0-9]{1,7}[smhd]$"
SpanText = Annotated[str, text_matching(_SPAN_PATTERN)]


GroupBy = Annotated[str, text_matching(one_of_list(list(GROUPS), spaces=True))]


def _version(if_match: str | None) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    m = _ETAG.match(if_match.strip())
    if m is None:
        raise RequestValidationError(
            [
                {
                    "loc": ("header", "If-Match"),
                    "msg": 'must be the incident version, e.g. 3 or "3"',
                    "type": "value_error",
                }
            ]
        )
    return int(m.group(1))


def _at(value: str | None) -> int | None:
    return None if value is None else parse_rfc3339_us(value)


def _answer(request: Request, response: Response, st: IncidentState) -> dict[str, Any]:
    projector = getattr(request.app.state, "projector", None)
    if projector is not None:
        projector.poke()
    response.headers["ETag"] = f'"{st.version}"'
    return state_body(st)


#: The window of incidents by their opening, shared by the metrics and breach routes.
OpenedFrom = Annotated[
    Instant | None,
    Query(
        alias="from", description=f"Opened at or after ({INSTANT_NOTE}); default `to` − 30 days."
    ),
]
OpenedTo = Annotated[
    Instant | None, Query(description=f"Opened before ({INSTANT_NOTE}); default now.")
]

IfMatch = Annotated[
    IfMatchValue | None,
    Header(
        alias="If-Match",
        description="The version you last saw; a newer one answers 409 and writes nothing.",
    ),
]


@router.post(
    "",
    status_code=201,
    response_model=Incident,
    summary="Open an incident",
    responses=_COMMAND_RESPONSES,
)
def open_incident(
    body: OpenIncident, request: Request, response: Response, ledger: LedgerDep, _key: WriteKey
) -> dict[str, Any]:
    """Appends `opsledger.incident.opened` to a new stream `incident/<id>` (version 1)."""
    st = commands.open_incident(
        ledger,
        title=body.title,
        severity=body.severity,
        cluster=body.cluster,
        namespace=body.namespace,
        service=body.service,
        incident_id=body.incident_id,
        at_us=_at(body.at),
    )
    response.headers["Location"] = f"/v1/incidents/{st.incident_id}"
    return _answer(request, response, st)


def _action_route(action: commands.Action, past: str) -> None:
    def handler(
        incident_id: IncidentIdPath,
        request: Request,
        response: Response,
        ledger: LedgerDep,
        _key: WriteKey,
        if_match: IfMatch = None,
        body: IncidentAction | None = None,
    ) -> dict[str, Any]:
        st = commands.act(
            ledger,
            incident_id,
            action,
            by=body.by if body else None,
            at_us=_at(body.at) if body else None,
            expect_version=_version(if_match),
        )
        return _answer(request, response, st)

    allowed = ", ".join(sorted(commands.ACTIONS[action][1]))
    handler.__doc__ = (
        f"Appends `opsledger.incident.{past}`; allowed when the incident is {allowed}."
    )
    handler.__name__ = f"{action}_incident"
    router.post(
        f"/{{incident_id}}/{action}",
        response_model=Incident,
        summary=f"{action.capitalize()} an incident",
        responses=_COMMAND_RESPONSES,
    )(handler)


for _action, (_past, _) in commands.ACTIONS.items():
    _action_route(_action, _past)  # type: ignore[arg-type]


@router.patch(
    "/{incident_id}",
    response_model=Incident,
    summary="Change severity, annotate, link the post-mortem",
    responses=_COMMAND_RESPONSES,
)
def patch_incident(
    incident_id: IncidentIdPath,
    body: IncidentPatch,
    request: Request,
    response: Response,
    ledger: LedgerDep,
    _key: WriteKey,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    """Appends `severity_changed`, `annotated` and/or `postmortem_linked`, all or nothing."""
    st = commands.update(
        ledger,
        incident_id,
        severity=body.severity,
        note=body.note,
        postmortem_url=body.postmortem_url,
        at_us=_at(body.at),
        expect_version=_version(if_match),
    )
    return _answer(request, response, st)


@router.get(
    "",
    response_model=IncidentList,
    summary="List incidents",
    responses={**READ_MODEL_RESPONSES, 422: {"model": ErrorResponse}},
)
def list_incidents(
    _key: ReadKey,
    projector: ProjectorDep,
    settings: SettingsDep,
    status: Annotated[
        Literal["open", "acknowledged", "mitigated", "resolved"] | None, Query()
    ] = None,
    severity: Annotated[
        Literal["P0", "P1", "P2", "P3"] | None, Query(description="The current severity.")
    ] = None,
    from_: Annotated[
        Instant | None, Query(alias="from", description=f"Opened at or after ({INSTANT_NOTE}).")
    ] = None,
    to: Annotated[Instant | None, Query(description=f"Opened before ({INSTANT_NOTE}).")] = None,
    cluster: OnlyCluster = None,
    namespace: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_CEILING, description="At most max_page_size.")] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Newest opening first; `total` counts every match. Reads the read model, which follows
    the ledger within moments of a write (compare `version` with a command's answer)."""
    if limit > settings.max_page_size:
        raise bad_query("limit", f"must be at most {settings.max_page_size}")
    start = naive_utc("from", from_, datetime.min) if from_ else None
    end = naive_utc("to", to, datetime.max) if to else None
    items, total = incident_reads.list_incidents(
        projector.model.cursor(),
        status=status,
        severity=severity,
        start=start,
        end=end,
        cluster=cluster,
        namespace=namespace,
        limit=limit,
        offset=offset,
    )
    return {"items": items, "total": total}


@router.get(
    "/metrics",
    response_model=MetricsResponse,
    summary="MTTA, MTTM and MTTR per group",
    responses={**READ_MODEL_RESPONSES, 422: {"model": ErrorResponse}},
)
def get_metrics(
    _key: ReadKey,
    projector: ProjectorDep,
    from_: OpenedFrom = None,
    to: OpenedTo = None,
    group_by: Annotated[
        GroupBy | None,
        Query(description="Comma-separated: severity, month, cluster, namespace, service."),
    ] = None,
) -> dict[str, Any]:
    """Seconds from the opening: MTTA to the first ack, MTTM to the first mitigation, MTTR to
    the final resolution. Severity groups by the most severe level ever held; month is UTC."""
    start, end = window(from_, to)
    keys = [g.strip() for g in group_by.split(",") if g.strip()] if group_by else []
    for g in keys:
        if g not in GROUPS:
            raise bad_query("group_by", f"unknown group {g!r}; use {', '.join(GROUPS)}")
    if len(set(keys)) != len(keys):
        raise bad_query("group_by", "names a group twice")
    return {"groups": metrics(projector.model.cursor(), start, end, keys)}


@router.get(
    "/{incident_id}",
    response_model=Incident,
    summary="One incident with its lifecycle",
    responses={**READ_MODEL_RESPONSES, 404: {"model": ErrorResponse}},
)
def get_incident(
    incident_id: IncidentIdPath, response: Response, _key: ReadKey, projector: ProjectorDep
) -> dict[str, Any]:
    """The incident as the read model has it, with `events`: every recorded fact in time
    order, and the SLA targets that apply (`response_due_at`, `resolution_due_at`)."""
    found = incident_reads.get_incident(projector.model.cursor(), incident_id)
    if found is None:
        raise commands.IncidentNotFound(f"no incident {incident_id!r} in the read model")
    response.headers["ETag"] = f'"{found["version"]}"'
    return found


def _span(name: str, value: str) -> timedelta:
    try:
        return parse_span(value)
    except ValueError as exc:
        raise bad_query(name, str(exc)) from None


@router.get(
    "/{incident_id}/timeline",
    summary="Post-mortem timeline: the incident and what its cluster went through",
    responses={
        **READ_MODEL_RESPONSES,
        200: {"content": {"text/markdown": {}}},
        404: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
    },
)
async def get_timeline(
    incident_id: IncidentIdPath,
    _key: ReadKey,
    projector: ProjectorDep,
    before: Annotated[
        SpanText, Query(description="Context before the opening (e.g. 30m, 2h; at most 7d).")
    ] = "30m",
    after: Annotated[
        SpanText,
        Query(description="Context after the resolution, or now (e.g. 30m, 2h; at most 7d)."),
    ] = "30m",
    format: Annotated[Literal["json", "markdown"], Query()] = "json",
) -> Any:
    """Lifecycle, Kubernetes warnings, node NotReady / Ready, restarts, CrashLoopBackOff,
    OOMKilled, findings and sustained > 85 % runs, from the incident's cluster (and namespace
    when set), from `before` ahead of the opening to `after` past the resolution."""
    lo, hi = _span("before", before), _span("after", after)
    # The cursor is per thread: take it on the worker thread that uses it, never on the loop's.
    body = await run_in_threadpool(
        lambda: build_timeline(projector.model.cursor(), incident_id, lo, hi)
    )
    if format == "markdown":
        return PlainTextResponse(
            timeline.render_markdown(body["incident"], body["entries"]),
            media_type="text/markdown; charset=utf-8",
        )
    return body
