"""`opsledger query`: read-only SQL over the read model, here or through the running server."""

from __future__ import annotations

import csv
import sys
import time
from typing import Annotated, Any, Final

import orjson
import typer
from rich.table import Table

from api.cli.common import delegate_raw, err, fail, ledger, out
from store.settings import get_settings
from store.timefmt import format_us

FORMATS: Final = ("table", "csv", "json")
#: Exit codes of queries that did not answer: the query's fault 2, the service's 1.
_EXIT: Final = {"refused": 2, "invalid": 2, "timeout": 2, "memory": 2, "too_large": 2}


def _run_here(sql: str, limit: int) -> dict[str, Any] | None:
    """The answer from the read model opened here (caught up first); None if a server holds it."""
    from analytics.readmodel.model import ReadModel, ReadModelBusy
    from analytics.readmodel.registry import default_projections
    from analytics.readmodel.runner import Runner
    from analytics.sql.pool import QueryError, WorkerPool
    from analytics.sql.service import limits_of

    settings = get_settings()
    try:
        model = ReadModel(settings.read_model)
    except ReadModelBusy:
        return None
    try:
        Runner(ledger(), model, default_projections()).catch_up()
    finally:
        # Closed before the query: the worker opens the file itself, read-only and locked.
        model.close()
    as_of = format_us(int(time.time()) * 1_000_000)
    pool = WorkerPool(limits_of(settings), 1)
    try:
        body: dict[str, Any] = orjson.loads(
            pool.run(settings.read_model, sql, limit, {"as_of": as_of})
        )
    except QueryError as exc:
        raise fail(exc.detail, _EXIT.get(exc.kind, 1)) from None
    finally:
        pool.close()
    return body


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    return str(value)


def query(
    sql: Annotated[
        str,
        typer.Argument(
            help="One read-only query (SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE, "
            "PIVOT, EXPLAIN); - reads it from stdin.",
        ),
    ],
    format_: Annotated[
        str, typer.Option("--format", help="table, csv, or json (the API's answer).")
    ] = "table",
    limit: Annotated[
        int | None,
        typer.Option(min=1, help="Most rows to print; default and ceiling query_max_rows."),
    ] = None,
) -> None:
    """Run one read-only SQL query over the read model (tables: docs/analytics.md).

    Without a server the read model is caught up and queried here; with `opsledger serve`
    running, the server answers from its snapshot (at most query_snapshot_seconds old).
    """
    settings = get_settings()
    if format_ not in FORMATS:
        raise fail(f"--format must be one of {', '.join(FORMATS)}", 2)
    if limit is not None and limit > settings.query_max_rows:
        raise fail(f"--limit must be at most {settings.query_max_rows} (query_max_rows)", 2)
    if sql == "-":
        sql = sys.stdin.read()
    rows = limit or settings.query_max_rows
    body = _run_here(sql, rows)
    if body is None:
        # The server holds the read model: catch it up to read our own writes, then ask it.
        delegate_raw("POST", "/v1/projections/catch-up")
        payload = orjson.dumps({"query": sql, "limit": rows})
        body = orjson.loads(delegate_raw("POST", "/v1/query", payload, scope="query"))
    if format_ == "json":
        sys.stdout.write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif format_ == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow([c["name"] for c in body["columns"]])
        writer.writerows([_cell(v) for v in row] for row in body["rows"])
    else:
        table = Table()
        for column in body["columns"]:
            table.add_column(column["name"], overflow="fold")  # wrap values, never cut them
        for row in body["rows"]:
            table.add_row(*[_cell(v) for v in row])
        out.print(table)
    sys.stdout.flush()  # the rows before the summary, when both go to one terminal
    more = ", truncated: there is more (--limit, query_max_result_bytes)"
    if not body["truncated"]:
        more = ""
    err.print(f"{body['row_count']} row(s){more}; as of {body['as_of']}", highlight=False)
