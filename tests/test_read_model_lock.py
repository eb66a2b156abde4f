"""One process holds the read model for its whole life: its lock survives queries, a second
server on the same home refuses to start, the CLI goes through the running server, and a
fatal DuckDB error is recovered from in place.

Real `opsledger serve` processes, the real CLI, real DuckDB files; locks are read from
/proc/locks, as the kernel keeps them.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
import pytest
from support import SUPPORT
from support.beds import make_bed
from support.capacity import samples_events
from support.cli import OPSLEDGER
from support.payloads import cost_daily
from support.query import demo_events
from support.servers import free_port

from analytics.readmodel.model import (
    ReadModel,
    ReadModelBusy,
    ReadModelUnavailable,
    announcement_of,
    ensure_free,
)
from analytics.readmodel.registry import default_projections
from analytics.readmodel.runner import Runner
from analytics.sql.service import Snapshots, snapshot_root
from store.contract import validate_events
from store.keys import create_key, list_keys
from store.ledger import Ledger
from store.migrate import upgrade
from store.settings import Settings

REPO = Path(__file__).resolve().parent.parent


# -- helpers ----------------------------------------------------------------------------------


def locks_on(path: Path) -> list[tuple[str, str, int]]:
    """(POSIX or FLOCK, READ or WRITE, pid) of each lock the kernel holds on the file."""
    st = path.stat()
    found = []
    for line in Path("/proc/locks").read_text().splitlines():
        parts = line.split()
        if len(parts) < 6 or parts[1] == "->":  # "->": a request waiting for a lock
            continue
        kind, _, mode, pid, where = parts[1:6]
        major, minor, inode = where.split(":")
        if (int(major, 16), int(minor, 16), int(inode)) == (
            os.major(st.st_dev),
            os.minor(st.st_dev),
            st.st_ino,
        ):
            found.append((kind, mode, int(pid)))
    return found


def assert_held_by(pid: int, model: Path) -> None:
    """DuckDB's record lock and our flock on the file, both `pid`'s."""
    held = locks_on(model)
    assert ("POSIX", "WRITE", pid) in held and ("FLOCK", "WRITE", pid) in held, held


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def new_home(tmp_path: Path) -> tuple[Path, str]:
    """A home with a migrated SQLite ledger holding incidents and capacity samples."""
    home = tmp_path / "home"
    home.mkdir()
    url = f"sqlite:///{home / 'ledger.db'}"
    upgrade(url)
    ledger = Ledger.from_url(url)
    try:
        ledger.append(validate_events(demo_events() + samples_events()[:4]))
    finally:
        ledger.engine.dispose()
    return home, url


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSLEDGER_")}
    return env | {"OPSLEDGER_HOME": str(home), "COLUMNS": "200", **extra}


def cli(home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(OPSLEDGER), *args],
        capture_output=True,
        text=True,
        env=cli_env(home, **extra),
        timeout=120,
        check=False,
    )


@contextmanager
def served(home: Path, port: int, **extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """A real `opsledger serve` on `home`, ready (stopped with SIGINT afterwards)."""
    log = (home / f"serve-{port}.log").open("wb")
    proc = subprocess.Popen(
        [str(OPSLEDGER), "serve", "--port", str(port)],
        env=cli_env(home, OPSLEDGER_QUERY_SNAPSHOT_SECONDS="0", **extra),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (home / f"serve-{port}.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def table_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Rows of every table, each read in full (a damaged segment fails to decode)."""
    counts = {}
    tables = con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()
    names = [r[0] for r in tables]
    for name in names:
        rows = con.execute(f'SELECT * FROM "{name}"').fetchall()
        counts[name] = len(rows)
    return counts


# -- a served process keeps its lock; a second server and the CLI keep off --------------------


