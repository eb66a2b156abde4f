"""A throwaway PostgreSQL server for the test session, or the one named by OPSLEDGER_TEST_PG_URL."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

from store.migrate import upgrade
from support.servers import free_port

ENV_URL = "OPSLEDGER_TEST_PG_URL"
ENV_BINDIR = "OPSLEDGER_TEST_PG_BINDIR"
DEFAULT_BINDIR = Path("/usr/lib/postgresql/15/bin")
INSTALL_HINT = (
    "PostgreSQL 15 server binaries are required by the test suite and were not found in {bindir}. "
    "Install them (Debian: `apt-get install -y --no-install-recommends postgresql-15`), point "
    f"{ENV_BINDIR} at their directory, or set {ENV_URL} to a server the tests may create "
    "databases on (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres)."
)


class PostgresUnavailable(RuntimeError):
    """The server binaries are missing or the server did not start."""


class PostgresServer:
    """A PostgreSQL server the tests may create and drop databases on."""

    def __init__(self, base_url: URL, owned: _LocalCluster | None = None) -> None:
        self.base_url = base_url
        self._owned = owned
        self._names = itertools.count(1)
        self._prefix = f"opsledger_t{os.getpid()}_{int(time.time() * 1000) % 10**8}"
        self._created: list[str] = []
        self._template: str | None = None

    def url(self, database: str) -> str:
        """The SQLAlchemy URL (psycopg 3 driver) of a database on this server."""
        url = self.base_url.set(drivername="postgresql+psycopg", database=database)
        return url.render_as_string(hide_password=False)

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        url = self.base_url.set(drivername="postgresql")
        if not url.database:
            url = url.set(database="postgres")
        return psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)

    def create_database(self, template: str | None = None) -> str:
        """Create an empty (or template-cloned) database with a unique name; return its name."""
        name = f"{self._prefix}_{next(self._names)}"
        stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        with self._admin() as conn:
            if template is not None:
                stmt = sql.SQL("{} TEMPLATE {}").format(stmt, sql.Identifier(template))
                if conn.info.server_version >= 150000:
                    # Copying the small template's files is several times faster than PG 15's
                    # default WAL_LOG strategy, which adds about 0.2 s to every test.
                    stmt = sql.SQL("{} STRATEGY FILE_COPY").format(stmt)
            conn.execute(stmt)
        self._created.append(name)
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting any session still using it."""
        with self._admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        if name in self._created:
            self._created.remove(name)

    def migrated_database(self) -> str:
        """A fresh database at the head revision, cloned from a template migrated once."""
        if self._template is None:
            template = self.create_database()
            upgrade(self.url(template))
            self._template = template
        return self.create_database(template=self._template)

    def close(self) -> None:
        """Drop what this session created, then stop and delete a server the session started."""
        try:
            if self._owned is None:
                for name in list(reversed(self._created)):
                    self.drop_database(name)
        finally:
            if self._owned is not None:
                self._owned.stop()


class _LocalCluster:
    """An initdb'd cluster in a temporary directory, listening on 127.0.0.1 only."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="opsledger-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.log = self.root / "server.log"
        self.port = 0
        self._as_root = os.geteuid() == 0

    def _run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        # initdb and postgres refuse to run as root, so root hands them to the postgres user.
        cmd = ["runuser", "-u", "postgres", "--", *argv] if self._as_root else list(argv)
        return subprocess.run(
            cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
        )

    def start(self) -> None:
        # The postgres user must be able to reach the directory from /tmp downwards.
        self.root.chmod(0o755)
        self.sockets.mkdir(mode=0o755)
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sockets, "postgres", "postgres")
        initdb = self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        if initdb.returncode != 0:
            raise PostgresUnavailable(f"initdb failed:\n{initdb.stdout}\n{initdb.stderr}")
        last = ""
        for _ in range(5):  # another process may take the free port before the server binds it
            self.port = free_port()
            options = (
                f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=200"
            )
            started = self._run(
                [
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log),
                    "-w",
                    "-t",
                    "60",
                    "start",
                    "-o",
                    options,
                ]
            )
            if started.returncode == 0:
                return
            last = f"{started.stdout}\n{started.stderr}\n{self._log_tail()}"
        raise PostgresUnavailable(f"pg_ctl start failed:\n{last}")

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(
                    [
                        str(self.bindir / "pg_ctl"),
                        "-D",
                        str(self.data),
                        "-m",
                        "immediate",
                        "-w",
                        "stop",
                    ]
                )
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def find_bindir() -> Path:
    """The directory holding initdb and pg_ctl; raises PostgresUnavailable when absent."""
    bindir = Path(os.environ.get(ENV_BINDIR) or DEFAULT_BINDIR)
    if not (bindir / "initdb").is_file() or not (bindir / "pg_ctl").is_file():
        raise PostgresUnavailable(INSTALL_HINT.format(bindir=bindir))
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        raise PostgresUnavailable("running as root needs `runuser` to start PostgreSQL as postgres")
    return bindir


def start_server() -> PostgresServer:
    """The server named by OPSLEDGER_TEST_PG_URL, else a new local one (started in about 1 s)."""
    external = os.environ.get(ENV_URL)
    if external:
        return PostgresServer(make_url(external))
    cluster = _LocalCluster(find_bindir())
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    base = URL.create(
        "postgresql+psycopg",
        username="postgres",
        host="127.0.0.1",
        port=cluster.port,
        database="postgres",
    )
    return PostgresServer(base, owned=cluster)
