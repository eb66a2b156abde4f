"""`POST /v1/query` from an outsider's side: answers over the size cap come back truncated,
consistently, and the attacks tests/test_query.py does not list yet are refused or stopped
(issue 10: Low 9, and the sandbox's entry in docs/security.md)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from support.beds import Bed, make_bed
from support.query import LIMITS, ask, assert_alive, demo_bed

from analytics.sql import pool as query_pool
from analytics.sql.pool import QueryError, WorkerPool
from analytics.sql.sandbox import QueryLimits
from analytics.sql.service import limits_of
from store.keys import hash_token
from store.settings import Settings

# -- answers at the size cap: truncated, whatever the rows, in any worker -----------------------

#: The shipped limits: 64 MiB of rows, 10 000 rows, 512 MB of DuckDB memory.
DEFAULTS = limits_of(Settings(home=Path("/nonexistent")))
CAP = DEFAULTS.max_result_bytes


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WorkerPool, Path]]:
    path = tmp_path_factory.mktemp("cap") / "rm.duckdb"
    duckdb.connect(str(path)).close()
    p = WorkerPool(DEFAULTS, 1)
    try:
        yield p, path
    finally:
        p.close()


def run(pool: tuple[WorkerPool, Path], sql: str) -> dict[str, Any]:
    p, path = pool
    body = p.run(path, sql, DEFAULTS.max_rows)
    answer: dict[str, Any] = orjson.loads(body)
    assert len(body) <= CAP + 64 * 1024
    return answer


# (SQL, rows expected, truncated): each row's JSON is `["<string>"]` plus a separating comma.
AT_THE_CAP = [
    # The report: 50 MB of rows, under the cap, failed as kind=memory.
    ("SELECT repeat('x', 5000) FROM range(20000)", 10_000, True),
    ("SELECT repeat('x', 7000) FROM range(20000)", CAP // 7005, True),
    ("SELECT repeat('é', 5000) FROM range(20000)", CAP // 10005, True),
    ("SELECT repeat('x', 1000000) FROM range(200)", CAP // 1000005, True),
    ("SELECT [repeat('x', 5000000), repeat('y', 5000000)] FROM range(20)", 6, True),
    ("SELECT repeat('x', 60000000)", 1, False),
    ("SELECT repeat('\"', 20000000)", 1, False),  # escaped: 40 MB of JSON
]


@pytest.mark.slow
def test_answers_over_the_size_cap_are_truncated_consistently(
    pool: tuple[WorkerPool, Path],
) -> None:
    # Twice over, in whichever worker comes: a worker that grew on a large answer is replaced.
    for _ in range(2):
        for sql, rows, truncated in AT_THE_CAP:
            body = run(pool, sql)
            assert (body["row_count"], body["truncated"]) == (rows, truncated), sql
        assert run(pool, "SELECT 42")["rows"] == [[42]]


def test_a_single_row_over_the_cap_is_too_large(pool: tuple[WorkerPool, Path]) -> None:
    with pytest.raises(QueryError) as refused:
        run(pool, "SELECT repeat('x', 70000000)")
    assert refused.value.kind == "too_large"
    assert run(pool, "SELECT 'still here'")["rows"] == [["still here"]]


def test_a_worker_that_grew_is_replaced_after_answering(pool: tuple[WorkerPool, Path]) -> None:
    p, path = pool
    with p.worker(5) as w:
        w.run(path, "SELECT repeat('x', 1000000) FROM range(200)", 10_000, {})
        assert not w.alive  # asked to be replaced, its answer delivered first
    with p.worker(5) as w:
        w.run(path, "SELECT 1", 1, {})
        assert w.alive


def test_times_with_a_zone_are_answered(pool: tuple[WorkerPool, Path]) -> None:
    body = run(pool, "SELECT TIMETZ '12:30:00+02', * EXCLUDE (time_tz) FROM test_all_types()")
    assert body["row_count"] == 3 and body["rows"][0][0] == "12:30:00+02:00"


def test_through_the_api_the_cap_truncates(tmp_path: Path) -> None:
    limits = {**LIMITS, "query_max_rows": 10_000}
    with make_bed(tmp_path, read_model_path=tmp_path / "rm.duckdb", **limits) as bed:
        r = ask(bed, "SELECT repeat('x', 5000) FROM range(20000)")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["truncated"] is True and body["row_count"] == LIMITS[
            "query_max_result_bytes"
        ] // (5005)


# -- attacks from outside: what tests/test_query.py does not list ------------------------------


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    with demo_bed(tmp_path_factory.mktemp("attacks")) as b:
        yield b


# (id, SQL, status, kinds, a word of the reason)
ATTACKS: list[tuple[str, str, int, str, str]] = [
    # Every file reader, and the forms that wrap one.
    (
        "parquet-metadata",
        "SELECT * FROM parquet_metadata('/etc/passwd')",
        400,
        "invalid",
        "disabled",
    ),
    ("parquet-schema", "SELECT * FROM parquet_schema('/etc/passwd')", 400, "invalid", "disabled"),
    ("read-csv-auto", "SELECT * FROM read_csv_auto('/etc/passwd')", 400, "invalid", "disabled"),
    ("read-ndjson", "SELECT * FROM read_ndjson('/etc/passwd')", 400, "invalid", "disabled"),
    ("read-json-objects", "FROM read_json_objects('/etc/passwd')", 400, "invalid", "disabled"),
    ("read-duckdb", "SELECT * FROM read_duckdb('/etc/passwd')", 400, "invalid", "disabled"),
    ("environ", "SELECT * FROM read_text('/proc/self/environ')", 400, "invalid", "disabled"),
    ("relative-glob", "SELECT * FROM glob('*')", 400, "invalid", "disabled"),
    ("relative-scan", "SELECT * FROM 'rm.duckdb.wal'", 400, "invalid", "does not exist"),
    ("list-of-files", "SELECT * FROM read_parquet(['/etc/passwd'])", 400, "invalid", "disabled"),
    (
        "lateral",
        "SELECT * FROM range(3) t(x), LATERAL (SELECT * FROM read_text('/etc/hostname'))",
        400,
        "invalid",
        "disabled",
    ),
    (
        "summarize-file",
        "SUMMARIZE SELECT * FROM read_csv('/etc/passwd')",
        400,
        "invalid",
        "disabled",
    ),
    (
        "pivot-file",
        "PIVOT (FROM read_text('/etc/hostname')) ON filename IN ('x') USING count(*)",
        400,
        "invalid",
        "disabled",
    ),
    ("explain-file", "EXPLAIN ANALYZE FROM read_text('/etc/hostname')", 400, "invalid", "disabled"),
    (
        "query-table-fn",
        "SELECT * FROM query('FROM read_text(''/etc/hostname'')')",
        400,
        "invalid",
        "",
    ),
    # Extensions are neither loaded nor fetched.
    ("sqlite-scan", "SELECT * FROM sqlite_scan('/etc/passwd', 'x')", 400, "invalid", "extension"),
    ("iceberg", "SELECT * FROM iceberg_scan('/tmp')", 400, "invalid", "extension"),
    ("http", "SELECT * FROM read_csv('http://127.0.0.1:1/x.csv')", 400, "invalid", ""),
    ("s3-secret", "SELECT current_setting('s3_secret_access_key')", 400, "invalid", "extension"),
    # Writes through table functions: a read-only snapshot.
    ("force-checkpoint", "SELECT * FROM force_checkpoint()", 400, "invalid", ""),
    # Exhaustion.
    (
        "generate-series",
        "SELECT count(*) FROM generate_series(1, 1000000000000)",
        422,
        "timeout",
        "time limit",
    ),
    (
        "series-cross-join",
        "SELECT count(*) FROM generate_series(1, 100000) a, generate_series(1, 100000) b, "
        "generate_series(1, 1000) c",
        422,
        "timeout|memory",
        "",
    ),
    ("lpad", "SELECT lpad('x', 2000000000, 'y')", 422, "timeout|memory|crashed", ""),
    ("printf", "SELECT printf('%0999999999d', 1)", 422, "memory|timeout|crashed", ""),
    (
        "string-agg",
        "SELECT string_agg(repeat('x', 1000), ',') FROM range(10000000)",
        422,
        "memory|timeout",
        "",
    ),
    ("list-resize", "SELECT list_resize([1], 1000000000)", 422, "memory|timeout", ""),
    (
        "doubling-recursion",
        "WITH RECURSIVE r(s) AS (SELECT 'x' UNION ALL SELECT s || s FROM r) "
        "SELECT length(s) FROM r",
        422,
        "memory|timeout",
        "",
    ),
    # Stacked statements and comment tricks.
    ("comment-then-second", "SELECT 1 --\n; DROP TABLE incidents", 400, "refused", "one statement"),
    ("parenthesised-then-second", "(SELECT 1); DROP TABLE incidents", 400, "refused", "one"),
    ("then-attach", "FROM incidents; ATTACH ':memory:' AS x", 400, "refused", "one statement"),
    ("bom", "\ufeffSELECT 1", 400, "refused", "starts with"),
    ("unterminated-comment", "SELECT 1 /* open", 400, "invalid", "comment"),
    # No secrets in the read model.
    ("api-keys", "SELECT * FROM api_keys", 400, "invalid", "api_keys"),
]


@pytest.mark.parametrize(
    ("sql", "code", "kind", "word"), [a[1:] for a in ATTACKS], ids=[a[0] for a in ATTACKS]
)
def test_attack_is_refused_or_stopped(
    bed: Bed, tmp_path: Path, sql: str, code: int, kind: str, word: str
) -> None:
    before = bed.state()
    started = time.monotonic()
    r = ask(bed, sql)
    assert r.status_code == code, r.text
    body = r.json()
    assert body["kind"] in kind.split("|"), body
    assert word.lower() in body["detail"].lower(), body
    assert time.monotonic() - started < LIMITS["query_timeout_seconds"] + query_pool.GRACE_S + 3
    assert bed.state() == before
    assert_alive(bed)


@pytest.mark.parametrize(
    ("sql", "rows"),
    [
        # A DROP inside a (nested) comment, or inside a string, is not a statement.
        ("/* /* */ ; DROP TABLE incidents */ SELECT 1", [[1]]),
        ("SELECT $$;DROP TABLE incidents$$", [[";DROP TABLE incidents"]]),
        ("SELECT ';' AS semi", [[";"]]),
        ("SELECT 1; ;", [[1]]),
        # Catastrophic backtracking does not exist in RE2.
        ("SELECT regexp_matches(repeat('a', 100000), '(a+)+b')", [[False]]),
        # CHECKPOINT on a read-only snapshot does nothing.
        ("SELECT count(*) FROM checkpoint()", [[0]]),
    ],
)
def test_harmless_forms_answer(bed: Bed, sql: str, rows: list[list[Any]]) -> None:
    r = ask(bed, sql)
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == rows
    r = ask(bed, "SELECT count(*) FROM incidents")
    assert r.json()["rows"] == [[3]]


def test_sql_sees_no_key_and_no_ledger(bed: Bed) -> None:
    # No column that could hold a credential, in any table of the read model.
    r = ask(
        bed,
        "SELECT table_name, column_name FROM information_schema.columns WHERE column_name "
        "SIMILAR TO '.*(token|hash|secret|password|credential|key_id).*'",
    )
    assert r.status_code == 200 and r.json()["rows"] == [], r.text
    # And no key's token or stored hash anywhere in its rows.
    tables = [row[0] for row in ask(bed, "SELECT table_name FROM duckdb_tables()").json()["rows"]]
    dump = b"".join(ask(bed, f'SELECT * FROM "{t}"', limit=50).content for t in tables)
    for token in bed.tokens.values():
        assert token.encode() not in dump and hash_token(token).encode() not in dump
    # One database is attached, the snapshot: never the ledger, nor its URL.
    r = ask(bed, "SELECT database_name, path FROM duckdb_databases() WHERE NOT internal")
    ((name, path),) = r.json()["rows"]
    assert name == "rm" and path.endswith("/rm.duckdb") and ".query-snapshots/" in path
    r = ask(bed, "SELECT count(*) FROM duckdb_settings() WHERE value ILIKE '%ledger%'")
    assert r.json()["rows"] == [[0]]


def test_the_query_limits_reach_the_worker(tmp_path: Path) -> None:
    # What the worker is told is what the settings say (a cap the server and worker share).
    limits = QueryLimits(timeout_s=1.5, memory_limit="300MB", max_rows=7, max_result_bytes=100_000)
    path = tmp_path / "x.duckdb"
    duckdb.connect(str(path)).close()
    p = WorkerPool(limits, 1)
    try:
        body = orjson.loads(p.run(path, "SELECT current_setting('memory_limit') AS m", 7))
        assert body["rows"] == [["286.1 MiB"]]  # 300 MB in DuckDB's binary units
        body = orjson.loads(p.run(path, "SELECT repeat('x', 30000) FROM range(10)", 7))
        assert body["row_count"] == 100_000 // 30005 and body["truncated"] is True
    finally:
        p.close()
