"""`POST /v1/query`: one read-only SQL query over a snapshot of the read model."""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from analytics.sql.pool import QueryError
from analytics.sql.service import QueryService
from api.deps import QueryKey, SettingsDep
from api.schemas import ErrorResponse

router = APIRouter(prefix="/v1/query", tags=["query"])

#: The status of each way a query can fail to answer (docs/api.md, POST /v1/query).
STATUS: Final = {
    "refused": 400,
    "invalid": 400,
    "timeout": 422,
    "memory": 422,
    "too_large": 422,
    "crashed": 422,
    "busy": 429,
    "unavailable": 503,
}


class QueryRequest(BaseModel):
    """The body of `POST /v1/query`."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(
        min_length=1,
        max_length=100_000,
        description="One SELECT (or WITH, FROM-first, VALUES, DESCRIBE, SHOW, SUMMARIZE, PIVOT, "
        "EXPLAIN) over the read model's tables.",
        examples=["SELECT severity, count(*) AS n FROM incidents GROUP BY ALL ORDER BY 1"],
    )
    limit: int | None = Field(
        None, ge=1, description="Most rows to return; default and ceiling `query_max_rows`."
    )


class QueryColumn(BaseModel):
    """A result column and its DuckDB type."""

    name: str
    type: str = Field(description="DuckDB's type name, e.g. `VARCHAR`, `TIMESTAMP`, `DOUBLE`.")


class QueryResponse(BaseModel):
    """The answer of `POST /v1/query`."""

    columns: list[QueryColumn]
    rows: list[list[Any]] = Field(description="One array per row, in column order.")
    row_count: int = Field(description="Rows in `rows`.")
    truncated: bool = Field(
        description="More rows were left out: `limit` or `query_max_result_bytes` was reached."
    )
    elapsed_ms: float = Field(description="Time to run the query and fetch the rows.")
    as_of: str = Field(
        description="When the snapshot queried was last known to match the read model."
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "columns": [
                        {"name": "severity", "type": "VARCHAR"},
                        {"name": "n", "type": "BIGINT"},
                    ],
                    "rows": [["P1", 2], ["P2", 1]],
                    "row_count": 2,
                    "truncated": False,
                    "elapsed_ms": 3.1,
                    "as_of": "2026-10-14T07:12:03Z",
                }
            ]
        }
    }


_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorResponse,
        "description": "Malformed JSON, or a query refused (not one read-only statement) or "
        "failed (DuckDB's message); `kind` is `refused` or `invalid`.",
    },
    401: {"model": ErrorResponse, "description": "No, unknown or revoked API key."},
    403: {"model": ErrorResponse, "description": "The key lacks the query scope."},
    422: {
        "model": ErrorResponse,
        "description": "A bad body field, or a query stopped by a limit; `kind` is `timeout`, "
        "`memory`, `too_large` (a single row over the size cap) or `crashed`.",
    },
    429: {
        "model": ErrorResponse,
        "description": "Every query worker stayed busy for the time limit; retry.",
    },
    503: {
        "model": ErrorResponse,
        "description": "The read model is not open in this process, is busy being rebuilt, "
        "or could not be copied or reopened (`kind` `unavailable`); retry.",
    },
}


def get_query_service(request: Request) -> QueryService:
    """The server's query service (503 when the read model is not open in this process)."""
    service: QueryService | None = getattr(request.app.state, "query_service", None)
    if service is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "the read model is not open in this process (projections are off)",
        )
    return service


get_query_service.opsledger_read_model = True  # type: ignore[attr-defined]
QueryServiceDep = Annotated[QueryService, Depends(get_query_service)]


def refusal(exc: QueryError) -> JSONResponse:
    """The error body of a query that did not answer."""
    code = STATUS.get(exc.kind, 422)
    body = {
        "detail": exc.detail,
        "errors": [{"index": None, "field": "query", "reason": exc.message}],
        "kind": exc.kind,
    }
    headers = {"Retry-After": "1"} if code in (429, 503) else None
    return JSONResponse(body, status_code=code, headers=headers)


@router.post(
    "",
    response_model=QueryResponse,
    summary="Run one read-only SQL query on the read model",
    responses=_RESPONSES,
)
async def post_query(
    body: QueryRequest, _key: QueryKey, service: QueryServiceDep, settings: SettingsDep
) -> Response:
    """Runs in a separate process on a read-only snapshot, within the query limits."""
    limit = body.limit or settings.query_max_rows
    if limit > settings.query_max_rows:
        raise RequestValidationError(
            [
                {
                    "loc": ("body", "limit"),
                    "msg": f"must be at most {settings.query_max_rows} (query_max_rows)",
                    "type": "value_error",
                }
            ]
        )
    try:
        answer = await service.answer(body.query, limit)
    except QueryError as exc:
        return refusal(exc)
    return Response(answer, media_type="application/json")
