"""`opsledger demo`: a deterministic month of history for one EKS cluster."""

from __future__ import annotations

import time
from datetime import date
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from api.cli.common import err, out
from api.cli.common import fail as _fail
from api.cli.common import ledger as _ledger


def demo(
    since: Annotated[
        str | None,
        typer.Option(help="First day (YYYY-MM-DD); default the first day of last month."),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Random seed; the same seed gives the same history.")
    ] = 7,
) -> None:
    """Append a realistic, deterministic month of history for one EKS cluster (idempotent)."""
    from ingest import demo as demo_history

    now_us = time.time_ns() // 1000
    try:
        first = date.fromisoformat(since) if since else demo_history.default_since(now_us)
    except ValueError:
        raise _fail("--since must be a date YYYY-MM-DD", 2) from None
    with Progress(
        TextColumn("loading demo history"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("demo", total=None)
        totals = demo_history.load(
            _ledger(),
            first,
            now_us,
            seed=seed,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    out.print(
        f"demo since {first.isoformat()}: accepted {totals.accepted}, duplicates "
        f"{totals.duplicates}, {totals.samples} metric samples",
        highlight=False,
    )
