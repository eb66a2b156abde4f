"""Schema migrations through Alembic, located as a package resource so a wheel can migrate."""

from __future__ import annotations

from importlib.resources import files

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config whose scripts come from the installed `migrations` package."""
    cfg = Config()
    cfg.set_main_option("script_location", str(files("migrations")))
    if url is not None:
        # ConfigParser interpolation would treat a password's % as syntax.
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` to `revision`."""
    command.upgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    """The newest revision shipped with this version."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None when unmigrated."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
