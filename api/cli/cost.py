"""`opsledger cost …`: showback and the month's spend forecast (here or via the server)."""

from __future__ import annotations

import csv
import re
import sys
from datetime import UTC, datetime
from typing import Annotated, Any, Final, cast
from urllib.parse import urlencode

import duckdb
import orjson
import typer
from rich.table import Table

from analytics.decisions import DECISION_PROJECTIONS
from api.cli.common import fail, naive_option, out
from api.cli.incidents import read_model
from store.settings import get_settings
from store.timefmt import MONTH_PATTERN

cost_app = typer.Typer(
    help="Cost: each namespace's, node pool's or workload's share of the nodes, and the "
    "month's spend forecast.",
    epilog="Example: `opsledger cost showback --month 2026-10 --by namespace`",
    no_args_is_help=True,
)

BY: Final = ("namespace", "nodepool", "workload")
#: What showback reads: node samples, node status, container samples and prices.
SHOWBACK_PROJECTIONS: Final = ("capacity", "cluster_events", "workloads", "cost")
#: The forecast lists the month's expansions, which every decision's projections feed.
FORECAST_PROJECTIONS: Final = DECISION_PROJECTIONS
FORECAST_FIELDS: Final = (
    "month",
    "as_of",
    "currency",
    "spent_to_date",
    "days_with_data",
    "remaining_days",
    "forecast",
    "low",
    "high",
    "budget",
    "status",
)

MonthOption = Annotated[str, typer.Option(help="The month, YYYY-MM.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the API's JSON answer.")]
AsCsv = Annotated[bool, typer.Option("--csv", help="Print CSV (a header, then a row each).")]


def _month(value: str) -> str:
    if not re.match(MONTH_PATTERN, value):
        raise fail("--month must be a month YYYY-MM from 1970-01 to 2199-12", 2)
    return value


def _format(as_json: bool, as_csv: bool) -> str:
    if as_json and as_csv:
        raise fail("--json and --csv exclude each other", 2)
    return "json" if as_json else "csv" if as_csv else "table"


def _price_table() -> Any:
    from store.prices import PriceTableError, load_price_table

    try:
        return load_price_table(get_settings().price_table_file)
    except PriceTableError as exc:
        raise fail(str(exc)) from None


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _money(value: float | None) -> str:
    return "" if value is None else f"{value:,.2f}"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _csv(header: list[str], rows: list[list[Any]]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([_cell(v) for v in row] for row in rows)


def _json(body: Any) -> None:
    sys.stdout.write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")


@cost_app.command(
    "showback", epilog="Example: `opsledger cost showback --month 2026-10 --by workload --csv`"
)
def showback_command(
    month: MonthOption,
    by: Annotated[str, typer.Option(help="namespace, nodepool or workload.")] = "namespace",
    cluster: Annotated[str | None, typer.Option(help="Only this cluster.")] = None,
    as_json: AsJson = False,
    as_csv: AsCsv = False,
) -> None:
    """Each namespace's, node pool's or workload's cost of the nodes it held, and idle
    (docs/metrics.md, "Showback")."""
    from analytics.cost.showback import KEYS, By, showback

    fmt, name = _format(as_json, as_csv), _month(month)
    if by not in BY:
        raise fail(f"--by must be one of {', '.join(BY)}", 2)
    params = {"month": name, "by": by, **({"cluster": cluster} if cluster else {})}

    def local(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        s = get_settings()
        w_cpu, w_mem = s.cost_cpu_core_hour_weight, s.cost_memory_gib_hour_weight
        grouping = cast("By", by)
        return showback(con, name, grouping, _now(), _price_table(), w_cpu, w_mem, cluster)

    body: dict[str, Any] = read_model(
        "/v1/cost/showback?" + urlencode(params), local, SHOWBACK_PROJECTIONS
    )
    keys = list(KEYS[by])
    columns = ["cluster", *keys, "idle", "cpu_cost", "memory_cost", "cost", "share", "reason"]
    if fmt == "json":
        _json(body)
    elif fmt == "csv":
        _csv(columns, [[item.get(c) for c in columns] for item in body["items"]])
    else:
        _print_showback(body, keys)


def _print_showback(body: dict[str, Any], keys: list[str]) -> None:
    table = Table(
        title=f"showback {body['month']} by {body['by']} ({body['currency'] or 'no currency'}), "
        f"as of {body['as_of']}",
        title_justify="left",
    )
    for column in ("cluster", *keys, "cpu", "memory", "cost", "share", "reason"):
        justify = "right" if column in ("cpu", "memory", "cost", "share") else "left"
        table.add_column(column, overflow="fold", justify=justify)  # type: ignore[arg-type]
    for item in body["items"]:
        names = [item[k] or "" for k in keys]
        if item["idle"]:
            names = ["(idle)", *[""] * (len(keys) - 1)]
        share = "" if item["share"] is None else f"{item['share']:.1%}"
        table.add_row(
            item["cluster"],
            *names,
            _money(item["cpu_cost"]),
            _money(item["memory_cost"]),
            _money(item["cost"]),
            share,
            item.get("reason") or "",
        )
    out.print(table)
    totals = Table("cluster", "node cost", "currency", "unpriced nodes", title="totals")
    for t in body["totals"]:
        unpriced = "; ".join(f"{u['node']}: {u['reason']}" for u in t["unpriced"])
        totals.add_row(t["cluster"], _money(t["cost"]), t["currency"] or "", unpriced)
    out.print(totals)


@cost_app.command(
    "forecast",
    epilog="Example: `opsledger cost forecast --month 2026-10 --as-of 2026-10-15T00:00:00Z`",
)
def forecast_command(
    month: MonthOption,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Forecast as of this time (RFC 3339); default now."),
    ] = None,
    as_json: AsJson = False,
    as_csv: AsCsv = False,
) -> None:
    """The month's spend to date, forecast to its end with an 80 % band, against the budget
    (docs/metrics.md, "Cost forecast")."""
    from analytics.cost.forecast import forecast
    from analytics.decisions.gather import month_as_of
    from api.services.decisions import expansion_costs
    from store.prices import PriceTableError

    fmt, name = _format(as_json, as_csv), _month(month)
    when = naive_option("as-of", as_of)
    params = {"month": name, **({"as_of": as_of} if as_of else {})}

    def local(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        at = when or _now()
        try:
            grow = expansion_costs(con, get_settings(), name, month_as_of(name, at))
        except PriceTableError as exc:
            raise fail(str(exc)) from None
        return forecast(con, name, at, grow)

    body: dict[str, Any] = read_model(
        "/v1/cost/forecast?" + urlencode(params), local, FORECAST_PROJECTIONS
    )
    if fmt == "json":
        _json(body)
    elif fmt == "csv":
        _csv(list(FORECAST_FIELDS), [[body[f] for f in FORECAST_FIELDS]])
    else:
        table = Table("", "", title=f"cost forecast {body['month']}", show_header=False)
        for field in FORECAST_FIELDS[1:]:
            value = body[field]
            money = field in ("spent_to_date", "forecast", "low", "high", "budget")
            table.add_row(field, _money(value) if money else _cell(value))
        for grow in body["expansions"]:
            table.add_row(f"expansion {grow['target']}", _money(grow["monthly_cost"]))
        out.print(table)
