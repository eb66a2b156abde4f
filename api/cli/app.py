"""The `opsledger` command line (Typer + Rich)."""

from __future__ import annotations

import sys
import time
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from api.cli.backup import backup, restore, verify
from api.cli.collectors import collect, collectors_app
from api.cli.common import delegate as _delegate
from api.cli.common import err, out
from api.cli.common import fail as _fail
from api.cli.common import ledger as _ledger
from api.cli.common import time_option as _time_option
from api.cli.digest import digest
from api.cli.export import export
from api.cli.incidents import incidents_app, sla_app
from api.cli.query import query
from api.cli.report import report_app
from store.contract import KNOWN_TYPES
from store.engine import display_url
from store.keys import SCOPES, create_key, list_keys, revoke_key
from store.ledger import RecordedEvent
from store.settings import get_settings
from store.timefmt import format_us

app = typer.Typer(
    help="opsledger: event-sourced incident and capacity analytics for Kubernetes.",
    epilog="Example: `opsledger db upgrade && opsledger demo && opsledger serve`",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
db_app = typer.Typer(
    help="The ledger's database schema.",
    epilog="Example: `opsledger db upgrade`",
    no_args_is_help=True,
)
keys_app = typer.Typer(
    help="API keys (only their hashes are stored).",
    epilog="Example: `opsledger keys create --name ci --scope write`",
    no_args_is_help=True,
)
events_app = typer.Typer(
    help="Read the ledger.",
    epilog="Example: `opsledger events tail --follow`",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
projections_app = typer.Typer(
    help="The read model's projections (DuckDB).",
    epilog="Example: `opsledger projections status`",
    no_args_is_help=True,
)
app.add_typer(events_app, name="events")
app.add_typer(projections_app, name="projections")
app.add_typer(incidents_app, name="incidents")
app.add_typer(sla_app, name="sla")
app.add_typer(collectors_app, name="collectors")
app.add_typer(report_app, name="report")
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


@db_app.command("upgrade", epilog="Example: `opsledger db upgrade`")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Create or migrate the ledger's tables to the latest revision."""
    from alembic.util import CommandError

    from store.migrate import NewerLedgerError, current_revision, upgrade

    url = get_settings().ledger_url
    try:
        upgrade(url, revision)
    except NewerLedgerError as exc:
        # Refused before Alembic ran: nothing was changed.
        raise _fail(str(exc)) from None
    except CommandError as exc:
        raise _fail(f"revision {revision}: {exc}", 2) from None
    now = current_revision(_ledger().engine)
    err.print(f"ledger at {display_url(url)} is at revision {now}", highlight=False)


@keys_app.command("create", epilog="Example: `opsledger keys create --name grafana --scope read`")
def keys_create(
    name: Annotated[str, typer.Option(help="A label for the key, e.g. who uses it.")],
    scope: Annotated[
        str, typer.Option(help="read, write, admin (admin ⊇ write ⊇ read) or query (read + SQL).")
    ],
    replace: Annotated[
        bool, typer.Option(help="Revoke active keys with the same name first.")
    ] = False,
) -> None:
    """Create an API key and print its token alone on stdout (it is shown only once)."""
    if scope not in SCOPES:
        raise _fail(f"--scope must be one of {', '.join(SCOPES)}", 2)
    try:
        key, token = create_key(_ledger().engine, name, scope, replace=replace)
    except ValueError as exc:
        raise _fail(f"--name: {exc}", 2) from None
    err.print(f"created key {key.key_id} ({key.name}, {key.scope})", highlight=False)
    print(token)


@keys_app.command("list", epilog="Example: `opsledger keys list --all`")
def keys_list(
    all_: Annotated[bool, typer.Option("--all", help="Include revoked and expired keys.")] = False,
) -> None:
    """List API keys (ids, names, scopes, expiry; never tokens)."""
    table = Table("key id", "name", "scope", "created", "expires", "revoked")
    for k in list_keys(_ledger().engine, include_revoked=all_):
        table.add_row(
            k.key_id,
            k.name,
            k.scope,
            format_us(k.created_at_us),
            format_us(k.expires_at_us) if k.expires_at_us else "",
            format_us(k.revoked_at_us) if k.revoked_at_us else "",
        )
    out.print(table)


@keys_app.command("revoke", epilog="Example: `opsledger keys revoke 3f9a1c2b7d4e`")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id from `keys list`.")],
) -> None:
    """Revoke an API key; requests with it get 401 from then on."""
    if not revoke_key(_ledger().engine, key_id):
        raise _fail(f"no active key with id {key_id!r}")
    err.print(f"revoked {key_id}")


@app.command(
    "import",
    epilog="Examples: `opsledger import history.jsonl`, "
    "`kubectl get events -o json | jq -c ... | opsledger import - --skip-invalid`",
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


def _print_projections(states: list[dict[str, Any]]) -> None:
    from rich.markup import escape

    table = Table("projection", "version", "position", "ledger head", "lag", "poisoned", "failing")
    for st in states:
        # .get: a server of an earlier release answers without these keys.
        error = st.get("last_error")
        table.add_row(
            st["name"],
            str(st["version"]),
            str(st["position"]),
            str(st["head"]),
            str(st["lag"]),
            str(st.get("poisoned", 0)),
            "" if error is None else error["stage"],
        )
    out.print(table)
    # Whole lines, not table cells: an error message is long and must not be cut.
    for st in states:
        error = st.get("last_error")
        if error is not None:
            out.print(
                f"{st['name']}: failing ({error['stage']} at position {error['position']}, "
                f"{error['at']}): {escape(error['error_type'])}: {escape(error['error'])}; "
                "retried at each catch-up",
                highlight=False,
                soft_wrap=True,
            )
        events = st.get("poisoned_events") or []
        if events:
            shown = "" if len(events) == st["poisoned"] else f", the latest {len(events)}"
            out.print(
                f"{st['name']}: {st['poisoned']} poisoned event(s) skipped{shown}:",
                highlight=False,
            )
            for ev in events:
                out.print(
                    f"  position {ev['position']}  {escape(ev['type'])}  id {escape(ev['id'])}"
                    f"  {escape(ev['error_type'])}: {escape(ev['error'])}",
                    highlight=False,
                    soft_wrap=True,
                )


def _local_states(runner: Any) -> list[dict[str, Any]]:
    # The API's body (ProjectionStatus.as_dict), so both print alike.
    states: list[dict[str, Any]] = [s.as_dict() for s in runner.status()]
    return states


def _run_local(action: str, names: list[str] | None) -> list[dict[str, Any]] | None:
    """Run on the read model in this process; None when a server holds it."""
    from analytics.readmodel.model import ReadModel, ReadModelBusy
    from analytics.readmodel.registry import default_projections
    from analytics.readmodel.runner import Runner

    try:
        model = ReadModel(get_settings().read_model)
    except ReadModelBusy:
        return None
    try:
        runner = Runner(_ledger(), model, default_projections())
        if action == "status":
            return _local_states(runner)
        unknown = [n for n in names or [] if n not in runner.projections]
        if unknown:
            known = ", ".join(runner.projections)
            raise _fail(f"unknown projection {unknown[0]!r}; known: {known}", 2)
        failed: Exception | None = None
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as bar:
            tasks: dict[str, Any] = {}

            def progress(name: str, position: int, head: int) -> None:
                if name not in tasks:
                    tasks[name] = bar.add_task(f"{action} {name}", total=head)
                bar.update(tasks[name], completed=position, total=head)

            try:
                if action == "rebuild":
                    runner.rebuild(names, progress)
                else:
                    runner.catch_up(names, progress)
            except Exception as exc:
                # Every projection has had its turn; each failure is in its `last_error`.
                failed = exc
        states = _local_states(runner)
        if failed is not None:
            _print_projections(states)
            raise _fail(f"a projection failed ({type(failed).__name__}); see its error above")
        return states
    finally:
        model.close()


@app.command("project", epilog="Example: `opsledger project`")
def project() -> None:
    """Catch the read model up with the ledger now (through the server when one is running)."""
    states = _run_local("catch-up", None)
    if states is None:
        states = _delegate("POST", "/v1/projections/catch-up")["projections"]
    _print_projections(states)


@projections_app.command("status", epilog="Example: `opsledger projections status`")
def projections_status() -> None:
    """Show each projection's checkpoint, the ledger head and the lag."""
    states = _run_local("status", None)
    if states is None:
        states = _delegate("GET", "/v1/projections")["projections"]
    _print_projections(states)


@projections_app.command("rebuild", epilog="Example: `opsledger projections rebuild capacity`")
def projections_rebuild(
    name: Annotated[
        list[str] | None, typer.Argument(help="Projections to rebuild; default all.")
    ] = None,
) -> None:
    """Drop projections and replay them from the start of the ledger, with a progress bar."""
    states = _run_local("rebuild", name)
    if states is None:
        from urllib.parse import urlencode

        query = urlencode([("name", n) for n in name or []])
        states = _delegate("POST", "/v1/projections/rebuild" + (f"?{query}" if query else ""))[
            "projections"
        ]
    _print_projections(states)


@app.command("serve", epilog="Example: `opsledger serve --host 127.0.0.1 --port 8000`")
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
) -> None:
    """Serve the HTTP API."""
    import uvicorn

    from api.app import create_app
    from api.logs import uvicorn_log_config
    from api.server import ReadTimeoutProtocol
    from store.engine import make_engine
    from store.migrate import check_current

    settings = get_settings()
    # Serving a ledger that is unmigrated, behind, or migrated by a newer release would fail
    # request by request (or worse, write rows a newer schema does not expect): refuse up front.
    engine = make_engine(settings.ledger_url)
    try:
        problem = check_current(engine).problem
    finally:
        engine.dispose()
    if problem is not None:
        raise _fail(problem)
    from analytics.readmodel.model import ReadModelBusy, ensure_free

    # One server per home: say so in one line before uvicorn starts (its lifespan would
    # refuse as well, with a traceback).
    try:
        ensure_free(settings.read_model)
    except ReadModelBusy as exc:
        raise _fail(str(exc)) from None
    err.print(
        f"serving http://{host}:{port}  (ledger {display_url(settings.ledger_url)})",
        highlight=False,
    )
    local = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    app_ = create_app(settings, announce_url=f"http://{local}:{port}")
    # The h11 protocol with a deadline for each request head (uvicorn has none), and uvicorn's
    # log configuration with tokens and URL passwords redacted on every handler.
    uvicorn.run(
        app_,
        host=host,
        port=port,
        log_level=settings.log_level,
        log_config=uvicorn_log_config(),
        http=ReadTimeoutProtocol.with_timeout(settings.request_read_timeout_seconds),
    )


@app.command("demo", epilog="Example: `opsledger demo --since 2026-10-01 --seed 7`")
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
