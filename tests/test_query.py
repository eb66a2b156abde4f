"""Read-only SQL: `POST /v1/query` and `opsledger query`, and the walls around them."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from support.beds import Bed, bed_settings
from support.cli import OPSLEDGER, run_cli
from support.payloads import cost_daily
from support.query import ask, assert_alive, demo_bed, demo_events, opened
from support.servers import announce_file, serve_in_thread

from analytics.readmodel.model import ReadModel
from analytics.readmodel.registry import default_projections
from analytics.readmodel.runner import Runner
from analytics.sql import pool as query_pool
from analytics.sql.guard import QueryInvalid, QueryRefused, check_query, first_word
from analytics.sql.pool import QueryError, WorkerPool
from analytics.sql.sandbox import QueryLimits, open_locked
from analytics.sql.service import STALE_AFTER_S, Snapshots
from store.contract import validate_events
from store.ledger import Ledger
from store.migrate import upgrade


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    with demo_bed(tmp_path_factory.mktemp("query")) as b:
        yield b


# -- answers ------------------------------------------------------------------------------------


def test_incidents_of_the_demo_events(bed: Bed) -> None:
    r = ask(
        bed,
        "SELECT incident_id, severity, status, namespace, opened_at, "
        "resolved_at - opened_at AS time_to_resolve, mttr_s FROM incidents ORDER BY incident_id",
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["columns"] == [
        {"name": "incident_id", "type": "VARCHAR"},
        {"name": "severity", "type": "VARCHAR"},
        {"name": "status", "type": "VARCHAR"},
        {"name": "namespace", "type": "VARCHAR"},
        {"name": "opened_at", "type": "TIMESTAMP"},
        {"name": "time_to_resolve", "type": "INTERVAL"},
        {"name": "mttr_s", "type": "DOUBLE"},
    ]
    assert body["rows"] == [
        ["INC-1", "P1", "resolved", "payments", "2026-10-14T03:12:00Z", 7200.0, 7200.0],
        ["INC-2", "P2", "acknowledged", "search", "2026-10-15T10:00:00Z", None, None],
        ["INC-3", "P0", "open", "payments", "2026-10-16T22:00:00Z", None, None],
    ]
    assert body["row_count"] == 3 and body["truncated"] is False
    assert isinstance(body["elapsed_ms"], float) and body["elapsed_ms"] >= 0
    assert body["as_of"].endswith("Z")


def test_a_post_mortem_question_across_projections(bed: Bed) -> None:
    # What happened on the cluster in the 15 minutes before INC-1 opened?
    sql = """
        WITH inc AS (SELECT cluster, opened_at FROM incidents WHERE incident_id = 'INC-1')
        SELECT 'node' AS what, n.node AS name, n.reason, n.ts FROM node_status n, inc
            WHERE NOT n.ready AND n.ts BETWEEN inc.opened_at - INTERVAL 15 MINUTE AND inc.opened_at
        UNION ALL
        SELECT 'pod', p.pod, 'restarts=' || p.restarts, p.ts FROM pod_status p, inc
            WHERE p.ts BETWEEN inc.opened_at - INTERVAL 15 MINUTE AND inc.opened_at
        UNION ALL
        SELECT 'event', e.name, e.reason, e.ts FROM k8s_events e, inc
            WHERE e.type = 'Warning'
              AND e.ts BETWEEN inc.opened_at - INTERVAL 15 MINUTE AND inc.opened_at
        ORDER BY ts
    """
    r = ask(bed, sql)
    assert r.status_code == 200, r.text
    assert [row[0] for row in r.json()["rows"]] == ["node", "pod", "event"]
    assert r.json()["rows"][1][2] == "restarts=7"


def test_duckdb_forms_of_a_query(bed: Bed) -> None:
    for sql in (
        "FROM incidents SELECT count(*)",
        "VALUES (1), (2)",
        "  /* a comment */ -- and another\n (SELECT 1)",
        "SHOW TABLES",
        "DESCRIBE incidents",
        "SUMMARIZE cost_daily",
        "EXPLAIN SELECT * FROM incidents",
        "EXPLAIN ANALYZE SELECT count(*) FROM incidents",
        "PIVOT incidents ON severity IN ('P0', 'P1', 'P2') USING count(*) GROUP BY namespace",
        "SELECT current_setting('memory_limit'), current_setting('enable_external_access')",
        "SELECT 1;",
    ):
        r = ask(bed, sql)
        assert r.status_code == 200, (sql, r.text)
    r = ask(bed, "SELECT current_setting('enable_external_access') AS x")
    assert r.json()["rows"] == [[False]]
    assert ask(bed, "SELECT * FROM duckdb_secrets()").json()["rows"] == []


def test_tables_users_can_query(bed: Bed) -> None:
    r = ask(bed, "SELECT table_name FROM information_schema.tables ORDER BY 1")
    names = {row[0] for row in r.json()["rows"]}
    documented = {
        "cap_rollup", "cap_points", "pvc_samples", "incidents", "inc_events", "sla_policies",
        "k8s_events", "node_status", "pod_status", "findings", "cost_daily", "budgets",
        "projection_checkpoints",
    }  # fmt: skip
    assert documented <= names, documented - names


def test_values_as_json_carries_them(bed: Bed) -> None:
    r = ask(
        bed,
        "SELECT 1::TINYINT AS i, '200000000000000000000'::HUGEINT AS huge, "
        "1.25::DECIMAL(5, 2) AS d, "
        "'nan'::DOUBLE AS nan, TRUE AS b, NULL AS nothing, DATE '2026-10-14' AS day, "
        "TIMESTAMP '2026-10-14 03:12:00' AS ts, TIMESTAMPTZ '2026-10-14 05:12:00+02' AS tstz, "
        "INTERVAL 90 MINUTE AS iv, '\\x00\\xFF'::BLOB AS blob, [1, 2] AS list, "
        "{'k': 'v'} AS struct, MAP {'a': 1} AS map, "
        "'8e2d0c4c-8f8e-4f64-9c51-6b7c3c1f0a11'::UUID AS u",
    )
    assert r.status_code == 200, r.text
    body = r.json()
    types = {c["name"]: c["type"] for c in body["columns"]}
    assert types["d"] == "DECIMAL(5,2)" and types["tstz"] == "TIMESTAMP WITH TIME ZONE"
    assert types["list"] == "INTEGER[]" and types["blob"] == "BLOB"
    assert body["rows"] == [
        [
            1,
            str(2 * 10**20),
            1.25,
            None,
            True,
            None,
            "2026-10-14",
            "2026-10-14T03:12:00Z",
            "2026-10-14T03:12:00Z",
            5400.0,
            "AP8=",
            [1, 2],
            {"k": "v"},
            {"a": 1},
            "8e2d0c4c-8f8e-4f64-9c51-6b7c3c1f0a11",
        ]
    ]


def test_the_row_cap_truncates(bed: Bed) -> None:
    r = ask(bed, "SELECT range AS n FROM range(100)", limit=10)
    body = r.json()
    assert r.status_code == 200 and body["row_count"] == 10 and body["truncated"] is True
    assert body["rows"] == [[n] for n in range(10)]
    # The default limit is query_max_rows (50 here), and exactly that many is not truncated.
    body = ask(bed, "SELECT * FROM range(50)").json()
    assert body["row_count"] == 50 and body["truncated"] is False
    body = ask(bed, "SELECT * FROM range(51)").json()
    assert body["row_count"] == 50 and body["truncated"] is True
    r = ask(bed, "SELECT 1", limit=51)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.limit", r.text
    assert ask(bed, "SELECT 1", limit=0).status_code == 422


def test_endless_results_stop_at_the_row_cap(bed: Bed) -> None:
    for sql in (
        "SELECT * FROM range(1000000000000)",
        "SELECT * FROM range(1000000000) a, range(10) b",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT n FROM r",
    ):
        r = ask(bed, sql)
        assert r.status_code == 200, (sql, r.text)
        assert r.json()["row_count"] == 50 and r.json()["truncated"] is True


def test_the_result_size_cap_truncates(bed: Bed) -> None:
    # 256 KiB of rows at most: 10 rows of 30 000 characters fit 8 at a time.
    body = ask(bed, "SELECT repeat('x', 30000) AS s FROM range(10)").json()
    assert body["truncated"] is True and body["row_count"] == 8
    r = ask(bed, "SELECT repeat('x', 300000) AS s")
    assert r.status_code == 422 and r.json()["kind"] == "too_large", r.text
    assert_alive(bed)


def test_bad_bodies(bed: Bed) -> None:
    h = {**bed.headers("query"), "Content-Type": "application/json"}
    assert bed.client.post("/v1/query", content=b"{", headers=h).status_code == 400
    for body in ({}, {"query": ""}, {"query": "SELECT 1", "other": 1}, {"query": 1}):
        r = bed.client.post("/v1/query", json=body, headers=h)
        assert r.status_code == 422, (body, r.text)
    r = bed.client.post("/v1/query", json={"query": "SELECT 1" + " " * 100_000}, headers=h)
    assert r.status_code == 422


def test_errors_name_the_problem_without_server_paths(bed: Bed) -> None:
    r = ask(bed, "SELECT nope FROM incidents")
    assert r.status_code == 400 and r.json()["kind"] == "invalid"
    assert 'column "nope"' in r.json()["detail"].lower() or "nope" in r.json()["detail"]
    r = ask(bed, "SELECT * FROM duckdb_extensions()")
    assert r.status_code == 400, r.text
    assert "/root" not in r.text and "/nonexistent" not in r.text
    assert str(bed.db_path.parent) not in r.text


def test_query_scope_is_explicit(bed: Bed) -> None:
    for scope in ("read", "write", "admin"):
        r = ask(bed, "SELECT 1", scope=scope)
        assert r.status_code == 403, (scope, r.text)
        assert "query" in r.json()["detail"]
    assert ask(bed, "SELECT 1").status_code == 200
    # A query key reads like a read key, and writes nothing.
    h = bed.headers("query")
    assert bed.client.get("/v1/events", headers=h).status_code == 200
    assert bed.client.get("/v1/incidents", headers=h).status_code == 200
    before = bed.state()
    r = bed.client.post("/v1/events", json=cost_daily("cost-by-query-key"), headers=h)
    assert r.status_code == 403
    assert bed.state() == before
    assert bed.client.post("/v1/query", json={"query": "SELECT 1"}).status_code == 401


def test_answers_follow_the_ledger(bed: Bed) -> None:
    # query_snapshot_seconds is 0 here: a changed read model is copied for the next query.
    assert bed.post_events([cost_daily("cost-2", amount=7.5)]).status_code == 200
    bed.client.post("/v1/projections/catch-up", headers=bed.headers("admin"))
    r = ask(bed, "SELECT amount FROM cost_daily ORDER BY position DESC LIMIT 1")
    assert r.json()["rows"] == [[7.5]], r.text


# -- hostile queries ------------------------------------------------------------------------

# (id, SQL with {tmp} for a scratch folder, status, kind, a word of the reason)
HOSTILE: list[tuple[str, str, int, str, str]] = [
    ("copy-to", "COPY incidents TO '{tmp}/stolen.csv'", 400, "refused", "COPY"),
    (
        "copy-query-to",
        "COPY (SELECT * FROM incidents) TO '{tmp}/s.parquet'",
        400,
        "refused",
        "COPY",
    ),
    ("copy-from", "COPY incidents FROM '/etc/passwd'", 400, "refused", "COPY"),
    ("attach", "ATTACH '{tmp}/other.duckdb' AS other", 400, "refused", "ATTACH"),
    ("attach-memory", "ATTACH ':memory:' AS scratch", 400, "refused", "ATTACH"),
    ("detach", "DETACH rm", 400, "refused", "DETACH"),
    ("install", "INSTALL httpfs", 400, "refused", "INSTALL"),
    ("load", "LOAD httpfs", 400, "refused", "LOAD"),
    ("read-csv", "SELECT * FROM read_csv('/etc/passwd')", 400, "invalid", "disabled"),
    ("replacement-scan", "SELECT * FROM '/etc/passwd'", 400, "invalid", "does not exist"),
    ("read-parquet", "SELECT * FROM read_parquet('{tmp}/*.parquet')", 400, "invalid", "disabled"),
    ("glob", "SELECT * FROM glob('/etc/*')", 400, "invalid", "disabled"),
    (
        "read-text",
        "WITH x AS (SELECT 1) SELECT * FROM read_text('/etc/hostname')",
        400,
        "invalid",
        "disabled",
    ),
    ("read-blob", "FROM read_blob('/etc/hostname')", 400, "invalid", "disabled"),
    ("read-json", "SELECT * FROM read_json_auto('/etc/os-release')", 400, "invalid", "disabled"),
    ("sniff-csv", "SELECT * FROM sniff_csv('/etc/passwd')", 400, "invalid", "disabled"),
    ("set", "SET memory_limit = '100GB'", 400, "refused", "SET"),
    ("unlock", "SET lock_configuration = false", 400, "refused", "SET"),
    ("reset", "RESET enable_external_access", 400, "refused", "RESET"),
    ("set-variable", "SET VARIABLE x = 1", 400, "refused", "SET"),
    ("pragma", "PRAGMA enable_external_access", 400, "refused", "PRAGMA"),
    ("call", "CALL pragma_version()", 400, "refused", "CALL"),
    ("use", "USE system", 400, "refused", "USE"),
    ("create-table", "CREATE TABLE stolen AS SELECT * FROM incidents", 400, "refused", "CREATE"),
    ("create-temp", "CREATE TEMP TABLE t AS SELECT 1", 400, "refused", "CREATE"),
    ("create-macro", "CREATE TEMP MACRO evil(x) AS x", 400, "refused", "CREATE"),
    (
        "create-secret",
        "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')",
        400,
        "refused",
        "CREATE",
    ),
    ("create-view", "CREATE VIEW v AS SELECT 1", 400, "refused", "CREATE"),
    ("insert", "INSERT INTO incidents (incident_id) VALUES ('FAKE')", 400, "refused", "INSERT"),
    ("update", "UPDATE incidents SET status = 'resolved'", 400, "refused", "UPDATE"),
    ("delete", "DELETE FROM incidents", 400, "refused", "DELETE"),
    ("drop", "DROP TABLE incidents", 400, "refused", "DROP"),
    ("alter", "ALTER TABLE incidents RENAME TO gone", 400, "refused", "ALTER"),
    ("truncate", "TRUNCATE incidents", 400, "refused", "TRUNCATE"),
    ("begin", "BEGIN TRANSACTION", 400, "refused", "BEGIN"),
    ("checkpoint", "CHECKPOINT", 400, "refused", "CHECKPOINT"),
    ("export", "EXPORT DATABASE '{tmp}/export'", 400, "refused", "EXPORT"),
    ("import", "IMPORT DATABASE '{tmp}/export'", 400, "refused", "IMPORT"),
    ("prepare", "PREPARE p AS SELECT 1", 400, "refused", "PREPARE"),
    ("vacuum", "VACUUM", 400, "refused", "VACUUM"),
    ("update-extensions", "UPDATE EXTENSIONS", 400, "refused", "UPDATE"),
    ("two-statements", "SELECT 1; DROP TABLE incidents", 400, "refused", "one statement"),
    ("hidden-second", "SELECT 1 /* ; */; -- x\n DELETE FROM incidents", 400, "refused", "one"),
    ("explain-copy", "EXPLAIN ANALYZE COPY incidents TO '{tmp}/x.csv'", 400, "refused", "COPY"),
    (
        "with-insert",
        "WITH x AS (SELECT 1) INSERT INTO incidents (incident_id) SELECT 'x' FROM x",
        400,
        "refused",
        "INSERT",
    ),
    ("pivot-types", "PIVOT incidents ON severity", 400, "refused", "PIVOT"),
    ("query-function", "SELECT * FROM query('DROP TABLE incidents')", 400, "invalid", "SELECT"),
    ("pointer", "SELECT * FROM arrow_scan(NULL, NULL, NULL)", 400, "invalid", "arrow_scan"),
    ("getenv", "SELECT getenv('OPSLEDGER_DATABASE_URL')", 400, "invalid", "getenv"),
    ("empty", "  -- nothing\n", 400, "refused", "empty"),
    ("huge-string", "SELECT repeat('x', 10000000000)", 400, "invalid", "string"),
    ("huge-string-4g", "SELECT length(repeat('x', 4000000000))", 422, "memory", "memory"),
    (
        "cartesian",
        "SELECT count(*) FROM range(1000000000) a, range(1000000000) b",
        422,
        "memory|timeout",
        "",
    ),
    (
        "cartesian-sorted",
        "SELECT * FROM range(1000000000) a CROSS JOIN range(1000000000) b ORDER BY random()",
        422,
        "memory|timeout",
        "",
    ),
    (
        "recursion",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT max(n) FROM r",
        422,
        "memory|timeout",
        "",
    ),
    ("list-explosion", "SELECT list(range) FROM range(1000000000)", 422, "memory|timeout", ""),
    ("slow-count", "SELECT count(*) FROM range(100000000000000)", 422, "timeout", "time limit"),
]


@pytest.mark.parametrize(
    ("sql", "code", "kind", "word"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_hostile_query_is_refused_or_stopped(
    bed: Bed, tmp_path: Path, sql: str, code: int, kind: str, word: str
) -> None:
    before = bed.state()
    started = time.monotonic()
    r = ask(bed, sql.format(tmp=tmp_path))
    assert r.status_code == code, r.text
    body = r.json()
    assert body["kind"] in kind.split("|"), body
    assert word.lower() in body["detail"].lower(), body
    assert body["errors"][0]["field"] == "query"
    # Stopped within the time limit and the kill grace, never later.
    assert time.monotonic() - started < 2 + query_pool.GRACE_S + 3
    assert list(tmp_path.iterdir()) == []
    assert bed.state() == before
    assert_alive(bed)


def test_read_model_intact_after_the_hostile_queries(bed: Bed) -> None:
    tables = ask(bed, "SELECT count(*) FROM information_schema.tables").json()["rows"][0][0]
    r = ask(bed, "SELECT count(*) FROM incidents WHERE incident_id = 'FAKE'")
    assert r.json()["rows"] == [[0]]
    assert ask(bed, "SELECT count(*) FROM information_schema.tables").json()["rows"] == [[tables]]
    r = bed.client.get("/v1/incidents/INC-1", headers=bed.headers("read"))
    assert r.status_code == 200 and r.json()["status"] == "resolved"
    assert bed.client.get("/healthz").status_code == 200
    assert bed.client.get("/readyz").status_code == 200


# -- the connection itself: the guarantee, without the guard --------------------------------


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[tuple[duckdb.DuckDBPyConnection, Path]]:
    path = tmp_path / "db" / "rm.duckdb"
    path.parent.mkdir()
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE incidents AS SELECT 'INC-1' AS incident_id, 'open' AS status")
    con.close()
    limits = QueryLimits(timeout_s=2, memory_limit="128MB", max_rows=10, max_result_bytes=1 << 20)
    q = open_locked(path, limits)
    yield q, path
    q.close()


BYPASSING_THE_GUARD = [
    "COPY incidents TO '{tmp}/x.csv'",
    "COPY (SELECT 1) TO '{tmp}/x.parquet' (FORMAT parquet)",
    "COPY incidents FROM '/etc/passwd'",
    "EXPORT DATABASE '{tmp}/export'",
    "ATTACH '{tmp}/other.duckdb' AS other",
    "ATTACH ':memory:' AS scratch",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM read_blob('{db}')",
    "SELECT * FROM glob('/*')",
    "SELECT * FROM read_parquet('{tmp}/*.parquet')",
    "CREATE TABLE t (a INT)",
    "CREATE MACRO m(a) AS a",
    "CREATE PERSISTENT SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')",
    "INSERT INTO incidents VALUES ('FAKE', 'open')",
    "UPDATE incidents SET status = 'resolved'",
    "DELETE FROM incidents",
    "DROP TABLE incidents",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "SET memory_limit = '100GB'",
    "SET threads = 64",
    "RESET disabled_filesystems",
    "PRAGMA memory_limit = '100GB'",
    "CALL enable_logging()",
    "SELECT set_config('memory_limit', '100GB', false)",
    "SELECT * FROM arrow_scan(NULL, NULL, NULL)",
]


@pytest.mark.parametrize("sql", BYPASSING_THE_GUARD)
def test_the_connection_refuses_what_the_guard_would_have(
    locked: tuple[duckdb.DuckDBPyConnection, Path], tmp_path: Path, sql: str
) -> None:
    con, path = locked
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    cur = con.cursor()
    with pytest.raises(duckdb.Error):
        cur.execute(sql.format(tmp=scratch, db=path)).fetchall()
    cur.close()
    assert list(scratch.iterdir()) == []
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    settings = con.execute(
        "SELECT current_setting('enable_external_access'), current_setting('lock_configuration'), "
        "current_setting('autoload_known_extensions'), "
        "current_setting('autoinstall_known_extensions'), "
        "current_setting('allow_community_extensions'), current_setting('threads')"
    ).fetchone()
    assert settings == (False, True, False, False, False, 1)
    assert con.execute("SELECT * FROM incidents").fetchall() == [("INC-1", "open")]


def test_session_state_dies_with_the_cursor(locked: tuple[duckdb.DuckDBPyConnection, Path]) -> None:
    # The connection lets these through (they change nothing on disk); the guard refuses them
    # anyway, and each query's fresh cursor forgets them.
    con, path = locked
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    a = con.cursor()
    a.execute("CREATE TEMP TABLE scratch AS SELECT 42 AS x")
    a.execute("SET VARIABLE v = 1")
    a.close()
    b = con.cursor()
    with pytest.raises(duckdb.CatalogException):
        b.execute("SELECT * FROM scratch")
    assert b.execute("SELECT getvariable('v')").fetchone() == (None,)
    b.close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_python_objects_are_not_scanned_by_name(
    locked: tuple[duckdb.DuckDBPyConnection, Path],
) -> None:
    import pyarrow as pa

    con, _ = locked
    secret_table = pa.table({"token": ["olk_secret"]})
    assert secret_table.num_rows == 1
    with pytest.raises(duckdb.CatalogException):
        con.execute("SELECT * FROM secret_table").fetchall()


# -- the guard ----------------------------------------------------------------------------------


def test_the_guard_reads_past_comments_and_parentheses() -> None:
    assert first_word("  -- x\n/* a /* nested */ b */ ((select 1))") == "SELECT"
    assert first_word("/* unterminated") == ""
    con = duckdb.connect()
    check_query(con, "EXPLAIN (FORMAT json) SELECT 1")
    check_query(con, "explain analyse /* c */ from range(3)")
    for sql in (
        "EXPLAIN ANALYZE DELETE FROM t",
        "EXPLAIN (FORMAT json) COPY t TO 'x'",
        "SELECT 1; SELECT 2",
    ):
        with pytest.raises(QueryRefused):
            check_query(con, sql)
    with pytest.raises((QueryRefused, QueryInvalid)):
        check_query(con, "EXPLAIN EXPLAIN SELECT 1")
    with pytest.raises(QueryInvalid):
        check_query(con, "SELECT FROM WHERE")


# -- workers and snapshots ------------------------------------------------------------------


def _limits(**kw: Any) -> QueryLimits:
    values: dict[str, Any] = {
        "timeout_s": 2.0,
        "memory_limit": "128MB",
        "max_rows": 10,
        "max_result_bytes": 1 << 20,
    }
    return QueryLimits(**{**values, **kw})


def test_a_worker_past_its_deadline_is_killed_and_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "x.duckdb"
    duckdb.connect(str(path)).close()
    # A scalar that does not look for interruption, and no grace: the pool must kill it.
    monkeypatch.setattr(query_pool, "GRACE_S", 0.0)
    pool = WorkerPool(_limits(timeout_s=0.3, memory_limit="512MB"), 1)
    try:
        assert b'"rows":[[1]]' in pool.run(path, "SELECT 1", 5)
        with pool.worker(1) as w:
            pid = w.proc.pid
        started = time.monotonic()
        with pytest.raises(QueryError) as stopped:
            pool.run(path, "SELECT length(repeat('x', 400000000))", 5)
        assert stopped.value.kind == "timeout"
        assert time.monotonic() - started < 1.5
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert b'"rows":[[2]]' in pool.run(path, "SELECT 2", 5)
        # A worker that died between queries is replaced, too.
        with pool.worker(1) as w:
            os.kill(w.proc.pid, 9)
            w.proc.wait()
        assert b'"rows":[[3]]' in pool.run(path, "SELECT 3", 5)
    finally:
        pool.close()


def test_a_full_pool_answers_busy(tmp_path: Path) -> None:
    pool = WorkerPool(_limits(timeout_s=0.2), 1)
    try:
        with pool.worker(1), pytest.raises(QueryError) as busy:
            pool.run(tmp_path / "x.duckdb", "SELECT 1", 5)
        assert busy.value.kind == "busy"
    finally:
        pool.close()


def test_the_worker_has_none_of_the_server_environment(tmp_path: Path) -> None:
    path = tmp_path / "x.duckdb"
    duckdb.connect(str(path)).close()
    pool = WorkerPool(_limits(), 1)
    try:
        with pool.worker(1) as w:
            w.run(path, "SELECT 1", 1, {})
            environ = Path(f"/proc/{w.proc.pid}/environ").read_bytes().split(b"\0")
            limits = Path(f"/proc/{w.proc.pid}/limits").read_text()
        names = {e.split(b"=")[0].decode() for e in environ if e}
        assert not any(n.startswith(("OPSLEDGER_", "AWS_")) for n in names), names
        assert "Max address space" in limits
        as_line = next(line for line in limits.splitlines() if "address space" in line)
        assert "unlimited" not in as_line
    finally:
        pool.close()


def test_snapshots_follow_the_read_model(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    ledger = Ledger.from_url(url)
    model = ReadModel(tmp_path / "rm.duckdb")
    runner = Runner(ledger, model, default_projections())
    try:
        lazy = Snapshots(model, max_age_s=3600, first_wait_s=1)
        with lazy.use() as first:
            assert first.path.exists() and first.path.name == "rm.duckdb"
        ledger.append(validate_events([opened("INC-7", "P2", "2026-10-14T00:00:00Z", "x")]))
        runner.catch_up()
        # Younger than max_age: the same snapshot, even though the read model moved on.
        with lazy.use() as again:
            assert again.path == first.path
        eager = Snapshots(model, max_age_s=0, first_wait_s=1)
        with eager.use() as one:
            con = duckdb.connect(str(one.path), read_only=True)
            assert con.execute("SELECT count(*) FROM incidents").fetchone() == (1,)
            con.close()
            ledger.append(validate_events([opened("INC-8", "P2", "2026-10-14T01:00:00Z", "x")]))
            runner.catch_up()
            with eager.use() as two:
                assert two.path != one.path
                assert one.path.exists()  # still in use
            with eager.use() as three:
                assert three.path == two.path and three.as_of >= two.as_of
        assert not one.path.exists()  # retired and unused: removed
        # A cursor holding a read open across a rebuild makes CHECKPOINT fail: the snapshot is
        # then DuckDB's own copy of the database (COPY FROM DATABASE), complete without a WAL.
        model.cursor().execute("SELECT 1 FROM range(10)").fetchone()
        ledger.append(validate_events([opened("INC-6", "P1", "2026-10-14T02:00:00Z", "x")]))
        rebuild = threading.Thread(target=runner.rebuild, args=(["incidents"],))
        rebuild.start()
        rebuild.join()
        with eager.use() as rebuilt:
            assert rebuilt.path != two.path
            assert model.wal_path.exists()  # not checkpointed
            assert not rebuilt.path.with_name("rm.duckdb.wal").exists()
            pool = WorkerPool(_limits(), 1)
            try:
                body = orjson.loads(pool.run(rebuilt.path, "SELECT count(*) FROM incidents", 5))
            finally:
                pool.close()
            assert body["rows"] == [[3]]
        two = rebuilt
        # A catch-up holding the write lock: the previous snapshot answers meanwhile.
        held = threading.Event()
        release = threading.Event()

        def hold() -> None:
            with model.write_lock:
                held.set()
                release.wait(10)

        t = threading.Thread(target=hold)
        t.start()
        held.wait(5)
        started = time.monotonic()
        with eager.use() as during:
            assert during.path == two.path
        assert time.monotonic() - started < 3
        release.set()
        t.join()
        for s in (lazy, eager):
            base = s.base
            s.close()
            assert not base.exists()
    finally:
        model.close()
        ledger.engine.dispose()


# -- the CLI ------------------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path) -> Path:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    ledger = Ledger.from_url(url)
    ledger.append(validate_events(demo_events()))
    ledger.engine.dispose()
    return tmp_path


SQL = "SELECT incident_id, severity, status FROM incidents ORDER BY incident_id"


@pytest.mark.slow
def test_cli_query_formats_without_a_server(home: Path) -> None:
    csv_run, json_run, table_run, capped, refused, stopped = _run_many(
        home,
        [
            ["query", SQL, "--format", "csv"],
            ["query", SQL, "--format", "json"],
            ["query", SQL],
            ["query", "SELECT * FROM range(5)", "--limit", "2", "--format", "csv"],
            ["query", "DROP TABLE incidents"],
            ["query", "SELECT count(*) FROM range(100000000000000)"],
        ],
    )
    assert csv_run.returncode == 0, csv_run.stderr
    assert csv_run.stdout == (
        "incident_id,severity,status\nINC-1,P1,resolved\nINC-2,P2,acknowledged\nINC-3,P0,open\n"
    )
    assert "3 row(s)" in csv_run.stderr
    assert json_run.returncode == 0, json_run.stderr
    body = orjson.loads(json_run.stdout)
    assert body["rows"][0] == ["INC-1", "P1", "resolved"] and body["truncated"] is False
    assert body["columns"][0] == {"name": "incident_id", "type": "VARCHAR"}
    assert table_run.returncode == 0, table_run.stderr
    assert "incident_id" in table_run.stdout and "acknowledged" in table_run.stdout
    assert capped.returncode == 0 and capped.stdout == "range\n0\n1\n"
    assert "truncated" in capped.stderr
    assert refused.returncode == 2 and "DROP" in refused.stderr, refused.stderr
    assert stopped.returncode == 2 and "time limit" in stopped.stderr, stopped.stderr
    bad = run_cli(["query", "SELECT 1", "--format", "xml"], home)
    assert bad.returncode == 2 and "--format" in bad.stderr


def _run_many(home: Path, calls: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    # One at a time: each opens the read model, which admits one writing process.
    env = {"OPSLEDGER_QUERY_TIMEOUT_SECONDS": "2"}
    return [_run(call, home, env) for call in calls]


def _run(args: list[str], home: Path, extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSLEDGER_")}
    env |= {"OPSLEDGER_HOME": str(home), **extra}
    exe = str(OPSLEDGER) if OPSLEDGER.exists() else shutil.which("opsledger") or "opsledger"
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


@pytest.mark.slow
def test_cli_query_through_a_running_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api.app import create_app

    settings = bed_settings(tmp_path, projection_interval_seconds=3600, query_snapshot_seconds=0)
    ledger = Ledger.from_url(str(settings.database_url))
    ledger.append(validate_events(demo_events()))
    ledger.engine.dispose()
    app = create_app(settings)
    announce = announce_file(settings, monkeypatch)
    extra = {
        "OPSLEDGER_DATABASE_URL": str(settings.database_url),
        "OPSLEDGER_READ_MODEL_PATH": str(settings.read_model),
    }
    with serve_in_thread(app, announce=announce):
        r = _run(["query", SQL, "--format", "csv"], tmp_path / "home", extra)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[1:] == [
            "INC-1,P1,resolved",
            "INC-2,P2,acknowledged",
            "INC-3,P0,open",
        ]
        r = _run(["query", "INSERT INTO incidents (incident_id) VALUES ('X')"], tmp_path, extra)
        assert r.returncode == 2 and "INSERT" in r.stderr, r.stderr
        # The one-off query keys the CLI made are revoked.
        from store.keys import list_keys

        ledger = Ledger.from_url(str(settings.database_url))
        assert [k.scope for k in list_keys(ledger.engine)] == []
        ledger.engine.dispose()


def test_a_busy_projector_does_not_delay_queries_on_a_recent_snapshot(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    ledger = Ledger.from_url(url)
    model = ReadModel(tmp_path / "rm.duckdb")
    Runner(ledger, model, default_projections())
    snaps = Snapshots(model, max_age_s=0, first_wait_s=1)
    holding, release = threading.Event(), threading.Event()

    def catch_up_forever() -> None:  # a projector under steady ingest holds the write lock
        with model.write_lock:
            holding.set()
            release.wait(30)

    busy = threading.Thread(target=catch_up_forever)
    try:
        with snaps.use() as first:
            pass
        busy.start()
        assert holding.wait(5)
        # Past max_age but recent: served at once (it used to wait a second for the lock,
        # each query behind the other: 1-2 s a query under load).
        start = time.monotonic()
        for _ in range(5):
            with snaps.use() as again:
                assert again.path == first.path
        assert time.monotonic() - start < 0.5
        # Well past its age, a query waits a second for a new snapshot, then takes the old.
        first.as_of -= STALE_AFTER_S + 1
        start = time.monotonic()
        with snaps.use() as stale:
            assert stale.path == first.path
        assert 0.9 <= time.monotonic() - start < 3
    finally:
        release.set()
        if busy.is_alive():
            busy.join()
        snaps.close()
        model.close()
        ledger.engine.dispose()
