"""`opsledger export`: a dataset to a file, to month partitions, or to S3 in the Hive layout."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, cast
from urllib.parse import quote, urlencode

import orjson
import typer

from analytics.outputs.datasets import DATASETS, Dataset
from analytics.outputs.export_files import (
    FORMATS,
    Format,
    Partition,
    check_endpoint,
    encode,
    publish_local,
    publish_s3,
    split_s3_url,
    write_file,
    write_partitions,
)
from analytics.outputs.exports import (
    ExportQuery,
    Rows,
    conform,
    ledger_rows,
    month_ceil,
    month_floor,
    read_model_rows,
)
from api.cli.common import delegate_raw, err, fail, ledger, naive_option, server_file
from store.keys import create_delegate_key, revoke_key
from store.settings import get_settings

PARTITIONS = ("none", "month")
# The server's refusals as exit codes: bad input 2, not found 4 (as api/cli/common.py).
_EXIT_CODES = {404: 4, 413: 2, 422: 2}


def _path(ds: Dataset, fmt: str, q: ExportQuery) -> str:
    params: list[tuple[str, str]] = []
    for name, value in (("from", q.start), ("to", q.end)):
        if value is not None:
            params.append((name, value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")))
    if q.cluster is not None:
        params.append(("cluster", q.cluster))
    if ds.uses_as_of:
        params.append(("as_of", q.as_of.strftime("%Y-%m-%dT%H:%M:%S.%fZ")))
    query = f"?{urlencode(params)}" if params else ""
    return f"/v1/export/{quote(ds.name)}.{fmt}{query}"


@contextmanager
def _delegated(ds: Dataset, q: ExportQuery) -> Iterator[Rows]:
    """The rows from the server that holds the read model, as an Arrow stream."""
    import urllib.error
    import urllib.request

    import pyarrow as pa

    delegate_raw("POST", "/v1/projections/catch-up")
    info = orjson.loads(server_file().read_bytes())
    engine = ledger().engine
    key, token = create_delegate_key(engine, "admin")
    try:
        req = urllib.request.Request(
            info["url"] + _path(ds, "arrow", q), headers={"Authorization": f"Bearer {token}"}
        )
        try:
            resp = urllib.request.urlopen(req, timeout=3600)
        except urllib.error.HTTPError as exc:
            try:
                message = orjson.loads(exc.read())["detail"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                message = str(exc)
            raise fail(message, _EXIT_CODES.get(exc.code, 1)) from None
        except urllib.error.URLError as exc:
            raise fail(f"the server at {info['url']} did not answer: {exc}") from None
        with resp:
            reader = pa.ipc.open_stream(resp)
            count = int(resp.headers.get("X-Opsledger-Rows") or 0)
            yield Rows(ds, count, (conform(b, ds.schema) for b in reader))
    finally:
        revoke_key(engine, key.key_id)


@contextmanager
def _rows(ds: Dataset, q: ExportQuery) -> Iterator[Rows]:
    """The dataset's rows: the ledger, the read model here (caught up), or the server's."""
    from analytics.readmodel.model import ReadModel, ReadModelBusy
    from analytics.readmodel.registry import default_projections
    from analytics.readmodel.runner import Runner

    if ds.projection is None:
        yield ledger_rows(ledger(), q)
        return
    try:
        model = ReadModel(get_settings().read_model)
    except ReadModelBusy:
        with _delegated(ds, q) as rows:
            yield rows
        return
    try:
        Runner(ledger(), model, default_projections()).catch_up(list(ds.projections))
        rows = read_model_rows(model.cursor().cursor(), ds, q)
        try:
            yield rows
        finally:
            rows.close()
    finally:
        model.close()


def _s3_client() -> Any:
    """The S3 client of the export settings, made before any work (exit 2 when they are bad)."""
    import boto3
    from botocore.exceptions import BotoCoreError

    settings = get_settings()
    endpoint = settings.export_s3_endpoint_url
    if endpoint is not None:
        try:
            check_endpoint(endpoint)
        except ValueError as exc:
            raise fail(f"OPSLEDGER_EXPORT_S3_ENDPOINT_URL: {exc}", 2) from None
    try:
        session = boto3.session.Session(region_name=settings.export_s3_region)
        return session.client("s3", endpoint_url=endpoint)
    except (BotoCoreError, ValueError) as exc:
        raise fail(f"S3 client: {exc}", 2) from None


def _publish(out: str, written: list[Partition], client: Any) -> list[str]:
    if client is None:
        return [str(p) for p in publish_local(Path(out), written)]
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return publish_s3(client, out, written)
    except (BotoCoreError, ClientError) as exc:
        raise fail(f"S3 upload to {out}: {exc}") from None


def export(
    dataset: Annotated[
        str, typer.Argument(help="The dataset: " + ", ".join(DATASETS) + ".", show_default=False)
    ],
    out: Annotated[
        str,
        typer.Option(
            "--out",
            "-o",
            help="A file (`-`: standard output); with --partition month a directory; or "
            "s3://bucket/prefix (month partitions, Parquet).",
            show_default=False,
        ),
    ],
    format: Annotated[
        str, typer.Option("--format", "-f", help="parquet, csv, jsonl or arrow.")
    ] = "parquet",
    from_: Annotated[
        str | None,
        typer.Option("--from", help="Rows whose time column is at or after (RFC 3339)."),
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="Rows whose time column is before (RFC 3339).")
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="storage_forecast, sla_breaches, incident_metrics_monthly: judge as of this "
            "time (RFC 3339); default now.",
        ),
    ] = None,
    cluster: Annotated[str | None, typer.Option(help="Only this cluster.")] = None,
    type_: Annotated[
        list[str] | None,
        typer.Option("--type", help="events only: only this type (repeatable)."),
    ] = None,
    partition: Annotated[
        str,
        typer.Option(
            help="`month`: Hive partitions `dataset=NAME/month=YYYY-MM/part-0.parquet` of "
            "whole UTC months."
        ),
    ] = "none",
) -> None:
    """Export a dataset in its fixed schema (docs/bi.md), to a file, partitions or S3."""
    ds = DATASETS.get(dataset)
    if ds is None:
        raise fail(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}", 2)
    if format not in FORMATS:
        raise fail(f"--format must be one of {', '.join(FORMATS)}", 2)
    if partition not in PARTITIONS:
        raise fail(f"--partition must be one of {', '.join(PARTITIONS)}", 2)
    if out.startswith("s3://"):
        try:
            split_s3_url(out)
        except ValueError as exc:
            raise fail(f"--out {out}: {exc}", 2) from None
        partition = "month"  # S3 holds the Hive layout Athena and Glue read
    if partition == "month" and format != "parquet":
        raise fail("--partition month (and --out s3://...) writes Parquet: use --format parquet", 2)
    if partition == "month" and out == "-":
        raise fail("--partition month writes a directory: --out must not be -", 2)
    if type_ and ds.name != "events":
        raise fail("--type filters the events dataset only", 2)
    start, end = naive_option("from", from_), naive_option("to", to)
    if start is not None and end is not None and start >= end:
        raise fail("--from must be before --to", 2)
    if ds.name == "storage_forecast" and (start is not None or end is not None):
        raise fail("storage_forecast is one forecast per PVC as of --as-of; no --from or --to", 2)
    if as_of is not None and not ds.uses_as_of:
        raise fail(f"{ds.name} is not judged as of a time: use --from and --to", 2)
    when = naive_option("as-of", as_of) or datetime.now(UTC).replace(tzinfo=None)
    if partition == "month":
        # A month's file is rewritten whole, so a partitioned export covers whole months.
        start = None if start is None else month_floor(start)
        end = None if end is None else month_ceil(end)
    q = ExportQuery(start, end, cluster, tuple(type_) if type_ else None, when)
    fmt = cast(Format, format)
    client = _s3_client() if out.startswith("s3://") else None
    if client is None:
        _check_local(out, partition)
    try:
        total, where = _write(ds, q, fmt, out, partition, client)
    except OSError as exc:
        # A full disk, a read-only or vanished directory: said plainly, not as a traceback.
        raise fail(f"export to {out}: {exc.strerror or exc}") from None
    err.print(
        f"exported {total} rows of {ds.name} (schema version {ds.version}) to {where}",
        highlight=False,
        markup=False,
    )


def _check_local(out: str, partition: str) -> None:
    """Refuse, before any work, an --out that cannot be written as asked (exit 2)."""
    if out == "-":
        return
    path = Path(out)
    if partition == "month":
        if path.exists() and not path.is_dir():
            raise fail(f"--out {out}: not a directory (--partition month writes one)", 2)
    elif path.is_dir():
        raise fail(f"--out {out}: is a directory; name the file to write", 2)


def _write(
    ds: Dataset, q: ExportQuery, fmt: Format, out: str, partition: str, client: Any
) -> tuple[int, str]:
    """Export the rows; (rows written, where to)."""
    with _rows(ds, q) as rows:
        if partition == "month":
            base = Path(out) if client is None else Path(tempfile.gettempdir())
            base.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".opsledger-export-", dir=base))
            try:
                written = write_partitions(staging, rows.batches, ds)
                targets = _publish(out, written, client)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            for p, target in zip(written, targets, strict=True):
                err.print(f"{target}: {p.rows} rows", highlight=False, markup=False)
            return sum(p.rows for p in written), f"{len(written)} month partition(s) under {out}"
        if out == "-":
            counter = [0]
            for chunk in encode(_counting(rows, counter), fmt, ds.schema):
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            return counter[0], "standard output"
        return write_file(Path(out), rows.batches, fmt, ds), out


def _counting(rows: Rows, counter: list[int]) -> Iterator[Any]:
    for batch in rows.batches:
        counter[0] += batch.num_rows
        yield batch
