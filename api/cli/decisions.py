"""`opsledger decisions`: the month's ranked actions (here or via the server)."""

from __future__ import annotations

import csv
import sys
from datetime import UTC, datetime
from typing import Annotated, Any, Final
from urllib.parse import urlencode

import duckdb
import orjson
import typer
from rich.table import Table

from api.cli.common import fail, out
from api.cli.incidents import read_model
from store.settings import get_settings
from store.timefmt import MONTH_PATTERN

COLUMNS: Final = (
    "rank",
    "kind",
    "target",
    "by",
    "monthly_savings",
    "monthly_cost",
    "currency",
    "evidence",
)


def _money(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


def decisions(
    month: Annotated[
        str | None, typer.Option(help="The month, YYYY-MM; default this month.")
    ] = None,
    cluster: Annotated[str | None, typer.Option(help="Only this cluster.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON answer.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV, one row per action.")] = False,
) -> None:
    """What to reclaim, expand or raise, by when and at what cost, ranked (docs/metrics.md,
    "Decisions")."""
    import re

    from analytics.decisions import DECISION_PROJECTIONS
    from api.services.decisions import month_decisions
    from store.prices import PriceTableError

    if as_json and as_csv:
        raise fail("--json and --csv exclude each other", 2)
    now = datetime.now(UTC).replace(tzinfo=None)
    name = month or now.strftime("%Y-%m")
    if not re.match(MONTH_PATTERN, name):
        raise fail("--month must be a month YYYY-MM from 1970-01 to 2199-12", 2)
    params = {"month": name, **({"cluster": cluster} if cluster else {})}

    def local(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        try:
            return month_decisions(con, get_settings(), name, now, cluster)
        except PriceTableError as exc:
            raise fail(str(exc)) from None

    body: dict[str, Any] = read_model(
        "/v1/decisions?" + urlencode(params), local, DECISION_PROJECTIONS
    )
    if as_json:
        sys.stdout.write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(COLUMNS)
        for d in body["items"]:
            writer.writerow(["" if d[c] is None else d[c] for c in COLUMNS])
        return
    table = Table(title=f"decisions {body['month']}, as of {body['as_of']}", title_justify="left")
    for column in ("#", "kind", "target", "by", "saves/month", "costs/month", "evidence"):
        table.add_column(column, overflow="fold")
    for d in body["items"]:
        table.add_row(
            str(d["rank"]),
            d["kind"],
            d["target"],
            d["by"],
            _money(d["monthly_savings"]),
            _money(d["monthly_cost"]),
            d["evidence"],
        )
    out.print(table)
    if not body["items"]:
        out.print("Nothing to decide: no rule fired.")
