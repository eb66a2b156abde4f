"""`opsledger backup`, `restore` and `verify` on real SQLite files and a real PostgreSQL server."""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, insert, select, text
from support.cli import OPSLEDGER, run_cli
from support.payloads import (
    cloudevent,
    incident_milestone,
    incident_opened,
    metric_samples,
    pod_status,
    sample,
    seed_events,
)
from support.pg import PostgresServer

from analytics.incidents.metrics import metrics
from analytics.readmodel.model import ReadModel
from analytics.readmodel.registry import default_projections
from analytics.readmodel.runner import Runner
from ingest import demo
from store.backup import Manifest, backup_sqlite, ledger_manifest
from store.contract import validate_events
from store.engine import make_engine
from store.ledger import EVENT_COLUMNS, Ledger
from store.migrate import head_revision, upgrade
from store.schema import events, series
from store.timefmt import parse_rfc3339_us

PG_BIN = Path(os.environ.get("OPSLEDGER_TEST_PG_BINDIR") or "/usr/lib/postgresql/15/bin")
DEMO_SINCE = dt.date(2026, 11, 24)
DEMO_NOW = parse_rfc3339_us("2026-11-26T00:00:00Z")
CLOCK = dt.datetime(2026, 11, 27)  # naive UTC, as store.timefmt.utc_now


# -- helpers ---------------------------------------------------------------------------------


def new_home(tmp_path: Path, name: str, *, migrated: bool = True) -> Path:
    """An OPSLEDGER_HOME directory, with a migrated (empty) ledger unless told otherwise."""
    home = tmp_path / name
    home.mkdir()
    if migrated:
        upgrade(home_url(home))
    return home


def home_url(home: Path) -> str:
    return f"sqlite:///{home / 'ledger.db'}"


@pytest.fixture
def ledgers() -> Iterator[list[Ledger]]:
    """Ledgers opened by a test, disposed after it."""
    opened: list[Ledger] = []
    yield opened
    for led in opened:
        led.engine.dispose()


def open_ledger(ledgers: list[Ledger], url: str) -> Ledger:
    led = Ledger.from_url(url)
    ledgers.append(led)
    return led


def incident_events(prefix: str = "inc") -> list[dict[str, Any]]:
    """Two incidents through their lifecycle, and a samples event."""
    return [
        incident_opened(f"{prefix}-1-o", incident_id="INC-1", time="2026-11-24T01:00:00Z"),
        incident_milestone("acknowledged", f"{prefix}-1-a", "INC-1", time="2026-11-24T01:05:00Z"),
        incident_milestone("mitigated", f"{prefix}-1-m", "INC-1", time="2026-11-24T01:40:00Z"),
        incident_milestone("resolved", f"{prefix}-1-r", "INC-1", time="2026-11-24T02:30:00Z"),
        incident_opened(
            f"{prefix}-2-o", incident_id="INC-2", severity="P2", time="2026-11-25T09:00:00Z"
        ),
        incident_milestone("acknowledged", f"{prefix}-2-a", "INC-2", time="2026-11-25T12:00:00Z"),
        metric_samples(f"{prefix}-prom", time="2026-11-25T10:00:00Z"),
    ]


def append(led: Ledger, raws: list[dict[str, Any]]) -> None:
    result = led.append(validate_events(raws))
    assert result.duplicates == 0


def cloudevents(led: Ledger, upto: int | None = None) -> list[dict[str, Any]]:
    return [e.to_cloudevent() for e in led.iter_all() if upto is None or e.position <= upto]


def manifest_of(doc: dict[str, Any]) -> Manifest:
    return Manifest(
        doc["head"], doc["event_count"], doc["series_head"], doc["series_count"], doc["digest"]
    )


