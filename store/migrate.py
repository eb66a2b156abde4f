"""Schema migrations through Alembic, located as a package resource so a wheel can migrate."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from typing import Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from store.engine import make_engine

#: Where a ledger's schema stands against the revisions this code ships.
RevisionState = Literal["unmigrated", "behind", "current", "newer"]


class NewerLedgerError(RuntimeError):
    """The ledger was migrated by a newer release: its revision is unknown to this code."""

    def __init__(self, current: str, head: str | None) -> None:
        self.current = current
        self.head = head
        super().__init__(
            f"the ledger is at revision {current}, which this opsledger (head {head}) does not "
            "know: it was migrated by a newer release; upgrade opsledger instead"
        )


@dataclass(frozen=True, slots=True)
class RevisionCheck:
    """The ledger's revision(s) against this code's head, and what that means."""

    state: RevisionState
    current: tuple[str, ...]
    head: str | None
    #: The current revisions this code does not know (a newer release's).
    unknown: tuple[str, ...] = ()

    @property
    def problem(self) -> str | None:
        """Why the server must not run on this ledger (one line), or None when it is current."""
        if self.state == "unmigrated":
            return "the ledger is not migrated: run `opsledger db upgrade`"
        if self.state == "behind":
            return (
                f"the ledger is at revision {', '.join(self.current)}, behind this opsledger "
                f"(head {self.head}): run `opsledger db upgrade`"
            )
        if self.state == "newer":
            return str(NewerLedgerError(self.unknown[0], self.head))
        return None


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config whose scripts come from the installed `migrations` package."""
    cfg = Config()
    cfg.set_main_option("script_location", str(files("migrations")))
    if url is not None:
        # ConfigParser interpolation would treat a password's % as syntax.
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` to `revision`.

    Raises NewerLedgerError, touching nothing, when the database is at a revision this code
    does not know (a newer release migrated it): Alembic could only fail on it half-way.
    """
    engine = make_engine(url)
    try:
        check = check_current(engine)
    finally:
        engine.dispose()
    if check.state == "newer":
        raise NewerLedgerError(check.unknown[0], check.head)
    command.upgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    """The newest revision shipped with this version."""
    return _scripts().get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None when unmigrated."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def check_current(engine: Engine) -> RevisionCheck:
    """Whether the database is unmigrated, behind this code's head, at it, or newer than it."""
    scripts = _scripts()
    heads = tuple(scripts.get_heads())
    head = ", ".join(heads) or None
    with engine.connect() as conn:
        current = tuple(MigrationContext.configure(conn).get_current_heads())
    known = {s.revision for s in scripts.walk_revisions()}
    unknown = tuple(r for r in current if r not in known)
    state: RevisionState
    if not current:
        state = "unmigrated"
    elif unknown:
        state = "newer"
    elif set(current) == set(heads):
        state = "current"
    else:
        state = "behind"
    return RevisionCheck(state, current, head, unknown)
