"""Migrations: pytest-alembic's four default tests on each backend, and migrating from a wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from pytest_alembic.config import Config
from pytest_alembic.tests import (
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)

from store.engine import make_engine
from store.migrate import alembic_config as package_alembic_config
from store.migrate import current_revision, head_revision, upgrade
from store.schema import metadata

__all__ = [  # collected here, once per backend, through the fixtures below
    "test_model_definitions_match_ddl",
    "test_single_head_revision",
    "test_up_down_consistency",
    "test_upgrade",
]

ROOT = Path(__file__).resolve().parents[1]
TABLES = {"events", "series", "api_keys", "collectors", "alembic_version"}


@pytest.fixture
def alembic_config() -> Config:
    """The packaged configuration, exactly as `store.migrate` builds it (script_location pkg)."""
    return Config(alembic_config=package_alembic_config())


@pytest.fixture
def alembic_engine(empty_database_url: str) -> Iterator[sa.Connection]:
    """A connection to an empty database on each backend, made as the service makes them.

    A Connection rather than an Engine: pytest-alembic hands this object to migrations/env.py
    as `config.attributes["connection"]`, and env.py passes it straight to Alembic, which
    accepts only a Connection.
    """
    engine = make_engine(empty_database_url)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def test_upgrade_creates_the_schema(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    try:
        assert current_revision(engine) == head_revision()
        inspector = sa.inspect(engine)
        assert set(inspector.get_table_names()) == TABLES
        for table in metadata.sorted_tables:
            columns = {c["name"] for c in inspector.get_columns(table.name)}
            assert columns == set(table.columns.keys()), table.name
        # Upgrading again is a no-op.
        upgrade(empty_database_url)
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_script_location_is_the_installed_package() -> None:
    location = Path(package_alembic_config().get_main_option("script_location") or "")
    import migrations

    assert location == Path(migrations.__file__).parent
    assert (location / "versions").is_dir()


@pytest.mark.slow
def test_migrations_run_from_an_installed_wheel(tmp_path: Path) -> None:
    # Build from a copy: an in-tree setuptools build would leave build/ and *.egg-info behind.
    source = tmp_path / "src"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv",
            "__pycache__",
            "*.egg-info",
            "build",
            "dist",
            ".opsledger",
            ".mypy_cache",
            ".ruff_cache",
            ".pytest_cache",
            ".hypothesis",
            "test-artifacts",
        ),
    )
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = wheels.glob("opsledger-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    installed = subprocess.run(
        [*pip, "install", "--no-deps", "--no-compile", "-q", "--target", site, str(wheel)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr

    # Dependencies come from the project's environment, appended after the fresh venv's own
    # site-packages, so `store` and `migrations` resolve to the wheel's copies. The editable
    # install's finder (.pth) is not processed for a PYTHONPATH entry, and the working
    # directory is outside the checkout, so the checkout cannot leak in.
    deps = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    database = tmp_path / "x" / "ledger.db"
    script = (
        "import migrations, store\n"
        "from store.migrate import upgrade\n"
        f"upgrade({f'sqlite:///{database}'!r})\n"
        "print(store.__file__)\n"
        "print(migrations.__file__)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "OPSLEDGER_"))}
    env["PYTHONPATH"] = deps
    run = subprocess.run(
        [str(python), "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    store_file, migrations_file = run.stdout.split()
    assert Path(store_file).is_relative_to(site), store_file
    assert Path(migrations_file).is_relative_to(site), migrations_file
    assert not Path(store_file).is_relative_to(ROOT)

    engine = sa.create_engine(f"sqlite:///{database}")
    try:
        assert set(sa.inspect(engine).get_table_names()) == TABLES
        with engine.connect() as conn:
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        assert version == head_revision()
    finally:
        engine.dispose()
