"""`/v1/digest`: the daily health check from the read model."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse

from analytics.outputs.digest import render_markdown
from analytics.readmodel.model import ReadModel
from api.deps import ProjectorDep, ReadKey, SettingsDep
from api.params import text_matching
from api.routes.events import bad_query
from api.schemas import READ_MODEL_RESPONSES, ErrorResponse
from api.services.digest import build, parse_since

router = APIRouter(prefix="/v1/digest", tags=["digest"])
SinceText = Annotated[str, text_matching(r"^[0-9]{1,6}[mhdw]$")]


def _build(model: ReadModel, since: timedelta, max_age_hours: float) -> dict[str, Any]:
    # On this worker thread's own cursor: a cursor serves one thread at a time.
    return build(model.cursor(), since, max_age_hours)


@router.get(
    "",
    summary="The morning health check: nodes, pods, PVCs, findings, incidents, hot spots",
    responses={
        **READ_MODEL_RESPONSES,
        200: {"content": {"text/markdown": {}}},
        422: {"model": ErrorResponse, "description": "A bad `since` or `format`."},
    },
)
async def get_digest(
    _key: ReadKey,
    projector: ProjectorDep,
    settings: SettingsDep,
    since: Annotated[
        SinceText,
        Query(description="What counts as new: a duration like 24h, 90m, 7d (5m–31d)."),
    ] = "24h",
    format: Annotated[Literal["json", "markdown"], Query()] = "json",
) -> Any:
    """NotReady nodes and unhealthy pods now, the top 20 pods by restarts in the window, PVCs
    over 85 % now, CRITICAL / HIGH findings first seen in the window, open incidents and open
    SLA breaches, and CPU / memory runs above 85 % lasting an hour within the window; each
    section with a one-line summary and `ok` / `attention`, and an overall status."""
    try:
        span = parse_since(since)
    except ValueError as exc:
        raise bad_query("since", str(exc)) from None
    body = await run_in_threadpool(
        _build, projector.model, span, settings.digest_status_max_age_hours
    )
    if format == "markdown":
        return PlainTextResponse(render_markdown(body), media_type="text/markdown; charset=utf-8")
    return body
