"""A full disk: writes answer 507 and record nothing; the server recovers when space returns.

The ledger and the read model live on a small tmpfs mounted for the test (CI runs as root;
outside CI, without the right to mount, these tests are skipped), filled with a filler file.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
import psycopg
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from psycopg import sql
from sqlalchemy.engine import make_url
from support.disk import filled
from support.payloads import WEBHOOK_FIXTURES, metric_samples, sample
from support.pg import PostgresServer
from support.servers import serve_in_thread

from api.app import create_app
from api.disk_full import DETAIL, RETRY_AFTER_SECONDS, is_disk_full
from store.engine import make_engine
from store.keys import create_key
from store.migrate import upgrade
from store.schema import events, series
from store.settings import Settings
from store.timefmt import parse_rfc3339_us

BATCH = "application/cloudevents-batch+json"
PAGERDUTY_TRIGGERED = WEBHOOK_FIXTURES / "pagerduty-v3" / "triggered_v3.json"


# -- recognising a full disk ------------------------------------------------------------------


def _sqlite_full(tmp_path: Path) -> sa.exc.OperationalError:
    """A real SQLITE_FULL, from a database capped at its current size, through SQLAlchemy."""
    engine = make_engine(f"sqlite:///{tmp_path / 'capped.db'}")
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x BLOB)")
        with engine.connect() as conn:
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
            conn.exec_driver_sql(f"PRAGMA max_page_count = {pages}")
            conn.commit()
            with pytest.raises(sa.exc.OperationalError) as raised, conn.begin():
                conn.exec_driver_sql("INSERT INTO t VALUES (zeroblob(100000))")
        return raised.value
    finally:
        engine.dispose()


def _wrapped(orig: BaseException) -> sa.exc.OperationalError:
    return sa.exc.OperationalError("INSERT INTO events ...", {}, orig)


def _chained(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException:
            raise outer  # noqa: B904 - a failing rollback hides the failed commit like this
    except BaseException as exc:
        return exc


def test_out_of_space_errors_are_recognised(tmp_path: Path) -> None:
    sqlite_full = _sqlite_full(tmp_path)
    assert "database or disk is full" in str(sqlite_full)
    enospc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    duckdb_full = duckdb.TransactionException(
        'TransactionContext Error: Failed to commit: Could not write file "/x/analytics.duckdb'
        f'.wal": {os.strerror(errno.ENOSPC)}'
    )
    full = [
        sqlite_full,
        sqlite_full.orig,
        enospc,
        OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)),
        _wrapped(psycopg.errors.DiskFull('could not extend file "base/16384/16385"')),
        duckdb_full,
        _wrapped(duckdb.IOException(f'IO Error: Could not write file "x": {os.strerror(28)}')),
        # DuckDB's rollback after the failed commit raises its own error on top.
        _chained(
            duckdb.TransactionException("cannot rollback - no transaction is active"), duckdb_full
        ),
        _chained(RuntimeError("while appending"), enospc),
    ]
    for exc in full:
        assert is_disk_full(exc), repr(exc)
    not_full = [
        _wrapped(sqlite3.OperationalError("database is locked")),
        _wrapped(psycopg.errors.UniqueViolation("duplicate key value")),
        _wrapped(psycopg.errors.OperationalError("connection refused")),
        OSError(errno.EACCES, os.strerror(errno.EACCES)),
        duckdb.IOException('IO Error: Could not set lock on file "x": Conflicting lock'),
        # A fatal DuckDB error invalidates the database: it needs reopening, not just space.
        duckdb.FatalException(
            "FATAL Error: Failed to create checkpoint because of error: Could not write file "
            f'"x": {os.strerror(errno.ENOSPC)}'
        ),
        duckdb.FatalException(
            "FATAL Error: Failed: database has been invalidated because of a previous fatal "
            f'error. Original error: "Could not write file "x": {os.strerror(errno.ENOSPC)}"'
        ),
        ValueError("No space left on device"),
    ]
    for exc in not_full:
        assert not is_disk_full(exc), repr(exc)


def test_other_database_errors_stay_500(tmp_path: Path) -> None:
    # The 507 handlers see every database and OS error: the others go on to the catch-all.
    url = f"sqlite:///{tmp_path / 'unmigrated.db'}"  # no tables: "no such table: api_keys"
    app = create_app(Settings(database_url=url, home=tmp_path), projections=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/v1/events", json=[], headers={"Authorization": "Bearer olk_x"})
    assert r.status_code == 500
    assert r.json() == {"detail": "internal error; see the server log", "errors": []}
    assert "Retry-After" not in r.headers


# -- every write route ------------------------------------------------------------------------


def _settings(disk: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{disk / 'ledger.db'}",
        home=disk,
        read_model_path=disk / "analytics.duckdb",
        projection_interval_seconds=3600,
        collectors_file=None,
    )


def _tokens(url: str) -> dict[str, str]:
    upgrade(url)
    engine = make_engine(url)
    try:
        return {s: create_key(engine, f"disk-{s}", s)[1] for s in ("read", "write", "admin")}
    finally:
        engine.dispose()


def _counts(url: str) -> tuple[int, int, int]:
    """(rows of events, highest position, rows of series), read on a connection of its own."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return (
                conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one(),
                conn.execute(
                    sa.select(sa.func.coalesce(sa.func.max(events.c.position), 0))
                ).scalar_one(),
                conn.execute(sa.select(sa.func.count()).select_from(series)).scalar_one(),
            )
    finally:
        engine.dispose()


