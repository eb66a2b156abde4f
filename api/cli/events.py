"""`opsledger import` and `opsledger events`: write the ledger from files, read it back."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from api.cli.common import err, out
from api.cli.common import fail as _fail
from api.cli.common import ledger as _ledger
from api.cli.common import time_option as _time_option
from store.contract import KNOWN_TYPES
from store.ledger import RecordedEvent
from store.timefmt import format_us

events_app = typer.Typer(
    help="Read the ledger.",
    epilog="Example: `opsledger events tail --follow`",
    no_args_is_help=True,
)


def import_(
    path: Annotated[
        str, typer.Argument(help="A file of JSON Lines, a JSON array or one object; - for stdin.")
    ],
    skip_invalid: Annotated[
        bool, typer.Option(help="Write the valid events and list the rejected ones.")
    ] = False,
) -> None:
    """Import CloudEvents from a file, atomically unless --skip-invalid.

    Exit status 0 only when nothing was rejected.
    """
    from ingest.files import import_bytes

    if path == "-":
        text = sys.stdin.buffer.read()
    else:
        try:
            text = Path(path).read_bytes()
        except OSError as exc:
            raise _fail(f"cannot read {path}: {exc.strerror}", 2) from None
    with Progress(
        TextColumn("validating"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=len(text) < 1_000_000,
    ) as bar:
        task = bar.add_task("validate", total=None)
        result = import_bytes(
            _ledger(),
            text,
            skip_invalid=skip_invalid,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    for r in result.rejected[:1000]:
        field = f"{r.field}: " if r.field else ""
        err.print(f"{r.where}: {field}{r.reason}", highlight=False, markup=False)
    if len(result.rejected) > 1000:
        err.print(f"… and {len(result.rejected) - 1000} more")
    rejected_items = len({r.where for r in result.rejected})
    if result.rejected and not result.written:
        err.print("nothing was written (the import is atomic; see --skip-invalid)")
    out.print(
        f"accepted {result.accepted}, duplicates {result.duplicates}, rejected {rejected_items}",
        highlight=False,
    )
    if result.rejected:
        raise typer.Exit(1)


def _types(value: list[str] | None) -> list[str] | None:
    types = [t for v in value or [] for t in v.split(",") if t]
    for t in types:
        if t not in KNOWN_TYPES:
            raise _fail(f"--type {t!r} is not a known type; known: {', '.join(KNOWN_TYPES)}", 2)
    return types or None


def _print_events(page: list[RecordedEvent], as_json: bool) -> None:
    if as_json:
        for e in page:
            sys.stdout.write(orjson.dumps(e.to_cloudevent()).decode() + "\n")
        sys.stdout.flush()
        return
    table = Table("position", "time", "type", "cluster", "source", "id", "summary")
    for e in page:
        table.add_row(
            str(e.position),
            format_us(e.time_us),
            e.type,
            e.cluster or "",
            e.source,
            e.id,
            _summary(e),
        )
    out.print(table)


def _summary(e: RecordedEvent) -> str:
    if e.samples is not None:
        return f"{len(e.samples)} samples, {len(e.samples.series)} series"
    data: dict[str, Any] = dict(e.data or {})
    for key in ("incident_id", "node", "pod", "finding_id", "service", "month", "reason"):
        if key in data:
            return f"{key}={data[key]}"
    return ""


@events_app.command(
    "list",
    epilog="Example: `opsledger events list --type opsledger.incident.opened "
    "--since 2026-10-01T00:00:00Z`",
)
def events_list(
    after: Annotated[int, typer.Option(min=0, help="Start after this position.")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="Most events to show.")] = 50,
    type_: Annotated[list[str] | None, typer.Option("--type", help="Only these types.")] = None,
    cluster: Annotated[str | None, typer.Option(help="Only this cluster.")] = None,
    since: Annotated[str | None, typer.Option(help="Event time ≥ this (RFC 3339).")] = None,
    until: Annotated[str | None, typer.Option(help="Event time < this (RFC 3339).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON Lines.")] = False,
) -> None:
    """List events in position order."""
    page = _ledger().read(
        after,
        limit,
        types=_types(type_),
        cluster=cluster,
        since_us=_time_option("since", since),
        until_us=_time_option("until", until),
    )
    _print_events(page, as_json)


@events_app.command("tail", epilog="Example: `opsledger events tail --follow --json`")
def events_tail(
    lines: Annotated[
        int, typer.Option("-n", "--lines", min=0, help="Show this many last events.")
    ] = 20,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep printing new events.")
    ] = False,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between polls.")] = 1.0,
    type_: Annotated[list[str] | None, typer.Option("--type", help="Only these types.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON Lines.")] = False,
) -> None:
    """Show the last events, and with --follow keep printing new ones."""
    ledger = _ledger()
    types = _types(type_)
    page = ledger.read(0, lines, types=types, newest=True) if lines else []
    _print_events(page, as_json)
    after = page[-1].position if page else ledger.head()
    try:
        while follow:
            page = ledger.read(after, 1000, types=types)
            if page:
                _print_events(page, as_json)
                after = page[-1].position
            else:
                time.sleep(interval)
    except KeyboardInterrupt:
        pass
