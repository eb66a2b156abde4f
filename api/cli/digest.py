"""`opsledger digest`: the morning health check, from the read model (here or via the server)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

import duckdb
import orjson
import typer
from rich.table import Table

from api.cli.common import fail, out
from api.cli.incidents import read_model
from store.settings import get_settings

FORMATS = ("table", "json", "markdown")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _print_tables(body: dict[str, Any]) -> None:
    from analytics.outputs.digest import TABLES, TITLES, column_value

    sections = body["sections"]
    color = {"ok": "green", "attention": "yellow"}
    out.print(
        f"[bold]opsledger digest: [{color[body['status']]}]{body['status']}[/][/bold]  "
        f"as of {body['as_of']}, new since {body['since']}",
        highlight=False,
    )
    summary = Table("section", "status", "summary")
    for key, section in sections.items():
        status = section["status"]
        summary.add_row(TITLES[key], f"[{color[status]}]{status}[/]", section["summary"])
    out.print(summary)
    for section, key, heading, columns in TABLES:
        items = sections[section][key]
        if not items:
            continue
        table = Table(title=heading, title_justify="left")
        for column in columns:
            table.add_column(column, overflow="fold")
        for item in items:
            table.add_row(*(_cell(column_value(item, k)) for k in columns.values()))
        out.print(table)


def digest(
    since: Annotated[
        str, typer.Option(help="What counts as new: a duration like 24h, 90m, 7d (5m to 31d).")
    ] = "24h",
    format_: Annotated[
        str, typer.Option("--format", help="table, json (the API's body) or markdown.")
    ] = "table",
) -> None:
    """The morning health check: NotReady nodes, unhealthy pods and restarts, PVCs over 85 %,
    new CRITICAL / HIGH findings, open incidents and SLA breaches, sustained CPU / memory."""
    # Imported here: the other commands need not pay for FastAPI and the forecasts.
    from analytics.outputs.digest import render_markdown
    from api.services.digest import PROJECTIONS, build, parse_since

    if format_ not in FORMATS:
        raise fail(f"--format must be one of {', '.join(FORMATS)}", 2)
    try:
        span = parse_since(since)
    except ValueError as exc:
        raise fail(f"--since {exc}", 2) from None
    hours = get_settings().digest_status_max_age_hours

    def local(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        return build(con, span, hours)

    body: dict[str, Any] = read_model(
        "/v1/digest?" + urlencode({"since": since}), local, PROJECTIONS
    )
    if format_ == "json":
        out.print_json(orjson.dumps(body).decode())
    elif format_ == "markdown":
        typer.echo(render_markdown(body), nl=False)
    else:
        _print_tables(body)
