"""Shared fixtures: real ledger backends (a SQLite file, a throwaway PostgreSQL 15 server), a
tmpfs of a test's own; and the markers that say what a test needs (pyproject.toml declares them).

The helpers behind the fixtures live in tests/support/; tests import them from there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from support.databases import BACKENDS, new_database_url
from support.disk import tmpfs
from support.pg import PostgresServer, PostgresUnavailable, start_server

from store.ledger import Ledger
from store.migrate import upgrade

# CI explores the same examples on every run, so a red build is reproducible and never a coin
# toss; local runs keep exploring new ones (and replay failures from .hypothesis/).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

#: Fixtures that need an outside program, and the marker of each test using one. The backend
#: fixtures' PostgreSQL param carries `postgres` itself (support.databases.BACKENDS).
FIXTURE_MARKS = {
    "pg_server": "postgres",
    # tests/test_collector_prometheus.py: a real Prometheus back-filled with promtool.
    "prometheus": "prometheus",
}
#: Modules whose every test needs an outside program.
MODULE_MARKS = {
    # Chromium through Playwright (that module is edited elsewhere; its marker is set here).
    "test_report_browser.py": "browser",
}
#: Tests over ~3 s in modules that carry no markers of their own (the report's modules are
#: edited elsewhere; test_demo.py keeps its lines); every other slow test says so itself with
#: @pytest.mark.slow. By module, then function (all its parameters).
SLOW_ELSEWHERE = {
    "test_demo.py": {
        "test_content_depends_only_on_the_seed_and_the_slot",
        "test_reloading_finds_only_duplicates_and_a_later_now_only_adds",
    },
    "test_golden_outputs.py": {"test_outputs_are_byte_identical"},
    "test_report.py": {
        "test_regeneration_is_byte_identical_and_later_events_change_nothing",
        "test_the_cli_writes_the_same_bytes",
    },
    "test_report_browser.py": {"test_the_report_renders_in_chromium"},
}


def pytest_configure(config: pytest.Config) -> None:
    """Keep pytest-alembic from binding its built-in tests to this conftest.py.

    tests/test_migrations.py runs those tests itself, once per backend. pytest-alembic 0.13.1
    binds them to tests/conftest.py by default even without --test-alembic, and that binding
    fails under pytest 9 (its collector sets `_nodeid`, which pytest 9 no longer has).
    """
    if not getattr(config.option, "pytest_alembic_tests_path", None):
        config.option.pytest_alembic_tests_path = "tests/.pytest-alembic-not-bound"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that need PostgreSQL, Prometheus or Chromium, and the slow ones above."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        for fixture, marker in FIXTURE_MARKS.items():
            if fixture in names:
                item.add_marker(marker)
        marker = MODULE_MARKS.get(item.path.name)
        if marker is not None:
            item.add_marker(marker)
        if getattr(item, "originalname", item.name) in SLOW_ELSEWHERE.get(item.path.name, ()):
            item.add_marker("slow")


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


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> Iterator[Ledger]:
    """A fresh, migrated SQLite ledger file, for the tests that need one backend only."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    led = Ledger.from_url(url)
    try:
        yield led
    finally:
        led.engine.dispose()


@pytest.fixture
def disk() -> Iterator[Path]:
    """A small tmpfs of its own, unmounted after the test (needs root; skipped elsewhere,
    failed in CI)."""
    with tmpfs() as mount:
        yield mount
