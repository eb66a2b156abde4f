"""`opsledger collect` and `opsledger collectors status`."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from api.cli.common import err, fail, ledger, out
from ingest.collectors.runtime import Collector
from store.settings import get_settings

collectors_app = typer.Typer(
    help="The collectors' health.",
    epilog="Example: `opsledger collectors status`",
    no_args_is_help=True,
)

FileOption = Annotated[
    Path | None,
    typer.Option("--file", help="The collectors file; default OPSLEDGER_COLLECTORS_FILE."),
]


def _load(file: Path | None) -> list[Collector]:
    from ingest.collectors.config import load_collectors
    from ingest.collectors.yamlfile import ConfigError

    path = file or get_settings().collectors_file
    if path is None:
        raise fail("no collectors file: set OPSLEDGER_COLLECTORS_FILE or pass --file", 2)
    try:
        return load_collectors(path)
    except ConfigError as exc:
        raise fail(str(exc), 2) from None


def collect(
    once: Annotated[
        bool, typer.Option("--once", help="Run each collector once, then exit.")
    ] = False,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Only this collector (repeatable).")
    ] = None,
    file: FileOption = None,
) -> None:
    """Run the configured collectors: once, or on their intervals until interrupted."""
    from ingest.collectors.runtime import run_once
    from ingest.collectors.scheduler import CollectorScheduler

    selected = _load(file)
    if only:
        unknown = sorted(set(only) - {c.name for c in selected})
        if unknown:
            known = ", ".join(c.name for c in selected) or "none"
            raise fail(f"unknown collector {unknown[0]!r}; configured: {known}", 2)
        selected = [c for c in selected if c.name in only]
    led = ledger()
    if once:
        table = Table("collector", "appended", "duplicates", "error")
        failed = False
        for c in selected:
            r = run_once(led, c)
            failed = failed or r.error is not None
            table.add_row(r.name, str(r.appended), str(r.duplicates), r.error or "")
        out.print(table)
        if failed:
            raise typer.Exit(1)
        return
    scheduler = CollectorScheduler(led, selected)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    scheduler.start()
    err.print(f"collecting with {len(selected)} collector(s); Ctrl-C to stop")
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        scheduler.stop()


@collectors_app.command("status", epilog="Example: `opsledger collectors status --json`")
def status(
    file: FileOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Last run, last success, last error, events appended and lag of each collector."""
    from api.services.collectors import status_rows
    from store.collectors import states

    path = file or get_settings().collectors_file
    intervals = {c.name: c.interval_seconds for c in _load(path)} if path else {}
    rows: list[dict[str, Any]] = status_rows(
        states(ledger().engine), intervals, time.time_ns() // 1000
    )
    if as_json:
        out.print_json(orjson.dumps({"collectors": rows}).decode())
        return
    table = Table("collector", "status", "last success", "lag (s)", "events", "last error")
    for r in rows:
        lag = "-" if r["lag_seconds"] is None else f"{r['lag_seconds']:.0f}"
        table.add_row(
            r["name"],
            r["status"],
            r["last_success_at"] or "-",
            lag,
            str(r["events_appended"]),
            r["last_error"] or "",
        )
    out.print(table)
