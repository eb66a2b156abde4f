"""The `opsledger` command line (Typer + Rich)."""

from __future__ import annotations

import typer

from api.cli import db, demo, events, keys, projections, serve
from api.cli.backup import backup, restore, verify
from api.cli.collectors import collect, collectors_app
from api.cli.common import err
from api.cli.cost import cost_app
from api.cli.decisions import decisions
from api.cli.digest import digest
from api.cli.export import export
from api.cli.incidents import incidents_app, sla_app
from api.cli.query import query
from api.cli.report import report_app

app = typer.Typer(
    help="opsledger: event-sourced incident and capacity analytics for Kubernetes.",
    epilog="Example: `opsledger db upgrade && opsledger demo && opsledger serve`",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(db.db_app, name="db")
app.add_typer(keys.keys_app, name="keys")
app.add_typer(events.events_app, name="events")
app.add_typer(projections.projections_app, name="projections")
app.add_typer(incidents_app, name="incidents")
app.add_typer(sla_app, name="sla")
app.add_typer(collectors_app, name="collectors")
app.add_typer(report_app, name="report")
app.add_typer(cost_app, name="cost")
app.command(
    "collect",
    epilog="Example: `opsledger collect --once --only prometheus/prod-eks-1`",
)(collect)
app.command(
    "query",
    epilog='Example: `opsledger query "SELECT severity, count(*) FROM incidents GROUP BY ALL" '
    "--format csv`",
)(query)
app.command(
    "export",
    epilog="Examples: `opsledger export incidents --format csv --out incidents.csv`, "
    "`opsledger export capacity_daily --partition month --out s3://bucket/opsledger`",
)(export)
app.command("decisions", epilog="Example: `opsledger decisions --month 2026-10 --csv`")(decisions)
app.command("digest", epilog="Example: `opsledger digest --since 24h --format markdown`")(digest)
app.command("backup", epilog="Example: `opsledger backup /backups/opsledger/2026-11-26`")(backup)
app.command(
    "restore",
    epilog="Example: `opsledger restore /backups/opsledger/2026-11-26 --force`",
)(restore)
app.command(
    "verify",
    epilog="Examples: `opsledger verify --json > manifest.json`, "
    "`opsledger verify --manifest /backups/opsledger/2026-11-26`",
)(verify)
app.command(
    "import",
    epilog="Examples: `opsledger import history.jsonl`, "
    "`kubectl get events -o json | jq -c ... | opsledger import - --skip-invalid`",
)(events.import_)
app.command("project", epilog="Example: `opsledger project`")(projections.project)
app.command("serve", epilog="Example: `opsledger serve --host 127.0.0.1 --port 8000`")(serve.serve)
app.command("demo", epilog="Example: `opsledger demo --since 2026-10-01 --seed 7`")(demo.demo)


def main() -> None:
    """The `opsledger` console script: expected failures print one line, not a traceback."""
    from pydantic import ValidationError
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from store.errors import ConflictError, StreamVersionError

    try:
        app(standalone_mode=True)
    except ValidationError as exc:
        problems = "; ".join(
            f"OPSLEDGER_{'.'.join(str(p) for p in e['loc']).upper() or 'SETTINGS'}: {e['msg']}"
            for e in exc.errors()
        )
        err.print(f"[red]error:[/red] invalid settings: {problems}", highlight=False)
        raise SystemExit(2) from None
    except (OperationalError, ProgrammingError) as exc:
        text = str(exc.orig)
        if "no such table" in text or "does not exist" in text:
            err.print("[red]error:[/red] the ledger is not migrated: run `opsledger db upgrade`")
        else:
            err.print(f"[red]error:[/red] ledger database: {text.splitlines()[0]}", highlight=False)
        raise SystemExit(1) from None
    except (ConflictError, StreamVersionError) as exc:
        err.print(f"[red]error:[/red] {exc}; nothing was written", highlight=False)
        raise SystemExit(1) from None