def run_parallel(*calls: tuple[Any, ...]) -> list[subprocess.CompletedProcess[str]]:
    """Independent CLI runs (args, home[, url]), each about 0.7 s of start-up, at once."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(lambda call: run_cli(*call), calls))


def only_files(path: Path) -> set[str]:
    return {p.name for p in path.iterdir()}


class Writer(threading.Thread):
    """Appends batches of 21 events (20 pod statuses, samples of a new series) until stopped."""

    def __init__(self, led: Ledger) -> None:
        super().__init__(daemon=True)
        self.led = led
        self.stop = threading.Event()
        self.batches = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                n = self.batches
                raws = [pod_status(f"w-{n}-{i}", restarts=i) for i in range(20)]
                labels = {"node": f"node-{n}", "nodepool": "general-purpose", "zone": "z"}
                raws.append(
                    metric_samples(
                        f"w-{n}-prom",
                        [sample("node_cpu_usage_cores", labels, 1764000000 + n, 0.5 + n)],
                    )
                )
                self.led.append(validate_events(raws))
                self.batches += 1
                time.sleep(0.005)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def wait_for(self, head: int, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.led.head() <= head:
            assert self.error is None, self.error
            assert time.monotonic() < deadline, "the writer made no progress"
            time.sleep(0.01)

    def finish(self) -> None:
        self.stop.set()
        self.join(timeout=20)
        assert self.error is None, self.error


def read_model_tables(led: Ledger, path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every projection table after a rebuild from the ledger (fixed clock), ordered."""
    model = ReadModel(path)
    try:
        Runner(led, model, default_projections(), clock=lambda: CLOCK).rebuild()
        con = model.cursor()
        names = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'main' AND table_type = 'BASE TABLE' ORDER BY 1"
            ).fetchall()
            if r[0] != "projection_checkpoints"
        ]
        tables = {n: con.execute(f'SELECT * FROM "{n}" ORDER BY ALL').fetchall() for n in names}
        tables["incident metrics"] = [
            tuple(sorted(orjson.loads(orjson.dumps(g)).items()))
            for g in metrics(
                con,
                dt.datetime(2026, 11, 1),
                dt.datetime(2026, 12, 1),
                ["severity", "cluster"],
            )
        ]
        return tables
    finally:
        model.close()


def same_rows(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    """Equal rows, floats within 1e-9 relative (the capacity rollup's sums vary in the last
    bits between two rebuilds of one ledger: DuckDB's parallel aggregation order)."""
    if len(a) != len(b):
        return False
    for ra, rb in zip(a, b, strict=True):
        if len(ra) != len(rb):
            return False
        for x, y in zip(ra, rb, strict=True):
            if isinstance(x, float) and isinstance(y, float):
                if not math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12):
                    return False
            elif x != y:
                return False
    return True


# -- the digest ------------------------------------------------------------------------------


def copy_rows(src: Engine, dst: Engine) -> None:
    """The events and series rows of one ledger, verbatim (recorded_at included), into another."""
    with src.connect() as s, dst.begin() as d:
        rows = [dict(r._mapping) for r in s.execute(select(series).order_by(series.c.series_id))]
        if rows:
            d.execute(insert(series), rows)
        cols = [events.c[c] for c in EVENT_COLUMNS]
        rows = [dict(r._mapping) for r in s.execute(select(*cols).order_by(events.c.position))]
        d.execute(insert(events), rows)


def test_the_digest_is_the_same_on_sqlite_and_postgresql(
    tmp_path: Path, pg_server: PostgresServer, ledgers: list[Ledger]
) -> None:
    lite = open_ledger(ledgers, home_url(new_home(tmp_path, "lite")))
    append(lite, seed_events())
    append(lite, incident_events())
    name = pg_server.migrated_database()
    try:
        pg = make_engine(pg_server.url(name))
        try:
            copy_rows(lite.engine, pg)
            whole, on_pg = ledger_manifest(lite.engine), ledger_manifest(pg)
            assert on_pg == whole
            assert (whole.head, whole.event_count) == (10, 10)
            assert whole.series_head == whole.series_count == 2
            # A prefix: the same bounds give the same digest, and another digest than the whole.
            prefix = ledger_manifest(lite.engine, 3, 2)
            assert ledger_manifest(pg, 3, 2) == prefix
            assert prefix.head == 3 and prefix.digest != whole.digest
            # recorded_at is part of what the digest covers.
            with pg.begin() as conn:
                conn.execute(
                    text("UPDATE events SET recorded_at = recorded_at + 1 WHERE position = 5")
                )
            assert ledger_manifest(pg).digest != whole.digest
            assert ledger_manifest(pg, 3, 2) == prefix
        finally:
            pg.dispose()
    finally:
        pg_server.drop_database(name)


# -- SQLite: backup and restore --------------------------------------------------------------