def _writes() -> list[tuple[str, str, dict[str, Any]]]:
    """One request for each route that writes to the ledger, each recording something new."""
    n = 1
    triggered = orjson.loads(PAGERDUTY_TRIGGERED.read_bytes())
    triggered["event"]["data"]["id"] = f"Q0DISKFULL{n}"
    triggered["event"]["id"] = f"01DISKFULL{n}"
    alert = {
        "status": "firing",
        "labels": {"alertname": "DiskFull", "cluster": "prod", "pod": f"p{n}"},
        "annotations": {},
        "startsAt": "2026-10-14T03:12:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": f"{n:016x}",
    }
    labels = {"node": f"ip-10-0-0-{n}.ec2.internal", "nodepool": "general", "zone": "a"}
    return [
        (
            "POST",
            "/v1/events",
            {"json": [metric_samples(f"route-{n}", samples=[sample("x_bytes", labels, n, 1.0)])]},
        ),
        (
            "POST",
            "/v1/incidents",
            {
                "json": {
                    "title": "disk",
                    "severity": "P2",
                    "cluster": "prod",
                    "incident_id": f"D{n}",
                }
            },
        ),
        ("POST", "/v1/incidents/INC-DISK/acknowledge", {"json": {"by": f"op{n}"}}),
        ("PATCH", "/v1/incidents/INC-DISK", {"json": {"note": f"note {n}"}}),
        (
            "POST",
            "/v1/webhooks/alertmanager",
            {"json": {"version": "4", "receiver": "r", "status": "firing", "alerts": [alert]}},
        ),
        ("POST", "/v1/webhooks/pagerduty", {"json": triggered}),
        (
            "PUT",
            "/v1/sla/policy",
            {
                "json": {"timezone": "UTC"},
                "params": {"effective_from": f"2026-01-{n:02d}T00:00:00Z"},
            },
        ),
    ]