@pytest.mark.slow
def test_the_server_keeps_the_read_model_and_a_second_server_is_refused(tmp_path: Path) -> None:
    home, url = new_home(tmp_path)
    model = home / "analytics.duckdb"
    ledger = Ledger.from_url(url)
    _, query_token = create_key(ledger.engine, "q", "query")
    _, write_token = create_key(ledger.engine, "w", "write")
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    def ask(sql: str) -> Any:
        r = httpx.post(
            base + "/v1/query",
            json={"query": sql},
            headers={"Authorization": f"Bearer {query_token}"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        return r.json()["rows"]

    try:
        with served(home, port) as server:
            assert_held_by(server.pid, model)
            assert ask("SELECT 1") == [[1]]
            # Copying the snapshot must not release the lock (a second descriptor of the file,
            # once closed, drops every POSIX lock the process holds on it).
            assert_held_by(server.pid, model)
            r = httpx.post(
                base + "/v1/events",
                json=samples_events()[4:],
                headers={"Authorization": f"Bearer {write_token}"},
                timeout=30,
            )
            assert r.status_code == 200, r.text
            assert cli(home, "project").returncode == 0
            assert ask("SELECT count(*) FROM incidents") == [[3]]  # a new snapshot: copied again
            assert_held_by(server.pid, model)
            snapshots = list(snapshot_root(model).iterdir())
            assert [p.name.split(".")[0] for p in snapshots] == [str(server.pid)]
            for p in (model, announcement_of(model)):
                assert mode(p) == 0o600, (p, oct(mode(p)))
            for f in snapshot_root(model).rglob("*"):
                assert mode(f) == (0o700 if f.is_dir() else 0o600), (f, oct(mode(f)))

            # A second server on the same home: one line naming the first, and no listening.
            second_port = free_port()
            second = subprocess.run(
                [str(OPSLEDGER), "serve", "--port", str(second_port)],
                capture_output=True,
                text=True,
                env=cli_env(home),
                timeout=60,
                check=False,
            )
            assert second.returncode != 0
            assert (
                f"the read model {model} is open in another process (pid {server.pid}, {base}); "
                "one server per home"
            ) in second.stderr, second.stderr
            assert "Uvicorn running" not in second.stderr
            assert "Traceback" not in second.stderr, second.stderr
            # The first server is untouched: its announcement, its snapshots, its lock.
            assert orjson.loads(announcement_of(model).read_bytes())["pid"] == server.pid
            assert all(p.exists() for p in snapshots)
            assert_held_by(server.pid, model)
            assert ask("SELECT count(*) FROM incidents") == [[3]]

            # The CLI goes through the server, with a one-off key, revoked afterwards.
            before = {k.key_id for k in list_keys(ledger.engine, include_revoked=True)}
            rebuild = cli(home, "projections", "rebuild", "capacity")
            assert rebuild.returncode == 0, rebuild.stderr
            made = [
                k for k in list_keys(ledger.engine, include_revoked=True) if k.key_id not in before
            ]
            assert [(k.name, k.revoked_at_us is not None) for k in made] == [("cli-delegate", True)]
            assert_held_by(server.pid, model)
            status = cli(home, "projections", "status")
            assert status.returncode == 0 and "capacity" in status.stdout, status.stderr
            served_counts = ask("SELECT count(*) FROM cap_rollup")
        assert server.returncode == 0
        # Stopped: its announcement, snapshots and locks are gone.
        assert not announcement_of(model).exists()
        assert list(snapshot_root(model).iterdir()) == []
        assert locks_on(model) == []

        # The read model is whole: every table reads in full, and holds what a rebuild holds.
        held = ReadModel(model)
        try:
            counts = table_counts(held.cursor())
        finally:
            held.close()
        assert [[counts["cap_rollup"]]] == served_counts and counts["cap_rollup"] > 0
        fresh = ReadModel(tmp_path / "fresh.duckdb")
        try:
            Runner(ledger, fresh, default_projections()).catch_up()
            expected = table_counts(fresh.cursor())
        finally:
            fresh.close()
        assert counts == expected
    finally:
        ledger.engine.dispose()


def test_the_cli_goes_through_an_announced_server_even_when_it_could_open_the_file(
    tmp_path: Path,
) -> None:
    home, _ = new_home(tmp_path)
    model = home / "analytics.duckdb"
    # A live process (this one) announces a server that is not listening: the CLI must ask it,
    # not open the read model itself, although the file's locks are free.
    port = free_port()
    announcement_of(model).write_bytes(
        orjson.dumps({"url": f"http://127.0.0.1:{port}", "pid": os.getpid()})
    )
    r = cli(home, "project")
    assert r.returncode == 1
    assert f"the server at http://127.0.0.1:{port} (pid {os.getpid()}) did not answer" in r.stderr
    assert not model.exists()
    # The announcement of a process that is gone is stale: the CLI works on the file itself.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    announcement_of(model).write_bytes(
        orjson.dumps({"url": f"http://127.0.0.1:{port}", "pid": gone.pid})
    )
    r = cli(home, "project")
    assert r.returncode == 0, r.stderr
    assert "incidents" in r.stdout and model.exists()
    assert mode(model) == 0o600


def test_a_process_holding_the_read_model_keeps_others_off(tmp_path: Path) -> None:
    path = tmp_path / "rm.duckdb"
    holder = subprocess.Popen(
        [sys.executable, str(SUPPORT / "projection_worker.py"), "hold", str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline() == "ready\n"
        with pytest.raises(ReadModelBusy, match=f"\\(pid {holder.pid}\\)"):
            ensure_free(path)
        with pytest.raises(ReadModelBusy, match=f"\\(pid {holder.pid}\\)"):
            ReadModel(path)
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    ensure_free(path)
    ReadModel(path).close()


# -- snapshots ----------------------------------------------------------------------------------


def test_snapshots_copy_without_letting_go_of_the_lock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    ledger = Ledger.from_url(url)
    ledger.append(validate_events(demo_events()))
    # Folders another server left: a dead one's (and an older layout's) go, a live one's stay.
    root = snapshot_root(tmp_path / "rm.duckdb")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    for name in (f"{gone.pid}.1", "7", f"{os.getppid()}.1"):
        (root / name / "1").mkdir(parents=True)
    model = ReadModel(tmp_path / "rm.duckdb")
    runner = Runner(ledger, model, default_projections())
    snaps = Snapshots(model, max_age_s=0, first_wait_s=5)
    try:
        assert sorted(p.name for p in root.iterdir()) == sorted(
            [f"{os.getppid()}.1", snaps.base.name]
        )
        runner.catch_up()
        with snaps.use() as first:
            assert first.path.exists()
        assert ("POSIX", "WRITE", os.getpid()) in locks_on(model.path)
        # A cursor keeping a transaction open across a rebuild stops CHECKPOINT: the copy is
        # then DuckDB's own (COPY FROM DATABASE), which does not open the live file either.
        model.cursor().execute("SELECT 1 FROM range(10)").fetchone()
        t = threading.Thread(target=runner.rebuild, args=(["incidents"],))
        t.start()
        t.join()
        with snaps.use() as second:
            assert model.wal_path.exists()
            assert second.path != first.path and mode(second.path) == 0o600
            copy = duckdb.connect(str(second.path), read_only=True)
            assert copy.execute("SELECT count(*) FROM incidents").fetchone() == (3,)
            copy.close()
        assert_held_by(os.getpid(), model.path)
    finally:
        snaps.close()
        model.close()
        ledger.engine.dispose()
    assert locks_on(tmp_path / "rm.duckdb") == []


# -- a fatal DuckDB error: reopened in place ----------------------------------------------------


def fill(disk: Path) -> Path:
    """A file taking every free byte of the disk."""
    filler = disk / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\xa5" * (1 << 20))
                f.flush()
        except OSError:
            pass
    return filler


def test_a_fatal_error_is_recovered_from_in_place(disk: Path, tmp_path: Path) -> None:
    with make_bed(
        tmp_path, read_model_path=disk / "analytics.duckdb", query_snapshot_seconds=0
    ) as bed:
        projector = bed.app.state.projector
        model: ReadModel = projector.model
        bed.ledger.append(validate_events(demo_events()))
        projector.runner.catch_up()
        q = {"query": "SELECT count(*) FROM incidents"}
        r = bed.client.post("/v1/query", json=q, headers=bed.headers("query"))
        assert r.status_code == 200 and r.json()["rows"] == [[3]], r.text

        # The next snapshot's CHECKPOINT cannot be written: DuckDB invalidates the database.
        # The query answers from the snapshot before, and the file is reopened in place.
        bed.ledger.append(
            validate_events([cost_daily(f"more-cost-{i}", amount=i) for i in range(50)])
        )
        projector.runner.catch_up()
        assert model.wal_path.exists()
        filler = fill(disk)
        r = bed.client.post("/v1/query", json=q, headers=bed.headers("query"))
        assert r.status_code == 200 and r.json()["rows"] == [[3]], r.text
        assert model.healthy() and model.problem is None
        r = bed.client.get("/v1/incidents", headers=bed.headers("read"))
        assert r.status_code == 200 and r.json()["total"] == 3, r.text
        assert bed.client.get("/readyz").status_code == 200

        # Invalidated by another writer: the projector's watch reopens it within seconds.
        with model.write_lock:
            con = model.cursor().cursor()
            with pytest.raises(duckdb.FatalException):
                con.execute("CHECKPOINT")
            con.close()
        assert not model.healthy()
        deadline = time.monotonic() + 10
        while not model.healthy():
            assert time.monotonic() < deadline, "the read model was not reopened"
            time.sleep(0.1)
        filler.unlink()
        r = bed.client.get("/v1/incidents", headers=bed.headers("read"))
        assert r.status_code == 200 and r.json()["total"] == 3, r.text
        r = bed.client.post(
            "/v1/query",
            json={"query": "SELECT count(*) FROM cost_daily"},
            headers=bed.headers("query"),
        )
        assert r.status_code == 200 and r.json()["rows"] == [[51]], r.text  # the WAL replayed
        assert_held_by(os.getpid(), model.path)


def test_a_read_model_that_cannot_be_reopened_is_not_ready(tmp_path: Path) -> None:
    with make_bed(tmp_path, read_model_path=tmp_path / "rm.duckdb") as bed:
        model: ReadModel = bed.app.state.projector.model
        saved = b""
        with model.write_lock:
            # As if a fatal error had closed it, and the file were unreadable meanwhile.
            model.cursor().execute("CHECKPOINT")
            model._con.close()  # type: ignore[union-attr]
            saved = model.path.read_bytes()
            model.path.write_bytes(b"not a database" * 1000)
            assert not model.recover()
        assert model.problem is not None
        with pytest.raises(ReadModelUnavailable, match="unavailable until it can be reopened"):
            model.cursor()
        r = bed.client.get("/readyz")
        assert r.status_code == 503 and "read model" in r.json()["detail"], r.text
        assert str(tmp_path) not in r.text
        r = bed.client.post("/v1/query", json={"query": "SELECT 1"}, headers=bed.headers("query"))
        assert r.status_code == 503 and r.json()["kind"] == "unavailable", r.text
        model.path.write_bytes(saved)
        deadline = time.monotonic() + 10
        while bed.client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, model.problem
            time.sleep(0.1)
        r = bed.client.get("/v1/incidents", headers=bed.headers("read"))
        assert r.status_code == 200, r.text


def test_settings_name_the_same_announcement_as_the_read_model(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'l.db'}")
    assert settings.server_file == announcement_of(settings.read_model)