@pytest.mark.slow
def test_backup_while_a_writer_appends_copies_a_consistent_prefix(
    tmp_path: Path, ledgers: list[Ledger]
) -> None:
    home = new_home(tmp_path, "src")
    live = open_ledger(ledgers, home_url(home))
    demo.load(live, DEMO_SINCE, DEMO_NOW)
    start = live.head()
    writer = Writer(open_ledger(ledgers, home_url(home)))
    writer.start()
    try:
        writer.wait_for(start)
        backup_dir = tmp_path / "backups" / "b1"
        r = run_cli(["backup", str(backup_dir)], home)
        assert r.returncode == 0, r.stderr
        doc = orjson.loads((backup_dir / "manifest.json").read_bytes())
        taken = manifest_of(doc)
        assert taken.head > start  # the writer's events up to the snapshot are in it
        writer.wait_for(taken.head)  # ... and it went on appending after it
    finally:
        writer.finish()
    assert writer.batches > 1
    assert only_files(backup_dir) == {"ledger.db", "manifest.json"}
    assert only_files(backup_dir.parent) == {"b1"}
    assert backup_dir.stat().st_mode & 0o777 == 0o700
    assert taken.event_count == taken.head and taken.series_count == taken.series_head
    assert doc["kind"] == "backup" and doc["backend"] == "sqlite"
    assert doc["alembic_revision"] == head_revision() and doc["source"] == home_url(home)
    assert (taken.head - start) % 21 == 0  # whole batches: a transactionally consistent copy
    assert f"events 1..{taken.head}" in r.stdout

    # The live ledger, grown since, still matches the backup up to its head ...
    assert live.head() > taken.head
    assert ledger_manifest(live.engine, taken.head, taken.series_head) == taken
    verify, restored_run = run_parallel(
        (["verify", "--manifest", str(backup_dir)], home),
        (["restore", str(backup_dir)], new_home(tmp_path, "dst", migrated=False)),
    )
    assert verify.returncode == 0, verify.stderr
    assert "matches" in verify.stderr
    # ... and the restored copy reads back every event up to it identically.
    assert restored_run.returncode == 0, restored_run.stderr
    restored = open_ledger(ledgers, home_url(tmp_path / "dst"))
    assert restored.head() == taken.head
    assert cloudevents(restored) == cloudevents(live, taken.head)
    assert ledger_manifest(restored.engine) == taken


@pytest.mark.slow
def test_restore_into_an_empty_home_rebuilds_the_same_projections(
    tmp_path: Path, ledgers: list[Ledger]
) -> None:
    src_home = new_home(tmp_path, "src")
    src = open_ledger(ledgers, home_url(src_home))
    demo.load(src, DEMO_SINCE, DEMO_NOW)
    append(src, incident_events())
    backup_dir = tmp_path / "b"
    r = run_cli(["backup", str(backup_dir)], src_home)
    assert r.returncode == 0, r.stderr
    # A new home that only ran `db upgrade` (no events) and has an old read model lying about.
    dst_home = new_home(tmp_path, "dst")
    ReadModel(dst_home / "analytics.duckdb").close()
    r = run_cli(["restore", str(backup_dir)], dst_home)
    assert r.returncode == 0, r.stderr
    assert "verified" in r.stdout and "read model was reset" in r.stderr
    assert not (dst_home / "analytics.duckdb").exists()
    assert not list(dst_home.glob(".ledger.db.restore-*"))
    dst = open_ledger(ledgers, home_url(dst_home))
    assert dst.head() == src.head()
    assert ledger_manifest(dst.engine) == ledger_manifest(src.engine)

    before = read_model_tables(src, tmp_path / "src.duckdb")
    after = read_model_tables(dst, tmp_path / "dst.duckdb")
    assert {"incidents", "cap_rollup", "budgets"} <= before.keys(), sorted(before)
    assert before["incidents"] and before["incident metrics"]
    assert after.keys() == before.keys()
    for name in before:
        assert same_rows(after[name], before[name]), name


