"""`opsledger report capacity`: the monthly capacity-planning report as one HTML file."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from urllib.parse import quote, urlencode

import typer

from api.cli.common import delegate_raw, err, fail, ledger

if TYPE_CHECKING:
    from analytics.outputs.report_model import Month

report_app = typer.Typer(
    help="Reports: the monthly capacity-planning review as a self-contained HTML file.",
    epilog="Example: `opsledger report capacity --month 2026-10 --out capacity-2026-10.html`",
    no_args_is_help=True,
)


@report_app.command(
    "capacity",
    epilog="Example: `opsledger report capacity --month 2026-10 --cluster prod-eks-1 "
    "--out prod-2026-10.html`",
)
def capacity(
    out: Annotated[
        str, typer.Option("--out", help="The HTML file to write (`-`: standard output).")
    ],
    month: Annotated[
        str | None,
        typer.Option(help="The month, YYYY-MM, once it has ended; default the last one that has."),
    ] = None,
    cluster: Annotated[str | None, typer.Option(help="Only this cluster.")] = None,
) -> None:
    """Write the report of a month, as of its end: the same ledger gives the same bytes."""
    from analytics.outputs.report_model import Month, ReportError, last_complete_month
    from store.timefmt import utc_now

    name = month or last_complete_month(utc_now())
    try:
        m = Month.parse(name)
        m.check_ended(utc_now())
    except ReportError as exc:
        raise fail(f"--month: {exc}", 2) from None
    html = _generate(m, cluster)
    body = html.encode("utf-8")
    if out == "-":
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
    else:
        _write_atomically(Path(out), body)
    where = "standard output" if out == "-" else out
    err.print(f"wrote {where}: capacity report for {m.name}, {len(body):,} bytes", highlight=False)


def _generate(month: Month, cluster: str | None) -> str:
    """Render here (the read model caught up first), or ask the server that holds it."""
    from analytics.decisions.gather import policy_of
    from analytics.outputs.report_data import gather
    from analytics.outputs.report_model import UnknownCluster
    from analytics.readmodel.model import ReadModel, ReadModelBusy
    from analytics.readmodel.registry import default_projections
    from analytics.readmodel.runner import Runner
    from api.report.html import render
    from store.prices import PriceTableError
    from store.settings import get_settings

    try:
        model = ReadModel(get_settings().read_model)
    except ReadModelBusy:
        query = f"?{urlencode({'cluster': cluster})}" if cluster else ""
        path = f"/reports/capacity/{quote(month.name)}{query}"
        return delegate_raw("GET", path).decode("utf-8")
    try:
        try:
            policy = policy_of(get_settings())
        except PriceTableError as exc:
            raise fail(str(exc)) from None
        led = ledger()
        Runner(led, model, default_projections()).catch_up()
        try:
            report = gather(model.cursor(), led, month, cluster, policy=policy)
        except UnknownCluster as exc:
            raise fail(str(exc), 4) from None
        return render(report)
    finally:
        model.close()


def _write_atomically(path: Path, body: bytes) -> None:
    """Write beside the target, then rename: a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # as open() would create it, not mkstemp's 0600
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
