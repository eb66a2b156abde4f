"""Fresh ledger databases on each backend: a SQLite file, or a database on the session's
PostgreSQL server (tests/conftest.py's `pg_server`, started only when a test asks for it)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from store.migrate import upgrade
from support.pg import PostgresServer

#: Fixture params of the backends. The PostgreSQL one carries the `postgres` marker, so every
#: test on it can be selected (`-m postgres`) or left out (`-m "not postgres"`).
BACKENDS = ("sqlite", pytest.param("postgresql", marks=pytest.mark.postgres))

_sqlite_files = itertools.count(1)


def new_database_url(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, *, migrated: bool
) -> str:
    """A fresh database of the backend, at the head revision or empty; dropped after the test."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / f'ledger-{next(_sqlite_files)}.db'}"
        if migrated:
            upgrade(url)
        return url
    server: PostgresServer = request.getfixturevalue("pg_server")
    name = server.migrated_database() if migrated else server.create_database()
    request.addfinalizer(lambda: server.drop_database(name))
    return server.url(name)
