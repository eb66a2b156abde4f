"""`opsledger db`: the ledger's database schema."""

from __future__ import annotations

from typing import Annotated

import typer

from api.cli.common import err
from api.cli.common import fail as _fail
from api.cli.common import ledger as _ledger
from store.engine import display_url
from store.settings import get_settings

db_app = typer.Typer(
    help="The ledger's database schema.",
    epilog="Example: `opsledger db upgrade`",
    no_args_is_help=True,
)


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