@pytest.mark.slow
def test_restore_refuses_a_ledger_with_events_unless_forced_and_a_running_server(
    tmp_path: Path, ledgers: list[Ledger]
) -> None:
    src_home = new_home(tmp_path, "src")
    src = open_ledger(ledgers, home_url(src_home))
    append(src, seed_events())
    append(src, incident_events())
    backup_dir = tmp_path / "b"
    backup_sqlite(home_url(src_home), backup_dir)  # in-process: the CLI's is tested above
    dst_home = new_home(tmp_path, "dst")
    dst = open_ledger(ledgers, home_url(dst_home))
    append(dst, [pod_status("other-1"), pod_status("other-2", restarts=9)])
    own = cloudevents(dst)

    # A server announced with a live pid (this test's), then one holding the read model.
    server_file = dst_home / "analytics.server.json"
    server_file.write_bytes(orjson.dumps({"url": "http://127.0.0.1:1", "pid": os.getpid()}))
    announced = run_cli(["restore", str(backup_dir), "--force"], dst_home)
    server_file.unlink()
    model = ReadModel(dst_home / "analytics.duckdb")
    try:
        locked = run_cli(["restore", str(backup_dir), "--force"], dst_home)
    finally:
        model.close()
    assert announced.returncode == 3, announced.stderr
    assert f"a server (pid {os.getpid()}" in announced.stderr
    assert locked.returncode == 3, locked.stderr
    assert "open in another process" in locked.stderr and "stop it first" in locked.stderr
    model_file = dst_home / "analytics.duckdb"
    assert model_file.exists()  # nothing was changed
    assert cloudevents(dst) == own

    unforced = run_cli(["restore", str(backup_dir)], dst_home)
    assert unforced.returncode == 3, unforced.stderr
    assert "holds events (head 2)" in unforced.stderr and "--force" in unforced.stderr
    assert cloudevents(dst) == own
    assert model_file.exists()

    forced = run_cli(["restore", str(backup_dir), "--force"], dst_home)
    assert forced.returncode == 0, forced.stderr
    # The open ledger (its pooled connection included) sees the restored events.
    assert cloudevents(dst) == cloudevents(src)
    assert not model_file.exists()
    more = dst.append(validate_events([pod_status("after-restore")]))
    assert more.first_position == src.head() + 1


