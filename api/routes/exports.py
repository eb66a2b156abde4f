"""`/v1/export`: datasets as Parquet, CSV, JSON Lines or Arrow IPC, streamed batch by batch."""

# The size limit is decided before any data is built: the `events` dataset from aggregates of
# the ledger (rows, stored bytes, samples), a read-model dataset from its row count and its
# first batch. Streams take one of EXPORT_SLOTS per process, so concurrent exports cannot
# multiply the memory one of them holds (a page of the ledger, a batch and its encoding).

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Final, cast

import anyio
from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from analytics.outputs.datasets import DATASETS, Dataset
from analytics.outputs.export_files import CONTENT_TYPES, FORMATS, Encoder, Format
from analytics.outputs.exports import ExportQuery, Rows, ledger_rows, read_model_rows
from analytics.readmodel.projector import Projector
from api.deps import LedgerDep, ReadKey, SettingsDep, get_projector
from api.params import INSTANT_NOTE, EventTypes, Instant
from api.routes.capacity import OnlyCluster, naive_utc
from api.routes.events import bad_query
from api.schemas import ErrorResponse
from store.contract import KNOWN_TYPES

log = logging.getLogger("opsledger.exports")
router = APIRouter(prefix="/v1/export", tags=["exports"])
#: Exports streaming at once in one process, and how long another waits for one to end (429).
EXPORT_SLOTS: Final = 4
SLOT_WAIT_SECONDS: Final = 10.0
_SLOT_POLL_SECONDS: Final = 0.05


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


class _Slots:
    """Export slots of one app; taken and given back on its event loop only (no lock needed)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.busy = 0

    async def take(self, wait_s: float) -> _Slot | None:
        """A slot, waiting up to `wait_s` for one; None when every one stayed busy."""
        deadline = time.monotonic() + wait_s
        while self.busy >= self.size:
            if time.monotonic() >= deadline:
                return None
            await anyio.sleep(_SLOT_POLL_SECONDS)
        self.busy += 1
        return _Slot(self)


class _Slot:
    """One export's hold on a slot."""

    def __init__(self, slots: _Slots) -> None:
        self._slots: _Slots | None = slots

    def release(self) -> None:
        """Give the slot back; idempotent."""
        slots, self._slots = self._slots, None
        if slots is not None:
            slots.busy -= 1


def _slots(request: Request) -> _Slots:
    state = request.app.state
    slots: _Slots | None = getattr(state, "export_slots", None)
    if slots is None:
        slots = state.export_slots = _Slots(EXPORT_SLOTS)
    return slots


class _ExportResponse(StreamingResponse):
    """A stream that gives its rows and slot back however it ends (done, cut, disconnected)."""

    def __init__(self, body: Iterator[bytes], cleanup: Callable[[], None], **kw: Any) -> None:
        super().__init__(body, **kw)
        self._body = body
        self._cleanup = cleanup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # A generator never started (client gone before the first chunk) runs no
            # `finally` of its own: close it here, after any worker thread left it.
            close = getattr(self._body, "close", None)
            try:
                if close is not None:
                    close()
            finally:
                self._cleanup()


def _too_large(rows: int, estimate: int, limit: int, fmt: str) -> HTTPException:
    return HTTPException(
        413,
        f"the export holds {rows} rows, about {estimate} bytes as {fmt}: over "
        f"OPSLEDGER_EXPORT_MAX_BYTES ({limit}); narrow it with `from`, `to` or `cluster`, or run "
        "`opsledger export` on the server's host",
    )


def _busy() -> HTTPException:
    return HTTPException(
        429,
        f"{EXPORT_SLOTS} exports are streaming in this process and none ended within "
        f"{SLOT_WAIT_SECONDS:.0f} s; retry",
        headers={"Retry-After": "5"},
    )


def _read_model(projector: Projector, ds: Dataset, q: ExportQuery) -> Rows:
    """A read-model dataset's rows, on a worker thread as every DuckDB read here."""
    # A cursor of its own: the result stays open across the batches of the stream.
    return read_model_rows(projector.model.cursor().cursor(), ds, q)


def _first(rows: Rows, enc: Encoder) -> bytes:
    """The first batch encoded (empty when there is none); the rest stays unread."""
    first = next(rows.batches, None)
    return b"" if first is None else enc.write(first)


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
        429: {
            "model": ErrorResponse,
            "description": "Every export slot of the process stayed busy for 10 s; retry.",
        },
        503: {
            "model": ErrorResponse,
            "description": "The read model is not open in this process (not for `events`).",
        },
    },
)
async def export(
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
    rows: Rows | None = None
    if ds.source == "ledger":
        # Aggregates alone: refused here, the request has decoded nothing and holds no slot.
        rows = await run_in_threadpool(ledger_rows, ledger, q)
        assert rows.size is not None
        estimate = rows.size.estimate(fmt)
        if limit is not None and estimate > limit:
            rows.close()
            raise _too_large(rows.count, estimate, limit, fmt)
    else:
        projector = get_projector(request)
    slot = await _slots(request).take(SLOT_WAIT_SECONDS)
    if slot is None:
        if rows is not None:
            rows.close()
        raise _busy()
    enc = Encoder(fmt, ds.schema)
    try:
        if rows is None:
            rows = await run_in_threadpool(_read_model, projector, ds, q)
        head = await run_in_threadpool(_first, rows, enc)
        if limit is not None and ds.source == "read_model" and enc.rows:
            # A read-model batch is at most BATCH_ROWS rows of fixed-width columns: cheap.
            estimate = int(len(head) / enc.rows * rows.count)
            if estimate > limit:
                raise _too_large(rows.count, estimate, limit, fmt)
    except BaseException:
        if rows is not None:
            rows.close()
        slot.release()
        raise
    opened = rows

    def body() -> Iterator[bytes]:
        sent = len(head)
        try:
            yield head
            for batch in opened.batches:
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
            opened.close()

    def cleanup() -> None:
        opened.close()
        slot.release()

    headers = {
        "Content-Disposition": f'attachment; filename="{ds.name}.{fmt}"',
        "X-Opsledger-Dataset": ds.name,
        "X-Opsledger-Schema-Version": str(ds.version),
        "X-Opsledger-Rows": str(rows.count),
    }
    return _ExportResponse(body(), cleanup, media_type=CONTENT_TYPES[fmt], headers=headers)