def test_every_write_route_answers_507_and_writes_nothing(disk: Path) -> None:
    settings = _settings(disk)
    url = str(settings.database_url)
    tokens = _tokens(url)
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    app = create_app(settings, projections=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        opened = client.post(
            "/v1/incidents",
            json={"title": "disk", "severity": "P2", "cluster": "prod", "incident_id": "INC-DISK"},
            headers=admin,
        )
        assert opened.status_code == 201, opened.text
        before = _counts(url)
        # Fold the WAL into the database and empty it, so the next write must grow a file.
        raw = app.state.ledger.engine.raw_connection()
        try:
            busy, _, _ = raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            assert busy == 0
        finally:
            raw.close()
        with filled(disk):
            for method, path, kw in _writes():
                r = client.request(method, path, headers=admin, **kw)
                assert r.status_code == 507, (method, path, r.status_code, r.text)
                assert r.json() == {"detail": DETAIL, "errors": []}
                assert r.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
            # Reads go on while the disk is full.
            assert client.get("/v1/events", headers=admin).status_code == 200
            assert _counts(url) == before
        # Space is back: the same requests succeed, with no restart.
        for method, path, kw in _writes():
            r = client.request(method, path, headers=admin, **kw)
            assert r.status_code in (200, 201), (method, path, r.status_code, r.text)
        rows, head, _ = _counts(url)
        assert rows == head > before[0]


# -- the server on a full disk ----------------------------------------------------------------


def _batch(tag: str, events_n: int, samples_n: int, rng: random.Random) -> list[dict[str, Any]]:
    """Metric events whose values do not compress away, each event with series of its own."""
    out = []
    for e in range(events_n):
        labels = {"node": f"ip-{tag}-{e}.ec2.internal", "nodepool": "general", "zone": "a"}
        samples = [
            sample("node_cpu_usage_cores", labels, 1_790_000_000 + i, rng.random() * 64)
            for i in range(samples_n)
        ]
        out.append(metric_samples(f"{tag}-{e}", samples=samples, time="2026-10-14T04:00:00Z"))
    return out


def _wide_batch(tag: str, series_n: int) -> list[dict[str, Any]]:
    """One event with a sample for each of `series_n` new series with long labels."""
    pad = "x" * 900
    samples = [
        sample("opsledger_test_bytes", {"volume": f"{tag}-{i}", "note": pad}, 1_790_000_000, i)
        for i in range(series_n)
    ]
    return [metric_samples(f"{tag}-0", samples=samples, time="2026-10-14T04:00:00Z")]


@contextmanager
def served(settings: Settings) -> Iterator[tuple[str, Any]]:
    """The real app under uvicorn on a free loopback port, in a thread."""
    app = create_app(settings)
    with serve_in_thread(app) as url:
        yield url, app


def _ledger_ids(client: httpx.Client, url: str, read: dict[str, str]) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    after = 0
    while True:
        page = client.get(f"{url}/v1/events", params={"after": after, "limit": 1000}, headers=read)
        assert page.status_code == 200, page.text
        body = page.json()
        out += [(e["position"], e["id"]) for e in body["events"]]
        if not body["events"]:
            return out
        after = body["next_after"]


def _samples(event: dict[str, Any]) -> list[tuple[str, int, float]]:
    """An event's samples in a comparable form: (labels, time µs, value), sorted."""
    return sorted(
        (
            orjson.dumps(s["labels"], option=orjson.OPT_SORT_KEYS).decode(),
            s["ts"] * 1_000_000 if isinstance(s["ts"], int) else parse_rfc3339_us(s["ts"]),
            s["value"],
        )
        for s in event["data"]["samples"]
    )


def _lag(client: httpx.Client, url: str, read: dict[str, str]) -> list[int]:
    r = client.get(f"{url}/v1/projections", headers=read)
    assert r.status_code == 200, r.text
    return [p["lag"] for p in r.json()["projections"]]


@pytest.mark.slow
def test_a_full_disk_refuses_whole_batches_and_the_server_recovers(disk: Path) -> None:
    settings = _settings(disk)
    url = str(settings.database_url)
    tokens = _tokens(url)
    write = {"Authorization": f"Bearer {tokens['write']}", "Content-Type": BATCH}
    read = {"Authorization": f"Bearer {tokens['read']}"}
    rng = random.Random(7)
    with served(settings) as (base, app), httpx.Client(timeout=60) as client:

        def post(batch: list[dict[str, Any]]) -> httpx.Response:
            return client.post(f"{base}/v1/events", content=orjson.dumps(batch), headers=write)

        # Which statement each database error came from ("" for COMMIT).
        failed: list[str] = []
        sa.event.listen(
            app.state.ledger.engine,
            "handle_error",
            lambda ctx: failed.append((ctx.statement or "").strip()),
        )
        warm = _batch("warm", 2, 50, rng)
        r = post(warm)
        assert r.status_code == 200, r.text
        accepted = {e["id"] for e in warm}

        with filled(disk, leave=1 << 20):
            refused: list[list[dict[str, Any]]] = []
            for n in range(60):
                batch = _batch(f"b{n}", 8, 2000, rng)
                r = post(batch)
                if r.status_code == 200:
                    assert r.json()["accepted"] == len(batch)
                    accepted |= {e["id"] for e in batch}
                    continue
                # Refused, never a 500: the clear 507, and the batch left no trace.
                assert r.status_code == 507, r.text
                assert r.json() == {"detail": DETAIL, "errors": []}
                assert r.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
                refused.append(batch)
                break
            assert refused, "the disk never filled up"
            # A batch interning more series than SQLite's page cache holds (2 MiB) spills to
            # the WAL while inserting them, and fails there rather than at commit.
            wide = _wide_batch("wide", 2500)
            r = post(wide)
            assert r.status_code == 507, r.text
            assert failed[-1].startswith("INSERT INTO"), failed
            refused.append(wide)

            recorded = _ledger_ids(client, base, read)
            assert {i for _, i in recorded} == accepted
            assert [p for p, _ in recorded] == list(range(1, len(recorded) + 1))
            rows, head, series_rows = _counts(url)
            assert rows == head == len(accepted)
            # The ledger's series cache remembers only series that were committed.
            cached = dict(app.state.ledger._series_ids)
            assert len(cached) <= series_rows
            engine = make_engine(url)
            try:
                with engine.connect() as conn:
                    stored = {
                        (r.name, r.labels): r.series_id for r in conn.execute(sa.select(series))
                    }
            finally:
                engine.dispose()
            assert cached.items() <= stored.items()

        # Space is back: no restart, the refused batches go in whole, positions stay contiguous.
        for batch in refused:
            r = post(batch)
            assert r.status_code == 200, r.text
            assert r.json()["accepted"] == len(batch) and r.json()["duplicates"] == 0
            accepted |= {e["id"] for e in batch}
        recorded = _ledger_ids(client, base, read)
        assert {i for _, i in recorded} == accepted
        assert [p for p, _ in recorded] == list(range(1, len(recorded) + 1))
        # What was refused reads back as sent (its series were interned anew, not reused).
        last = client.get(
            f"{base}/v1/events", params={"after": recorded[-1][0] - 1}, headers=read
        ).json()["events"][0]
        [sent] = refused[-1]
        assert last["id"] == sent["id"]
        assert _samples(last) == _samples(sent)

        deadline = time.monotonic() + 20
        while any(_lag(client, base, read)):
            assert time.monotonic() < deadline, f"projections stuck: {_lag(client, base, read)}"
            time.sleep(0.2)


# -- PostgreSQL -------------------------------------------------------------------------------


def test_postgres_out_of_space_answers_507(disk: Path, pg_server: PostgresServer) -> None:
    # A database whose tablespace is on the small disk: inserts that extend a table fail with
    # disk_full (53100) while the server itself (its WAL) carries on.
    if pg_server._owned is None:
        pytest.skip("needs the PostgreSQL server the tests start, to put a tablespace on a tmpfs")
    if os.geteuid() == 0:
        shutil.chown(disk, "postgres", "postgres")
    admin_url = make_url(pg_server.url("postgres")).set(drivername="postgresql")
    name = f"opsledger_disk_{os.getpid()}"
    with psycopg.connect(admin_url.render_as_string(hide_password=False), autocommit=True) as pg:
        pg.execute(
            sql.SQL("CREATE TABLESPACE {} LOCATION {}").format(
                sql.Identifier(name), sql.Literal(str(disk))
            )
        )
        try:
            pg.execute(
                sql.SQL("CREATE DATABASE {} TABLESPACE {}").format(
                    sql.Identifier(name), sql.Identifier(name)
                )
            )
            try:
                _postgres_disk_full(pg_server.url(name), disk)
            finally:
                pg.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        finally:
            pg.execute(sql.SQL("DROP TABLESPACE {}").format(sql.Identifier(name)))


def _postgres_disk_full(url: str, disk: Path) -> None:
    tokens = _tokens(url)
    write = {"Authorization": f"Bearer {tokens['write']}", "Content-Type": BATCH}
    settings = Settings(database_url=url, home=disk / "home", collectors_file=None)
    rng = random.Random(3)
    app = create_app(settings, projections=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post(
            "/v1/events", content=orjson.dumps(_batch("pg", 2, 100, rng)), headers=write
        )
        assert r.status_code == 200, r.text
        before = _counts(url)
        with filled(disk):
            for n in range(10):
                r = client.post(
                    "/v1/events",
                    content=orjson.dumps(_batch(f"pg{n}", 4, 2000, rng)),
                    headers=write,
                )
                if r.status_code != 200:
                    break
                before = _counts(url)
            assert r.status_code == 507, r.text
            assert r.json() == {"detail": DETAIL, "errors": []}
            assert _counts(url) == before
        batch = _batch("pg-after", 4, 2000, rng)
        r = client.post("/v1/events", content=orjson.dumps(batch), headers=write)
        assert r.status_code == 200, r.text
        rows, head, _ = _counts(url)
        assert rows == head == before[0] + len(batch)