@pytest.mark.slow
def test_a_backup_killed_midway_leaves_nothing_restore_accepts(
    tmp_path: Path, ledgers: list[Ledger]
) -> None:
    home = new_home(tmp_path, "src")
    led = open_ledger(ledgers, home_url(home))
    demo.load(led, DEMO_SINCE, DEMO_NOW)
    led.engine.dispose()
    backups = tmp_path / "backups"
    backups.mkdir()
    target = backups / "nightly"
    # Deterministic: an exclusive lock on the ledger holds the backup inside its copy step
    # (after it made its temporary directory), where it is killed.
    lock = sqlite3.connect(home / "ledger.db", isolation_level=None)
    lock.execute("PRAGMA locking_mode=EXCLUSIVE")
    lock.execute("BEGIN EXCLUSIVE")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSLEDGER_")}
    env["OPSLEDGER_HOME"] = str(home)
    proc = subprocess.Popen(
        [str(OPSLEDGER), "backup", str(target)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not list(backups.glob(".nightly.*.partial")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the backup never started"
            time.sleep(0.01)
        time.sleep(0.3)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        lock.close()
    assert proc.returncode == -signal.SIGKILL
    (partial,) = backups.glob(".nightly.*.partial")
    assert not target.exists()
    assert "manifest.json" not in only_files(partial)

    dst_home = new_home(tmp_path, "dst", migrated=False)
    missing, incomplete = run_parallel(
        (["restore", str(target)], dst_home), (["restore", str(partial)], dst_home)
    )
    assert missing.returncode == 2, missing.stderr
    assert "no backup at" in missing.stderr and "interrupted backup" in missing.stderr
    assert incomplete.returncode == 2, incomplete.stderr
    assert "incomplete backup" in incomplete.stderr and "no manifest.json" in incomplete.stderr
    assert only_files(dst_home) == set()  # nothing was written

    again = run_cli(["backup", str(target)], home)
    assert again.returncode == 0, again.stderr
    assert partial.name in again.stderr and "interrupted backup" in again.stderr
    restored = run_cli(["restore", str(target)], dst_home)
    assert restored.returncode == 0, restored.stderr
    dst = open_ledger(ledgers, home_url(dst_home))
    assert ledger_manifest(dst.engine) == ledger_manifest(
        open_ledger(ledgers, home_url(home)).engine
    )


@pytest.mark.slow
def test_restore_refuses_a_damaged_backup(tmp_path: Path, ledgers: list[Ledger]) -> None:
    home = new_home(tmp_path, "src")
    led = open_ledger(ledgers, home_url(home))
    append(led, seed_events())
    marker = "disk of payments-db filled up in 40 minutes"
    data = {"incident_id": "INC-T", "title": marker, "severity": "P2"}
    append(led, [cloudevent("opsledger.incident.opened", data, id="tamper-1")])
    backup_dir = tmp_path / "b"
    backup_sqlite(home_url(home), backup_dir)
    tampered = tmp_path / "tampered"
    edited = tmp_path / "edited"
    newer = tmp_path / "newer"
    for copy in (tampered, edited, newer):
        copy.mkdir()
        for name in ("ledger.db", "manifest.json"):
            (copy / name).write_bytes((backup_dir / name).read_bytes())
    # One byte of one event's data, in the copied file.
    blob = (tampered / "ledger.db").read_bytes()
    assert blob.count(marker.encode()) == 1
    at = blob.index(marker.encode())
    (tampered / "ledger.db").write_bytes(blob[:at] + b"D" + blob[at + 1 :])
    # A manifest claiming another head.
    doc = orjson.loads((edited / "manifest.json").read_bytes())
    doc["head"] -= 1
    (edited / "manifest.json").write_bytes(orjson.dumps(doc))
    # A backup of a newer release's schema.
    doc = orjson.loads((newer / "manifest.json").read_bytes())
    doc["alembic_revision"] = "9999"
    (newer / "manifest.json").write_bytes(orjson.dumps(doc))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "manifest.json").write_bytes(b'{"format": "opsledger-manif')

    # Two homes: a restore holds its home's read model, so a second one there would be refused.
    home_a, home_b = new_home(tmp_path, "dst-a"), new_home(tmp_path, "dst-b")
    bad, claims, junk, future = run_parallel(
        (["restore", str(tampered)], home_a),
        (["restore", str(edited)], home_b),
        (["restore", str(tmp_path / "junk")], home_a),
        (["restore", str(newer)], home_b),
    )
    assert bad.returncode == 1, bad.stderr
    assert "damaged" in bad.stderr and "digest mismatch" in bad.stderr
    assert claims.returncode == 1, claims.stderr
    assert "digest mismatch" in claims.stderr
    assert junk.returncode == 2, junk.stderr
    assert "not JSON" in junk.stderr
    assert future.returncode == 2, future.stderr
    assert "revision 9999" in future.stderr and "newer release" in future.stderr
    for dst_home in (home_a, home_b):
        assert only_files(dst_home) == {"ledger.db"}  # no read model, no staged copy left
        assert open_ledger(ledgers, home_url(dst_home)).head() == 0


@pytest.mark.slow
def test_backup_and_restore_refuse_postgresql(tmp_path: Path, pg_server: PostgresServer) -> None:
    name = pg_server.migrated_database()
    try:
        url = pg_server.url(name)
        backup_run, restore_run = run_parallel(
            (["backup", str(tmp_path / "b")], tmp_path, url),
            (["restore", str(tmp_path / "b")], tmp_path, url),
        )
    finally:
        pg_server.drop_database(name)
    assert backup_run.returncode == 2 and "pg_dump" in backup_run.stderr
    assert "opsledger verify --json" in backup_run.stderr
    assert restore_run.returncode == 2 and "pg_restore" in restore_run.stderr
    assert not (tmp_path / "b").exists()


# -- verify ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_verify_detects_a_changed_event(
    backend_url: str, tmp_path: Path, ledgers: list[Ledger]
) -> None:
    led = open_ledger(ledgers, backend_url)
    append(led, seed_events())
    append(led, incident_events())
    r = run_cli(["verify", "--json"], tmp_path, backend_url)
    assert r.returncode == 0, r.stderr
    doc = orjson.loads(r.stdout)
    assert doc["kind"] == "ledger" and doc["head"] == 10 and doc["event_count"] == 10
    assert manifest_of(doc) == ledger_manifest(led.engine)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(r.stdout)
    append(led, [pod_status("later-1"), metric_samples("later-prom", time="2026-11-26T00:00:00Z")])

    grown = run_cli(["verify", "--manifest", str(manifest)], tmp_path, backend_url)
    assert grown.returncode == 0, grown.stderr
    assert "matches" in grown.stderr and "events 1..10" in grown.stderr
    with led.engine.begin() as conn:
        conn.execute(
            events.update()
            .where(events.c.position == 4)
            .values(data=orjson.dumps({"incident_id": "INC-SEED", "by": "mallory"}))
        )
    changed, plain = run_parallel(
        (["verify", "--manifest", str(manifest), "--json"], tmp_path, backend_url),
        (["verify"], tmp_path, backend_url),
    )
    assert changed.returncode == 1, changed.stderr
    assert "differs" in changed.stderr and "an event or a series was changed" in changed.stderr
    assert orjson.loads(changed.stdout)["matches_manifest"] is False
    assert plain.returncode == 0, plain.stderr  # nothing to compare with: contiguous is all
    assert re.search(r"^head\s+12$", plain.stdout, re.MULTILINE), plain.stdout


@pytest.mark.slow
def test_verify_reports_gaps_and_unreadable_manifests(
    tmp_path: Path, ledgers: list[Ledger]
) -> None:
    home = new_home(tmp_path, "h")
    led = open_ledger(ledgers, home_url(home))
    append(led, seed_events())
    with led.engine.begin() as conn:
        conn.execute(events.delete().where(events.c.position == 2))
    (tmp_path / "m.json").write_bytes(orjson.dumps({"format": "something-else"}))
    gap, unreadable = run_parallel(
        (["verify"], home), (["verify", "--manifest", str(tmp_path / "m.json")], home)
    )
    assert gap.returncode == 1, gap.stderr
    assert "not contiguous: 2 events up to head 3" in gap.stderr
    assert unreadable.returncode == 2, unreadable.stderr
    assert "not an opsledger manifest" in unreadable.stderr


# -- PostgreSQL: pg_dump and pg_restore with verify ------------------------------------------


def _pg_args(pg_server: PostgresServer, database: str) -> list[str]:
    base = pg_server.base_url
    return [
        "-h",
        str(base.host),
        "-p",
        str(base.port or 5432),
        "-U",
        str(base.username),
        "-d",
        database,
    ]


@pytest.mark.slow
def test_postgresql_pg_dump_and_pg_restore_checked_by_verify(
    tmp_path: Path, pg_server: PostgresServer, ledgers: list[Ledger]
) -> None:
    source = pg_server.migrated_database()
    copy = pg_server.create_database()
    try:
        led = open_ledger(ledgers, pg_server.url(source))
        append(led, seed_events())
        append(led, incident_events())
        r = run_cli(["verify", "--json"], tmp_path, pg_server.url(source))
        assert r.returncode == 0, r.stderr
        (tmp_path / "manifest.json").write_text(r.stdout)
        assert orjson.loads(r.stdout)["backend"] == "postgresql"
        # Appended between the manifest and the dump, as in production.
        append(led, [pod_status("late-1"), pod_status("late-2")])
        dump = tmp_path / "opsledger.dump"
        env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
        if pg_server.base_url.password:  # an external server (OPSLEDGER_TEST_PG_URL)
            env["PGPASSWORD"] = str(pg_server.base_url.password)
        subprocess.run(
            [str(PG_BIN / "pg_dump"), "-Fc", *_pg_args(pg_server, source), "-f", str(dump)],
            check=True,
            capture_output=True,
            env=env,
            timeout=60,
        )
        subprocess.run(
            [
                str(PG_BIN / "pg_restore"),
                *_pg_args(pg_server, copy),
                "--no-owner",
                "--exit-on-error",
                str(dump),
            ],
            check=True,
            capture_output=True,
            env=env,
            timeout=60,
        )
        checked = run_cli(
            ["verify", "--manifest", str(tmp_path / "manifest.json")], tmp_path, pg_server.url(copy)
        )
        assert checked.returncode == 0, checked.stderr
        assert "matches" in checked.stderr and "events 1..10" in checked.stderr
        restored = open_ledger(ledgers, pg_server.url(copy))
        assert restored.head() == 12
        assert cloudevents(restored) == cloudevents(led)
        assert ledger_manifest(restored.engine) == ledger_manifest(led.engine)
        # A change to the restored copy is caught.
        with restored.engine.begin() as conn:
            conn.execute(text("UPDATE series SET labels = labels || ' ' WHERE series_id = 1"))
        changed = run_cli(
            ["verify", "--manifest", str(tmp_path / "manifest.json")], tmp_path, pg_server.url(copy)
        )
        assert changed.returncode == 1, changed.stderr
    finally:
        for led in ledgers:
            led.engine.dispose()
        ledgers.clear()
        pg_server.drop_database(source)
        pg_server.drop_database(copy)
