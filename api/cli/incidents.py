"""`opsledger incidents …` and `opsledger sla …`: commands, and reads of the read model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import duckdb
import orjson
import typer
from rich.table import Table

from api.cli.common import delegate_raw, err, fail, ledger, naive_option, out, time_option
from ingest import incidents as commands
from ingest.events import BodyError
from ingest.sla import parse_policy, set_policy
from store.contract import ContractError
from store.errors import StreamVersionError
from store.incident_state import SEVERITIES, IncidentState
from store.settings import get_settings
from store.timefmt import datetime_to_us, format_us

incidents_app = typer.Typer(
    help="Incidents: open, acknowledge, mitigate, resolve, reopen; list, show, timeline.",
    epilog='Example: `opsledger incidents open --title "etcd latency" --severity P1 '
    "--cluster prod`",
    no_args_is_help=True,
)
sla_app = typer.Typer(
    help="The SLA policy and its breaches.",
    epilog="Example: `opsledger sla set policy.yaml`",
    no_args_is_help=True,
)

By = Annotated[str | None, typer.Option(help="Who did it.")]
At = Annotated[str | None, typer.Option(help="When (RFC 3339); default now.")]
Expect = Annotated[
    int | None,
    typer.Option("--expect-version", help="Fail (exit 3) unless the incident is at this version."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


STATUSES = ("open", "acknowledged", "mitigated", "resolved")


def _choice(option: str, value: str | None, choices: Sequence[str]) -> None:
    if value is not None and value not in choices:
        raise fail(f"--{option} must be one of {', '.join(choices)}", 2)


def _run(command: Callable[[], IncidentState]) -> None:
    """Run a command and print the incident; refusals exit 2 (bad input) or 3 (conflict)."""
    from api.services.incidents import state_body

    try:
        st = command()
    except commands.IncidentNotFound as exc:
        raise fail(str(exc), 4) from None
    except commands.InvalidTransition as exc:
        raise fail(f"{exc} (version {exc.state.version})", 3) from None
    except StreamVersionError as exc:
        raise fail(f"{exc}; show the incident and retry", 3) from None
    except commands.CommandError as exc:
        raise fail(str(exc), 2) from None
    except ContractError as exc:
        raise fail("; ".join(f"{p.field}: {p.reason}" for p in exc.problems), 2) from None
    _print_incident(state_body(st))


def _print_incident(inc: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    for key in (
        "incident_id",
        "title",
        "severity",
        "status",
        "cluster",
        "namespace",
        "service",
        "opened_at",
        "acknowledged_at",
        "mitigated_at",
        "resolved_at",
        "response_due_at",
        "resolution_due_at",
        "postmortem_url",
        "version",
    ):
        if inc.get(key) is not None:
            table.add_row(key, str(inc[key]))
    out.print(table)


@incidents_app.command(
    "open",
    epilog='Example: `opsledger incidents open --title "API 5xx" --severity P1 --cluster prod '
    "--namespace payments`",
)
def open_(
    title: Annotated[str, typer.Option(help="What is wrong.")],
    severity: Annotated[str, typer.Option(help="P0, P1, P2 or P3.")],
    cluster: Annotated[str, typer.Option(help="The cluster affected.")],
    namespace: Annotated[str | None, typer.Option(help="The namespace affected.")] = None,
    service: Annotated[str | None, typer.Option(help="The service affected.")] = None,
    incident_id: Annotated[
        str | None, typer.Option("--id", help="Your own id; default INC-<date>-<random>.")
    ] = None,
    at: At = None,
) -> None:
    """Open an incident (`at` back-fills one that started earlier)."""
    _choice("severity", severity, SEVERITIES)
    _run(
        lambda: commands.open_incident(
            ledger(),
            title=title,
            severity=severity,
            cluster=cluster,
            namespace=namespace,
            service=service,
            incident_id=incident_id,
            at_us=time_option("at", at),
            source="opsledger/cli",
        )
    )


def _action(action: commands.Action, name: str) -> None:
    def command(
        incident_id: Annotated[str, typer.Argument(help="The incident id.")],
        by: By = None,
        at: At = None,
        expect_version: Expect = None,
    ) -> None:
        _run(
            lambda: commands.act(
                ledger(),
                incident_id,
                action,
                by=by,
                at_us=time_option("at", at),
                expect_version=expect_version,
                source="opsledger/cli",
            )
        )

    command.__doc__ = f"{action.capitalize()} an incident."
    incidents_app.command(
        name, epilog=f"Example: `opsledger incidents {name} INC-20261002-3F9A1C --by alice`"
    )(command)


for _name, _act in (
    ("ack", "acknowledge"),
    ("mitigate", "mitigate"),
    ("resolve", "resolve"),
    ("reopen", "reopen"),
):
    _action(_act, _name)  # type: ignore[arg-type]


@incidents_app.command(
    "update",
    epilog="Example: `opsledger incidents update INC-20261002-3F9A1C --severity P0 "
    '--note "customer impact confirmed"`',
)
def update(
    incident_id: Annotated[str, typer.Argument(help="The incident id.")],
    severity: Annotated[str | None, typer.Option(help="The new severity.")] = None,
    note: Annotated[str | None, typer.Option(help="A note for the record.")] = None,
    postmortem: Annotated[str | None, typer.Option(help="The post-mortem's URL.")] = None,
    at: At = None,
    expect_version: Expect = None,
) -> None:
    """Change the severity, annotate and/or link the post-mortem, in one atomic append."""
    _choice("severity", severity, SEVERITIES)
    if severity is None and note is None and postmortem is None:
        raise fail("give at least one of --severity, --note, --postmortem", 2)
    _run(
        lambda: commands.update(
            ledger(),
            incident_id,
            severity=severity,
            note=note,
            postmortem_url=postmortem,
            at_us=time_option("at", at),
            expect_version=expect_version,
            source="opsledger/cli",
        )
    )


def read_model(
    path: str, local: Callable[[duckdb.DuckDBPyConnection], Any], names: Sequence[str]
) -> Any:
    """Answer from the read model here (caught up first), or through the server holding it."""
    from analytics.readmodel.model import ReadModel, ReadModelBusy
    from analytics.readmodel.registry import default_projections
    from analytics.readmodel.runner import Runner

    try:
        model = ReadModel(get_settings().read_model)
    except ReadModelBusy:
        # The server catches up on its own schedule; catch up first to read our own writes.
        delegate_raw("POST", "/v1/projections/catch-up")
        return orjson.loads(delegate_raw("GET", path))
    try:
        Runner(ledger(), model, default_projections()).catch_up(list(names))
        return local(model.cursor())
    finally:
        model.close()


def _query(**params: Any) -> str:
    pairs = [(k.rstrip("_"), v) for k, v in params.items() if v is not None]
    return f"?{urlencode(pairs)}" if pairs else ""


def _window(from_: str | None, to: str | None) -> tuple[datetime, datetime]:
    end = naive_option("to", to) or datetime.now(UTC).replace(tzinfo=None)
    start = naive_option("from", from_) or end - timedelta(days=30)
    if start >= end:
        raise fail("--from must be before --to", 2)
    return start, end


From = Annotated[str | None, typer.Option("--from", help="Opened at or after (RFC 3339).")]
To = Annotated[str | None, typer.Option("--to", help="Opened before (RFC 3339).")]


@incidents_app.command("list", epilog="Example: `opsledger incidents list --status open`")
def list_(
    status: Annotated[
        str | None, typer.Option(help="open, acknowledged, mitigated, resolved.")
    ] = None,
    severity: Annotated[str | None, typer.Option(help="The current severity.")] = None,
    from_: From = None,
    to: To = None,
    cluster: Annotated[str | None, typer.Option(help="Only this cluster.")] = None,
    namespace: Annotated[str | None, typer.Option(help="Only this namespace.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="Most rows.")] = 100,
    as_json: AsJson = False,
) -> None:
    """List incidents, newest opening first."""
    from analytics.incidents.reads import list_incidents

    _choice("status", status, STATUSES)
    _choice("severity", severity, SEVERITIES)
    if limit > get_settings().max_page_size:
        raise fail(f"--limit must be at most {get_settings().max_page_size}", 2)

    def local(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        items, total = list_incidents(
            con,
            status=status,
            severity=severity,
            start=naive_option("from", from_),
            end=naive_option("to", to),
            cluster=cluster,
            namespace=namespace,
            limit=limit,
        )
        return {"items": items, "total": total}

    path = "/v1/incidents" + _query(
        status=status,
        severity=severity,
        from_=from_,
        to=to,
        cluster=cluster,
        namespace=namespace,
        limit=limit,
    )
    body = read_model(path, local, ["incidents"])
    if as_json:
        out.print_json(orjson.dumps(body).decode())
        return
    table = Table("incident", "sev", "status", "opened (UTC)", "cluster", "namespace", "title")
    for i in body["items"]:
        table.add_row(
            i["incident_id"],
            i["severity"],
            i["status"],
            i["opened_at"],
            i["cluster"],
            i["namespace"] or "",
            i["title"],
        )
    out.print(table)
    err.print(f"{len(body['items'])} of {body['total']} incident(s)")


@incidents_app.command("show", epilog="Example: `opsledger incidents show INC-2026-10-006`")
def show(
    incident_id: Annotated[str, typer.Argument(help="The incident id.")],
    as_json: AsJson = False,
) -> None:
    """Show one incident with its SLA targets and every recorded fact."""
    from analytics.incidents.reads import get_incident

    found = read_model(
        f"/v1/incidents/{quote(incident_id, safe='')}",
        lambda con: get_incident(con, incident_id),
        ["incidents"],
    )
    if found is None:
        raise fail(f"no incident {incident_id!r}", 4)
    if as_json:
        out.print_json(orjson.dumps(found).decode())
        return
    _print_incident(found)
    table = Table("time (UTC)", "event", "details", "version")
    for ev in found["events"]:
        details = ", ".join(f"{k}={v}" for k, v in ev["data"].items())
        table.add_row(ev["t"], ev["kind"], details, str(ev["version"] or ""))
    out.print(table)


@incidents_app.command(
    "timeline", epilog="Example: `opsledger incidents timeline INC-2026-10-006 --before 1h`"
)
def timeline(
    incident_id: Annotated[str, typer.Argument(help="The incident id.")],
    before: Annotated[str, typer.Option(help="Context before the opening.")] = "30m",
    after: Annotated[str, typer.Option(help="Context after the resolution.")] = "30m",
    format_: Annotated[
        str, typer.Option("--format", help="markdown (ready to paste) or json.")
    ] = "markdown",
) -> None:
    """The post-mortem timeline: lifecycle, warnings, node changes, restarts, findings, hot runs."""
    from analytics.incidents.timeline import render_markdown
    from api.services.incidents import build_timeline, parse_span

    if format_ not in ("markdown", "json"):
        raise fail("--format must be markdown or json", 2)
    spans = []
    for name, value in (("before", before), ("after", after)):
        try:
            spans.append(parse_span(value))
        except ValueError as exc:
            raise fail(f"--{name} {exc}", 2) from None
    lo, hi = spans

    def local(con: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
        try:
            return build_timeline(con, incident_id, lo, hi)
        except commands.IncidentNotFound:
            return None

    path = f"/v1/incidents/{quote(incident_id, safe='')}/timeline" + _query(
        before=before, after=after
    )
    body = read_model(path, local, ["incidents", "cluster_events", "capacity"])
    if body is None:
        raise fail(f"no incident {incident_id!r}", 4)
    if format_ == "json":
        out.print_json(orjson.dumps(body).decode())
    else:
        typer.echo(render_markdown(body["incident"], body["entries"]))


@incidents_app.command(
    "metrics", epilog="Example: `opsledger incidents metrics --group-by severity,month`"
)
def metrics_(
    from_: From = None,
    to: To = None,
    group_by: Annotated[
        str | None,
        typer.Option(help="Comma-separated: severity, month, cluster, namespace, service."),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """MTTA, MTTM and MTTR (mean, median, p90) per group over incidents opened in the window."""
    from analytics.incidents.metrics import GROUPS, metrics

    keys = [g.strip() for g in (group_by or "").split(",") if g.strip()]
    bad = [g for g in keys if g not in GROUPS]
    if bad or len(set(keys)) != len(keys):
        raise fail(f"--group-by takes distinct names from {', '.join(GROUPS)}", 2)
    start, end = _window(from_, to)
    path = "/v1/incidents/metrics" + _query(from_=from_, to=to, group_by=group_by)
    body = read_model(path, lambda con: {"groups": metrics(con, start, end, keys)}, ["incidents"])
    if as_json:
        out.print_json(orjson.dumps(body).decode())
        return
    table = Table(*keys, "incidents", "MTTA median", "MTTM median", "MTTR median", "MTTR p90")
    for g in body["groups"]:
        table.add_row(
            *[str(g["key"][k]) for k in keys],
            str(g["count"]),
            _duration(g["mtta"]["median"]),
            _duration(g["mttm"]["median"]),
            _duration(g["mttr"]["median"]),
            _duration(g["mttr"]["p90"]),
        )
    out.print(table)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes = round(seconds / 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


@sla_app.command("show", epilog="Example: `opsledger sla show --at 2026-10-15T00:00:00Z`")
def sla_show(
    at: Annotated[str | None, typer.Option(help="In force at (RFC 3339); default now.")] = None,
) -> None:
    """Print the SLA policy in force (every default filled in) and since when."""
    from analytics.incidents.reads import policy_in_force
    from store.datamodels import SlaPolicy

    when = time_option("at", at) or datetime_to_us(datetime.now(UTC))

    def local(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        doc, t, position = policy_in_force(con, when)
        return {
            "policy": SlaPolicy.model_validate(doc, strict=False).model_dump(),
            "effective_from": None if t is None else format_us(t),
            "position": position,
        }

    body = read_model("/v1/sla/policy" + _query(at=at), local, ["incidents"])
    out.print_json(orjson.dumps(body).decode())


@sla_app.command("set", epilog="Example: `opsledger sla set policy.yaml`")
def sla_set(
    file: Annotated[Path, typer.Argument(help="The policy document, YAML or JSON.")],
    effective_from: Annotated[
        str | None, typer.Option(help="In force from (RFC 3339); default now.")
    ] = None,
) -> None:
    """Record a new SLA policy; incidents opened from `effective_from` on are judged by it."""
    try:
        body = file.read_bytes()
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror}", 2) from None
    kind = "application/json" if file.suffix.lower() == ".json" else "application/yaml"
    when = time_option("effective-from", effective_from) or datetime_to_us(datetime.now(UTC))
    try:
        policy, position = set_policy(ledger(), parse_policy(body, kind), when, "opsledger/cli")
    except BodyError as exc:
        raise fail(f"{file}: {exc}", 2) from None
    except ContractError as exc:
        reasons = "; ".join(f"{p.field.removeprefix('data.')}: {p.reason}" for p in exc.problems)
        raise fail(f"{file}: {reasons}", 2) from None
    out.print_json(
        orjson.dumps(
            {"policy": policy, "effective_from": format_us(when), "position": position}
        ).decode()
    )


@sla_app.command("breaches", epilog="Example: `opsledger sla breaches --severity P1`")
def sla_breaches(
    from_: From = None,
    to: To = None,
    severity: Annotated[str | None, typer.Option(help="Only this (most severe) level.")] = None,
    as_json: AsJson = False,
) -> None:
    """Response and resolution breaches of incidents opened in the window, as of now."""
    from analytics.incidents.metrics import breaches

    if severity is not None and severity not in SEVERITIES:
        raise fail(f"--severity must be one of {', '.join(SEVERITIES)}", 2)
    start, end = _window(from_, to)
    now = datetime.now(UTC).replace(tzinfo=None)
    path = "/v1/sla/breaches" + _query(from_=from_, to=to, severity=severity)
    body = read_model(path, lambda con: breaches(con, start, end, now, severity), ["incidents"])
    if as_json:
        out.print_json(orjson.dumps(body).decode())
        return
    table = Table("severity", "incidents", "response breaches", "resolution breaches", "rate")
    for s in body["summary"]:
        rate = "-" if s["breach_rate"] is None else f"{s['breach_rate']:.0%}"
        table.add_row(
            s["severity"],
            str(s["incidents"]),
            str(s["response_breaches"]),
            str(s["resolution_breaches"]),
            rate,
        )
    out.print(table)
    items = Table("incident", "sev", "kind", "due (UTC)", "met (UTC)", "overrun")
    for b in body["items"]:
        items.add_row(
            b["incident_id"],
            b["severity"],
            b["kind"],
            b["due_at"],
            b["met_at"] or "open",
            _duration(b["overrun_seconds"]),
        )
    out.print(items)
