"""`opsledger project` and `opsledger projections`: the read model's catch-up, status, rebuild."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from api.cli.common import delegate as _delegate
from api.cli.common import err, out
from api.cli.common import fail as _fail
from api.cli.common import ledger as _ledger
from store.settings import get_settings

projections_app = typer.Typer(
    help="The read model's projections (DuckDB).",
    epilog="Example: `opsledger projections status`",
    no_args_is_help=True,
)


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
