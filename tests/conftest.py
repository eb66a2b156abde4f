"""Shared fixtures: real ledger backends (a SQLite file, a throwaway PostgreSQL 15 server)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from pg import PostgresServer, PostgresUnavailable, start_server

from store.ledger import Ledger
from store.migrate import upgrade

BACKENDS = ("sqlite", "postgresql")

# CI explores the same examples on every run, so a red build is reproducible and never a coin
# toss; local runs keep exploring new ones (and replay failures from .hypothesis/).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
_sqlite_files = itertools.count(1)


def pytest_configure(config: pytest.Config) -> None:
    """Keep pytest-alembic from binding its built-in tests to this conftest.py.

    tests/test_migrations.py runs those tests itself, once per backend. pytest-alembic 0.13.1
    binds them to tests/conftest.py by default even without --test-alembic, and that binding
    fails under pytest 9 (its collector sets `_nodeid`, which pytest 9 no longer has).
    """
    if not getattr(config.option, "pytest_alembic_tests_path", None):
        config.option.pytest_alembic_tests_path = "tests/.pytest-alembic-not-bound"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session, started only if a test asks for it."""
    try:
        server = start_server()
    except PostgresUnavailable as exc:
        # CI installs PostgreSQL; a missing server is a broken environment, never a skip.
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.close()


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


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh, migrated ledger database on each backend."""
    return new_database_url(request.param, request, tmp_path, migrated=True)


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh database with no tables, on each backend."""
    return new_database_url(request.param, request, tmp_path, migrated=False)


@pytest.fixture
def ledger(backend_url: str) -> Iterator[Ledger]:
    """A ledger on the fresh backend database; its engine is disposed after the test."""
    led = Ledger.from_url(backend_url)
    try:
        yield led
    finally:
        led.engine.dispose()
