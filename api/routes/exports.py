"""`/v1/export`: datasets as Parquet, CSV, JSON Lines or Arrow IPC, streamed batch by batch."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, cast

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from analytics.datasets import DATASETS, Dataset
from analytics.export_files import CONTENT_TYPES, FORMATS, Encoder, Format
from analytics.exports import ExportQuery, Rows, ledger_rows, read_model_rows
from api.deps import LedgerDep, ReadKey, SettingsDep, get_projector
from api.params import INSTANT_NOTE, EventTypes, Instant
from api.routes.capacity import OnlyCluster, naive_utc
from api.routes.events import bad_query
from api.schemas import ErrorResponse
from store.contract import KNOWN_TYPES

log = logging.getLogger("opsledger.exports")
router = APIRouter(prefix="/v1/export", tags=["exports"])


class ExportTooLarge(Exception):
    """The body passed export_max_bytes while streaming (the estimate was too low)."""


def _not_found(field: str, detail: str) -> JSONResponse:
    """404 naming the part of the path at fault, in the shape of every error body."""
    errors = [{"index": None, "field": field, "reason": detail}]
    return JSONResponse({"detail": detail, "errors": errors}, status_code=404)


def _query(
    ds: Dataset,
    from_: str | None,
    to: str | None,
    as_of: str | None,
    cluster: str | None,
    types: list[str] | None,
) -> ExportQuery:
    start = naive_utc("from", from_, datetime.min) if from_ is not None else None
    end = naive_utc("to", to, datetime.max) if to is not None else None
    if start is not None and end is not None and start >= end:
        raise bad_query("from", "must be before `to`")
    if ds.name == "storage_forecast" and (start is not None or end is not None):
        raise bad_query(
            "from" if start is not None else "to",
            "storage_forecast is one forecast per PVC as of `as_of`",
        )
    if as_of is not None and not ds.uses_as_of:
        raise bad_query("as_of", f"{ds.name} is not judged as of a time; use `from` and `to`")
    when = naive_utc("as_of", as_of, datetime.now(UTC).replace(tzinfo=None))
    wanted = [t for value in types or [] for t in value.split(",") if t]
    if wanted and ds.name != "events":
        raise bad_query("type", "only the `events` dataset filters by type")
    unknown = [t for t in wanted if t not in KNOWN_TYPES]
    if unknown:
        raise bad_query("type", f"{unknown[0]!r} is not a known type")
    return ExportQuery(start, end, cluster, tuple(wanted) or None, when)


def _open(request: Request, ds: Dataset, q: ExportQuery, ledger: LedgerDep) -> Rows:
    if ds.source == "ledger":
        return ledger_rows(ledger, q)
    projector = get_projector(request)
    # A cursor of its own: the result stays open across the batches of the stream.
    return read_model_rows(projector.model.cursor().cursor(), ds, q)


def _too_large(rows: int, estimate: int, limit: int, fmt: str) -> HTTPException:
    return HTTPException(
        413,
        f"the export holds {rows} rows, about {estimate} bytes as {fmt}: over "
        f"OPSLEDGER_EXPORT_MAX_BYTES ({limit}); narrow it with `from`, `to` or `cluster`, or run "
        "`opsledger export` on the server's host",
    )


@router.get(
    "/{dataset}.{format}",
    summary="A dataset as Parquet, CSV, JSON Lines or Arrow IPC, streamed",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The dataset, in the dataset's fixed schema (docs/bi.md).",
            "content": {ct: {} for ct in CONTENT_TYPES.values()},
        },
        401: {"model": ErrorResponse, "description": "No, unknown or revoked API key."},
        404: {"model": ErrorResponse, "description": "No such dataset or format."},
        413: {
            "model": ErrorResponse,
            "description": "The body would pass OPSLEDGER_EXPORT_MAX_BYTES (read and write keys).",
        },
        422: {"model": ErrorResponse, "description": "A bad query parameter."},
        503: {
            "model": ErrorResponse,
            "description": "The read model is not open in this process (not for `events`).",
        },
    },
)
def export(
    request: Request,
    key: ReadKey,
    ledger: LedgerDep,
    settings: SettingsDep,
    dataset: Annotated[
        str,
        Path(
            description="A dataset (404 for another name).",
            json_schema_extra={"enum": list(DATASETS)},
        ),
    ],
    format: Annotated[
        str,
        Path(description="A format (404 for another).", json_schema_extra={"enum": list(FORMATS)}),
    ],
    from_: Annotated[
        Instant | None,
        Query(alias="from", description=f"Rows whose time column is at or after ({INSTANT_NOTE})."),
    ] = None,
    to: Annotated[
        Instant | None, Query(description=f"Rows whose time column is before ({INSTANT_NOTE}).")
    ] = None,
    as_of: Annotated[
        Instant | None,
        Query(
            description="storage_forecast, sla_breaches, incident_metrics_monthly: judge as of "
            f"this time ({INSTANT_NOTE}); default now."
        ),
    ] = None,
    cluster: OnlyCluster = None,
    type: Annotated[
        list[EventTypes] | None,
        Query(description="`events` only: these types (repeat or separate with commas)."),
    ] = None,
) -> Response:
    """Rows stream in batches as they are read; the schema is fixed per dataset and version."""
    ds = DATASETS.get(dataset)
    if ds is None:
        return _not_found("path.dataset", f"no dataset {dataset!r}; known: {', '.join(DATASETS)}")
    if format not in FORMATS:
        return _not_found("path.format", f"no format {format!r}; known: {', '.join(FORMATS)}")
    fmt = cast(Format, format)
    q = _query(ds, from_, to, as_of, cluster, type)
    # Admin keys (and the CLI, which delegates with a one-off admin key) are not capped.
    limit = None if key.scope == "admin" else settings.export_max_bytes
    rows = _open(request, ds, q, ledger)
    try:
        enc = Encoder(fmt, ds.schema)
        first = next(rows.batches, None)
        head = b"" if first is None else enc.write(first)
        if limit is not None and first is not None and first.num_rows:
            estimate = int(len(head) / first.num_rows * rows.count)
            if estimate > limit:
                raise _too_large(rows.count, estimate, limit, fmt)
    except BaseException:
        rows.close()
        raise

    def body() -> Iterator[bytes]:
        sent = len(head)
        try:
            yield head
            for batch in rows.batches:
                chunk = enc.write(batch)
                sent += len(chunk)
                if limit is not None and sent > limit:
                    # The status is sent already: end the response without its last chunk,
                    # so no client takes a cut body for a whole one.
                    log.warning(
                        "export %s.%s cut after %d bytes: over export_max_bytes (%d)",
                        ds.name,
                        fmt,
                        sent,
                        limit,
                    )
                    raise ExportTooLarge(f"export passed {limit} bytes")
                yield chunk
            yield enc.finish()
        finally:
            rows.close()

    headers = {
        "Content-Disposition": f'attachment; filename="{ds.name}.{fmt}"',
        "X-Opsledger-Dataset": ds.name,
        "X-Opsledger-Schema-Version": str(ds.version),
        "X-Opsledger-Rows": str(rows.count),
    }
    return StreamingResponse(body(), media_type=CONTENT_TYPES[fmt], headers=headers)
