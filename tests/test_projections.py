"""Projection runner and capacity projection: incremental = rebuild, crash safety, one writer.

Everything is real: a migrated SQLite ledger file, DuckDB read models, worker subprocesses
killed with SIGKILL. Hypothesis drives the incremental-vs-rebuild property.
"""

from __future__ import annotations

import calendar
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import SUPPORT
from support.capacity_tables import NAMES, TABLES, assert_same_rows, values_sql
from support.payloads import incident_milestone, incident_opened, metric_samples, pod_status, sample

from analytics.capacity.projection import NAMESPACE_METRICS, NODE_METRICS, CapacityProjection
from analytics.readmodel.model import ReadModel, ReadModelBusy
from analytics.readmodel.runner import Runner
from store.contract import Event, batch_from_columns, samples_event, validate_event
from store.ledger import Ledger
from store.migrate import upgrade

WORKER = SUPPORT / "projection_worker.py"
REPO = Path(__file__).resolve().parents[1]
SOURCE = "//opsledger.test/prometheus"
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
CAPACITY_METRICS = NODE_METRICS | NAMESPACE_METRICS

NODE_METRIC_NAMES = sorted(NODE_METRICS)
NS_METRIC_NAMES = sorted(NAMESPACE_METRICS)

KEYS: dict[str, tuple[str, ...]] = {
    "cap_rollup": TABLES["cap_rollup"][:8],
    "cap_points": TABLES["cap_points"][:7],
    "cap_node_values": TABLES["cap_node_values"][:4],
    "cap_ns_values": TABLES["cap_ns_values"][:3],
    "cap_batches": ("position",),
}
# cap_rollup recomputed from cap_points with DuckDB's own aggregates: the definition
# (docs/metrics.md) as one SQL statement, an oracle for the projection's numpy and SQL rollups.
ROLLUP_ORACLE = """
SELECT step, scope, cluster, nodepool, node, namespace, resource,
    CASE step WHEN '1h' THEN time_bucket(INTERVAL 1 HOUR, ts) ELSE date_trunc('day', ts) END AS t,
    avg(usage) AS usage_avg, quantile_cont(usage, 0.95) AS usage_p95, max(usage) AS usage_max,
    avg(requests) AS requests_avg, avg(allocatable) AS allocatable_avg,
    avg(usage / nullif(allocatable, 0)) AS utilization_avg,
    quantile_cont(usage / nullif(allocatable, 0), 0.95) AS utilization_p95,
    avg(requests / nullif(allocatable, 0)) AS commitment_avg, count(*) AS points
FROM cap_points, (VALUES ('1h'), ('1d')) AS s (step)
GROUP BY ALL
"""


def us(text: str) -> int:
    """UTC microseconds of a naive ISO timestamp."""
    return calendar.timegm(datetime.fromisoformat(text).timetuple()) * 1_000_000


# -- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture(scope="module")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty SQLite ledger file; copied per example instead of migrating each time."""
    path = tmp_path_factory.mktemp("template") / "ledger.db"
    upgrade(f"sqlite:///{path}")
    return path


def new_ledger(template: Path, directory: Path) -> tuple[str, Ledger]:
    """A fresh, migrated SQLite ledger in `directory` (a copy of the template)."""
    path = directory / "ledger.db"
    shutil.copy(template, path)
    url = f"sqlite:///{path}"
    return url, Ledger.from_url(url)


def capacity(batch_events: int | None = None) -> CapacityProjection:
    """A capacity projection instance, optionally with its own batch size."""
    p = CapacityProjection()
    if batch_events is not None:
        p.batch_events = batch_events
    return p


def table_rows(model: ReadModel, table: str) -> list[tuple[Any, ...]]:
    """Every row of a capacity table, sorted by all its columns (keys first)."""
    cols = ", ".join(TABLES[table])
    order = ", ".join(f"{c} NULLS FIRST" for c in TABLES[table])
    source = f"({values_sql(table)})" if table.endswith("_values") else table
    return model.cursor().execute(f"SELECT {cols} FROM {source} ORDER BY {order}").fetchall()


def assert_invariants(model: ReadModel) -> None:
    """Unique keys, every value of a known member, and rollups that match the points."""
    for table, keys in KEYS.items():
        cols = ", ".join(keys)
        source = f"({values_sql(table)})" if table.endswith("_values") else table
        dupes = (
            model.cursor()
            .execute(
                f"SELECT {cols}, count(*) FROM {source} GROUP BY ALL HAVING count(*) > 1 LIMIT 3"
            )
            .fetchall()
        )
        assert dupes == [], f"duplicate {table} keys: {dupes}"
    for table in ("cap_node_values", "cap_ns_values"):
        orphans = f"SELECT count(*) FROM ({values_sql(table)}) WHERE cluster IS NULL"
        assert model.cursor().execute(orphans).fetchone() == (0,), "values of no known series"
    cols = ", ".join(TABLES["cap_rollup"])
    order = ", ".join(f"{c} NULLS FIRST" for c in TABLES["cap_rollup"])
    oracle = model.cursor().execute(f"SELECT * FROM ({ROLLUP_ORACLE}) ORDER BY {order}").fetchall()
    got = model.cursor().execute(f"SELECT {cols} FROM cap_rollup ORDER BY {order}").fetchall()
    assert_same_rows("cap_rollup vs its oracle", TABLES["cap_rollup"], got, oracle)


def assert_same_tables(got: ReadModel, want: ReadModel) -> None:
    """The capacity tables of two read models hold the same rows (floats to 1e-9 relative)."""
    for table, cols in TABLES.items():
        assert_same_rows(table, cols, table_rows(got, table), table_rows(want, table))


def rebuilt(ledger: Ledger) -> ReadModel:
    """A fresh in-memory read model with every event of the ledger replayed in one go."""
    model = ReadModel(":memory:")
    runner = Runner(ledger, model, [capacity(batch_events=100_000)])
    runner.rebuild()
    assert runner.checkpoint("capacity") == ledger.head()
    return model


def node_labels(node: str, pool: str) -> dict[str, str]:
    """The labels of a node series."""
    return {"node": node, "nodepool": pool, "zone": f"zone-{pool}"}


def samples(
    event_id: str,
    cluster: str,
    rows: Sequence[tuple[str, dict[str, str], int, float]],
    time_us: int | None = None,
) -> Event:
    """A metric samples event from (metric, labels, ts_us, value) rows."""
    keys: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
    series: list[tuple[str, dict[str, str]]] = []
    index: list[int] = []
    for name, labels, _, _ in rows:
        key = (name, tuple(sorted(labels.items())))
        if key not in keys:
            keys[key] = len(series)
            series.append((name, labels))
        index.append(keys[key])
    ts = [r[2] for r in rows]
    batch = batch_from_columns(series, index, ts, [r[3] for r in rows])
    return samples_event(SOURCE, event_id, max(ts) if time_us is None else time_us, cluster, batch)


def other_event(kind: int, n: int, cluster: str) -> Event:
    """A non-capacity event: incident, pod status, or samples of a metric capacity ignores."""
    at = "2026-03-01T12:00:00Z"
    if kind == 0:
        raw = incident_opened(f"inc-{n}", incident_id=f"INC-{n}", time=at, cluster=cluster)
    elif kind == 1:
        raw = incident_milestone("acknowledged", f"ack-{n}", incident_id=f"INC-{n}", time=at)
    elif kind == 2:
        raw = pod_status(f"pod-{n}", time=at, cluster=cluster)
    else:
        pvc = {"namespace": "payments", "persistentvolumeclaim": f"data-{n}"}
        raw = metric_samples(
            f"pvc-{n}",
            [sample("pvc_used_bytes", pvc, "2026-03-01T00:20:00Z", 1e9 + n)],
            time=at,
            cluster=cluster,
        )
    return validate_event(raw)


def capacity_samples_upto(ledger: Ledger) -> dict[int, int]:
    """position -> number of capacity samples the event holds (0 for other events)."""
    out: dict[int, int] = {}
    for ev in ledger.iter_all():
        n = 0
        if ev.samples is not None:
            keep = np.array([name in CAPACITY_METRICS for name, _ in ev.samples.series])
            n = int(keep[ev.samples.series_index].sum())
        out[ev.position] = n
    return out


# -- property: incremental catch-up in random steps == one rebuild -------------------------------

BASE_US = us("2026-03-01T00:00:00")
# Few distinct timestamps so series+ts repeat across events; hours 23 and 0 straddle days.
SLOTS = [
    BASE_US + d * DAY_US + h * HOUR_US + m * 60_000_000
    for d in range(3)
    for h in (0, 1, 11, 23)
    for m in (0, 20, 40)
]
VALUES = st.one_of(
    st.integers(0, 16).map(float),
    st.floats(0, 1e4, allow_nan=False, allow_infinity=False),
)


@st.composite
def universes(draw: st.DrawFn) -> dict[str, list[tuple[str, dict[str, str]]]]:
    """Per cluster: its series (metric, labels) over random nodes, pools and namespaces."""
    out: dict[str, list[tuple[str, dict[str, str]]]] = {}
    for c in range(draw(st.integers(1, 2))):
        pools = draw(st.integers(1, 3))
        node_pools = draw(st.lists(st.integers(0, pools - 1), min_size=1, max_size=5))
        namespaces = draw(st.integers(0, 3))
        series: list[tuple[str, dict[str, str]]] = []
        for i, p in enumerate(node_pools):
            labels = node_labels(f"node-{i}", f"pool-{p}")
            series += [(m, labels) for m in NODE_METRIC_NAMES]
        for k in range(namespaces):
            series += [(m, {"namespace": f"ns-{k}"}) for m in NS_METRIC_NAMES]
        out[f"c{c}"] = series
    return out


@st.composite
def streams(draw: st.DrawFn) -> list[Event]:
    """Sample events over 1-3 days in any order, with repeats, gaps and other events between."""
    universe = draw(universes())
    days = draw(st.integers(1, 3))
    slots = SLOTS[: 12 * days]
    events: list[Event] = []
    for n in range(draw(st.integers(1, 14))):
        cluster = draw(st.sampled_from(sorted(universe)))
        if draw(st.integers(0, 4)) == 0:
            events.append(other_event(draw(st.integers(0, 3)), n, cluster))
            continue
        series = draw(st.lists(st.sampled_from(universe[cluster]), min_size=1, max_size=8))
        stamps = draw(st.lists(st.sampled_from(slots), min_size=1, max_size=3, unique=True))
        pairs = sorted({(s[0], tuple(sorted(s[1].items())), t) for s in series for t in stamps})
        values = draw(st.lists(VALUES, min_size=len(pairs), max_size=len(pairs)))
        rows = [(m, dict(lab), t, v) for (m, lab, t), v in zip(pairs, values, strict=True)]
        events.append(samples(f"s-{n}", cluster, rows))
    return events


@st.composite
def plans(draw: st.DrawFn) -> tuple[list[Event], list[Any]]:
    """Events plus the steps that feed them: append k, catch up (batch, max_batches), reopen."""
    events = draw(streams())
    steps: list[Any] = []
    left = len(events)
    while left:
        k = draw(st.integers(1, left))
        left -= k
        steps.append(("append", k))
        for _ in range(draw(st.integers(0, 3))):
            batch = draw(st.integers(1, 6))
            steps.append(("catch_up", batch, draw(st.sampled_from([1, 2, 3, None]))))
        if draw(st.booleans()):
            steps.append(("reopen",))
    steps.append(("catch_up", draw(st.integers(1, 6)), None))
    return events, steps


@pytest.mark.slow
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(plan=plans())
def test_incremental_catch_up_equals_rebuild(
    migrated_template: Path, plan: tuple[list[Event], list[Any]]
) -> None:
    """Any interleaving of appends and partial catch-ups ends where one rebuild ends."""
    events, steps = plan
    with tempfile.TemporaryDirectory() as tmp:
        _, ledger = new_ledger(migrated_template, Path(tmp))
        model_path = Path(tmp) / "read.duckdb"
        model = ReadModel(model_path)
        projection = capacity()
        runner = Runner(ledger, model, [projection])
        fed = 0
        try:
            for step in steps:
                if step[0] == "append":
                    ledger.append(events[fed : fed + step[1]])
                    fed += step[1]
                elif step[0] == "catch_up":
                    projection.batch_events = step[1]
                    runner.catch_up(max_batches=step[2])
                    assert runner.checkpoint("capacity") <= ledger.head()
                    assert_invariants(model)
                else:
                    model.close()
                    model = ReadModel(model_path)
                    runner = Runner(ledger, model, [projection])
            assert runner.checkpoint("capacity") == ledger.head()
            assert [s.lag for s in runner.status()] == [0]
            assert_invariants(model)
            reference = rebuilt(ledger)
            try:
                assert_invariants(reference)
                assert_same_tables(model, reference)
            finally:
                reference.close()
        finally:
            model.close()
            ledger.engine.dispose()


# -- crash safety: SIGKILL a worker mid catch-up, resume, compare with a rebuild --------------


def crash_ledger_events(seed: int) -> list[Event]:
    """A few hundred scrapes over 3 days (out of order, some re-sent) and other events."""
    rng = random.Random(seed)
    nodes = [(f"node-{i}", f"pool-{i % 3}") for i in range(6)]
    namespaces = [f"ns-{k}" for k in range(4)]
    stamps = [BASE_US + k * 10 * 60_000_000 for k in range(3 * 144)]
    # Mostly in order, with late arrivals: sort by a jittered key.
    stamps.sort(key=lambda t: t + rng.randrange(0, 6 * HOUR_US))
    out: list[Event] = []
    for n, t in enumerate(stamps):
        rows: list[tuple[str, dict[str, str], int, float]] = []
        for node, pool in nodes:
            if rng.random() < 0.1:  # a gap: this node did not report this scrape
                continue
            labels = node_labels(node, pool)
            rows += [
                ("node_cpu_allocatable_cores", labels, t, 4.0),
                ("node_cpu_usage_cores", labels, t, rng.uniform(0, 4)),
                ("node_memory_allocatable_bytes", labels, t, 16e9),
                ("node_memory_usage_bytes", labels, t, rng.uniform(0, 16e9)),
            ]
        for ns in namespaces:
            labels = {"namespace": ns}
            rows += [
                ("namespace_cpu_usage_cores", labels, t, rng.uniform(0, 2)),
                ("namespace_cpu_requests_cores", labels, t, rng.uniform(0, 2)),
                ("namespace_memory_usage_bytes", labels, t, rng.uniform(0, 4e9)),
                ("namespace_memory_requests_bytes", labels, t, rng.uniform(0, 4e9)),
                ("namespace_pod_count", labels, t, float(rng.randrange(0, 30))),
            ]
        if not rows:
            continue
        out.append(samples(f"scrape-{n}", "crash", rows))
        if rng.random() < 0.05:  # a re-sent scrape with new values: the later one must win
            resent = [(m, lab, ts, v * 0.5 + 0.25) for m, lab, ts, v in rows]
            out.append(samples(f"resend-{n}", "crash", resent))
        if rng.random() < 0.05:
            out.append(other_event(rng.randrange(4), n, "crash"))
    out.append(other_event(2, 100_000, "crash"))  # the head is not a capacity event
    return out


def start_worker(ledger_url: str, model_path: Path, batch_events: int) -> subprocess.Popen[str]:
    """A worker process catching the read model up from the ledger."""
    return subprocess.Popen(
        [sys.executable, str(WORKER), "catch-up", ledger_url, str(model_path), str(batch_events)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def lines_until(proc: subprocess.Popen[str], k: int) -> Iterator[str]:
    """Up to k stdout lines of the worker (fewer if it ends first)."""
    assert proc.stdout is not None
    for _ in range(k):
        line = proc.stdout.readline()
        if not line:
            return
        yield line


def assert_consistent(model_path: Path, expected: dict[int, int]) -> int:
    """The folded-in events match the checkpoint exactly: none half-applied or applied twice."""
    model = ReadModel(model_path)
    try:
        con = model.cursor()
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        if "projection_checkpoints" not in tables:  # killed before the first Runner created it
            return 0
        rows = con.execute("SELECT position FROM projection_checkpoints").fetchall()
        if not rows:  # killed before the first Runner committed its checkpoint row
            return 0
        (position,) = rows[0]
        folded = con.execute("SELECT position, samples FROM cap_batches ORDER BY 1").fetchall()
        want = [(p, n) for p, n in sorted(expected.items()) if p <= position and n > 0]
        assert folded == want, f"folded {folded[-3:]}, want {want[-3:]} up to {position}"
        assert_invariants(model)
        return int(position)
    finally:
        model.close()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 29])
def test_sigkill_mid_catch_up_resumes_exactly_once(
    migrated_template: Path, tmp_path: Path, seed: int
) -> None:
    """Kill -9 a catch-up at random points five times; resumed, it ends equal to a rebuild."""
    rng = random.Random(seed)
    url, ledger = new_ledger(migrated_template, tmp_path)
    ledger.append(crash_ledger_events(seed))
    head = ledger.head()
    expected = capacity_samples_upto(ledger)
    model_path = tmp_path / "read.duckdb"
    positions = [0]
    kills = 0
    try:
        for _ in range(5):
            proc = start_worker(url, model_path, rng.randint(2, 5))
            try:
                if rng.random() < 0.6:
                    stamps = [time.monotonic() for _ in lines_until(proc, rng.randint(2, 12))]
                    batch_s = float(np.median(np.diff(stamps))) if len(stamps) > 1 else 0.02
                    # Each line follows a commit; the next commit comes about one batch later,
                    # so aim at the late part of the next batch, where the commit is.
                    time.sleep(batch_s * rng.uniform(0.5, 1.1))
                else:  # anywhere from interpreter start-up to well into the catch-up
                    time.sleep(rng.uniform(0.2, 1.2))
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGKILL)
                    kills += 1
            finally:
                proc.wait(timeout=30)
            assert proc.returncode in (0, -signal.SIGKILL), proc.stderr and proc.stderr.read()
            position = assert_consistent(model_path, expected)
            assert position >= positions[-1], "a checkpoint went backwards"
            positions.append(position)
        assert kills >= 3, f"only {kills} kills landed: {positions}"
        assert any(0 < p < head for p in positions), f"no kill landed mid-ledger: {positions}"

        proc = start_worker(url, model_path, 7)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        last = out.splitlines()[-1].split()
        assert last[0] == "done" and int(last[2]) == head, out[-500:]

        model = ReadModel(model_path)
        reference = rebuilt(ledger)
        try:
            runner = Runner(ledger, model, [capacity()])
            assert runner.checkpoint("capacity") == head
            assert runner.catch_up() == 0
            assert_invariants(model)
            assert_same_tables(model, reference)
        finally:
            reference.close()
            model.close()
    finally:
        ledger.engine.dispose()


# -- checkpoint semantics -------------------------------------------------------------------


def scrape(n: int, t: str, cluster: str = "c1") -> Event:
    """One small scrape: a node's cpu usage and allocatable, a namespace's pod count."""
    labels = node_labels("n1", "general")
    return samples(
        f"scrape-{n}",
        cluster,
        [
            ("node_cpu_usage_cores", labels, us(t), 1.0 + n),
            ("node_cpu_allocatable_cores", labels, us(t), 4.0),
            ("namespace_pod_count", {"namespace": "web"}, us(t), 3.0),
        ],
    )


@pytest.fixture
def ledger(migrated_template: Path, tmp_path: Path) -> Iterator[Ledger]:
    """A fresh migrated SQLite ledger file."""
    _, led = new_ledger(migrated_template, tmp_path)
    try:
        yield led
    finally:
        led.engine.dispose()


@pytest.fixture
def model(tmp_path: Path) -> Iterator[ReadModel]:
    """A fresh read model file."""
    m = ReadModel(tmp_path / "read.duckdb")
    try:
        yield m
    finally:
        m.close()


def test_status_lag_goes_to_zero_after_catch_up(ledger: Ledger, model: ReadModel) -> None:
    """Lag counts the positions not yet folded in; catch-up folds them all."""
    runner = Runner(ledger, model, [capacity()])
    assert [(s.name, s.position, s.head, s.lag) for s in runner.status()] == [("capacity", 0, 0, 0)]
    ledger.append([scrape(n, f"2026-03-01T10:{n:02d}:00") for n in range(5)])
    assert [(s.position, s.head, s.lag) for s in runner.status()] == [(0, 5, 5)]
    assert runner.catch_up(max_batches=1) == 5
    assert [s.lag for s in runner.status()] == [0]
    ledger.append([scrape(n, f"2026-03-01T11:{n:02d}:00") for n in range(5, 8)])
    assert [s.lag for s in runner.status()] == [3]
    projection = runner.projections["capacity"]
    projection.batch_events = 1
    assert runner.catch_up(max_batches=2) == 2
    assert [(s.position, s.lag) for s in runner.status()] == [(7, 1)]
    assert runner.catch_up() == 1
    assert [(s.position, s.head, s.lag) for s in runner.status()] == [(8, 8, 0)]
    assert runner.catch_up() == 0


def test_other_event_types_advance_the_checkpoint_without_being_applied(
    ledger: Ledger, model: ReadModel
) -> None:
    """Incident, pod and non-capacity sample events move the checkpoint to head, add no rows."""
    runner = Runner(ledger, model, [capacity(batch_events=2)])
    ledger.append([other_event(kind, n, "c1") for n, kind in enumerate([0, 1, 2, 3, 2, 0])])
    seen: list[tuple[str, int, int]] = []
    assert runner.catch_up(progress=lambda *a: seen.append(a)) == 1  # only the pvc samples
    assert runner.checkpoint("capacity") == ledger.head() == 6
    assert seen[-1] == ("capacity", 6, 6)
    con = model.cursor()
    for table in ("cap_batches", "cap_node_values", "cap_ns_values", "cap_points", "cap_rollup"):
        assert con.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)

    # A capacity event in the middle of others: applied once, checkpoint still reaches head.
    ledger.append([other_event(0, 10, "c1"), scrape(1, "2026-03-01T10:00:00")])
    ledger.append([other_event(2, 11, "c1"), other_event(1, 12, "c1")])
    assert runner.catch_up() == 1
    assert runner.checkpoint("capacity") == ledger.head() == 10
    assert con.execute("SELECT position, samples FROM cap_batches").fetchall() == [(8, 3)]


def test_version_bump_resets_and_replays_everything(
    ledger: Ledger, tmp_path: Path, model: ReadModel
) -> None:
    """A projection whose version changed is dropped on Runner construction and replayed."""
    ledger.append([scrape(n, f"2026-03-0{1 + n % 2}T10:{n:02d}:00") for n in range(6)])
    ledger.append([other_event(2, 1, "c1")])
    runner = Runner(ledger, model, [capacity()])
    runner.catch_up()
    con = model.cursor()
    before = table_rows(model, "cap_rollup")
    # Rows the current logic would never write: only a reset removes them.
    con.execute("INSERT INTO cap_rollup (step, scope, cluster) VALUES ('1h', 'bogus', 'c1')")
    con.execute("DELETE FROM cap_node_values")

    class CapacityNext(CapacityProjection):
        version = CapacityProjection.version + 1

    runner = Runner(ledger, model, [CapacityNext()])
    assert runner.checkpoint("capacity") == 0
    assert [(s.version, s.position, s.lag) for s in runner.status()] == [
        (CapacityProjection.version + 1, 0, 7)
    ]
    for table in ("cap_batches", "cap_node_values", "cap_points", "cap_rollup"):
        assert con.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    assert runner.catch_up() == 6
    assert runner.checkpoint("capacity") == 7
    assert table_rows(model, "cap_rollup") == before
    reference = rebuilt(ledger)
    try:
        assert_same_tables(model, reference)
    finally:
        reference.close()
    # Same version again: no reset, nothing to replay.
    runner = Runner(ledger, model, [CapacityNext()])
    assert runner.checkpoint("capacity") == 7
    assert runner.catch_up() == 0


def test_unknown_projection_names_the_known_ones(ledger: Ledger, model: ReadModel) -> None:
    """rebuild/catch_up of an unknown name raise KeyError listing the known projections."""
    runner = Runner(ledger, model, [capacity()])
    with pytest.raises(KeyError, match=r"'nope'.*known: capacity"):
        runner.rebuild(["nope"])
    with pytest.raises(KeyError, match="known: capacity"):
        runner.catch_up(["capacity", "nope"])


def test_rebuild_replays_from_the_start(ledger: Ledger, model: ReadModel) -> None:
    """rebuild() drops the tables and replays every event, ending where catch-up ended."""
    ledger.append([scrape(n, f"2026-03-01T10:{n:02d}:00") for n in range(4)])
    runner = Runner(ledger, model, [capacity(batch_events=3)])
    runner.catch_up()
    before = {t: table_rows(model, t) for t in TABLES}
    model.cursor().execute("DELETE FROM cap_scope_points")
    assert runner.rebuild(["capacity"]) == 4
    assert runner.checkpoint("capacity") == 4
    assert {t: table_rows(model, t) for t in TABLES} == before


# -- one writer ------------------------------------------------------------------------------


def test_second_process_cannot_open_the_read_model(tmp_path: Path) -> None:
    """While another process holds the file, ReadModel raises ReadModelBusy; after, it opens."""
    path = tmp_path / "read.duckdb"
    holder = subprocess.Popen(
        [sys.executable, str(WORKER), "hold", str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline() == "ready\n", holder.stderr and holder.stderr.read()
        with pytest.raises(ReadModelBusy, match="open in another process"):
            ReadModel(path)
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    model = ReadModel(path)
    try:
        assert model.cursor().execute("SELECT 42").fetchone() == (42,)
    finally:
        model.close()


# -- regular scrapes: the fast path of whole days held by one page ----------------------------


def regular_events() -> list[Event]:
    """Hourly events of 5-minute scrapes over 30 h from 20:00, then a late re-sent hour.

    Every event has the same series (one node never reports memory), so a page of them is a
    dense block; the re-sent hour overlaps stored values and must win by ledger position.
    """
    rng = random.Random(3)
    nodes = [(f"node-{i}", f"pool-{i % 2}") for i in range(4)]
    start = us("2026-03-01T20:00:00")
    out: list[Event] = []
    for hour in range(30):
        rows: list[tuple[str, dict[str, str], int, float]] = []
        for k in range(12):
            t = start + hour * HOUR_US + k * 300_000_000
            for i, (node, pool) in enumerate(nodes):
                labels = node_labels(node, pool)
                rows += [
                    ("node_cpu_allocatable_cores", labels, t, 4.0),
                    ("node_cpu_usage_cores", labels, t, rng.uniform(0, 4)),
                ]
                if i != 3:
                    rows += [
                        ("node_memory_allocatable_bytes", labels, t, 16e9),
                        ("node_memory_usage_bytes", labels, t, rng.uniform(0, 16e9)),
                    ]
        out.append(samples(f"hour-{hour}", "regular", rows))
    resent = out[5].samples
    assert resent is not None
    late = [r for r in resent.to_data()["samples"] if r["labels"]["node"] == "node-1"]
    rows = [(r["name"], r["labels"], us(r["ts"][:-1]), r["value"] / 2) for r in late]
    out.append(samples("hour-5-again", "regular", rows))
    return out


@pytest.mark.parametrize("batch", [1, 5, 7, 13])
def test_regular_scrapes_in_any_batches_equal_a_rebuild(
    migrated_template: Path, tmp_path: Path, batch: int
) -> None:
    """Pages of whole days (rolled up from the page's arrays) and pages straddling stored days
    (rolled up from the table) end where a rebuild ends, and match the SQL oracle."""
    _, ledger = new_ledger(migrated_template, tmp_path)
    try:
        ledger.append(regular_events())
        model = ReadModel(tmp_path / "read.duckdb")
        reference = rebuilt(ledger)
        try:
            Runner(ledger, model, [capacity(batch_events=batch)]).catch_up()
            assert_invariants(model)
            assert_invariants(reference)
            assert_same_tables(model, reference)
            halved = model.cursor().execute(
                "SELECT count(*) FROM cap_node_values v JOIN cap_members m USING (member_id) "
                "WHERE m.node = 'node-1' AND v.cpu_a = 2.0"
            )
            assert halved.fetchone() == (12,), "the re-sent hour must win"
        finally:
            reference.close()
            model.close()
    finally:
        ledger.engine.dispose()


def test_arrow_page_is_the_data_the_values_hold(ledger: Ledger, model: ReadModel) -> None:
    """arrow_page (the benchmark's bulk-insert baseline) is the per-sample data folded in:
    pivoted, latest ledger position first, it is exactly the values tables."""
    ledger.append(crash_ledger_events(5))
    projection = capacity()
    Runner(ledger, model, [projection]).catch_up()
    con = model.cursor()
    con.begin()  # arrow_page resolves members inside the caller's transaction
    table = projection.arrow_page(con, list(ledger.iter_all()))
    con.rollback()
    assert table is not None
    assert table.num_rows == sum(capacity_samples_upto(ledger).values())
    con.register("page", table)
    for kind, codes in (("cap_node_values", range(1, 5)), ("cap_ns_values", range(11, 16))):
        cols = [c for c in TABLES[kind] if c not in NAMES and c != "ts"]
        pivot = ", ".join(
            f"arg_max(value, position) FILTER (metric = {code}) AS {c}"
            for code, c in zip(codes, cols, strict=True)
        )
        diff = con.execute(
            f"SELECT count(*) FROM ((SELECT member_id, ts, {pivot} FROM page "
            f"WHERE metric IN {tuple(codes)} GROUP BY ALL) "
            f"EXCEPT ALL (SELECT member_id, ts, {', '.join(cols)} FROM {kind}))"
        ).fetchone()
        assert diff == (0,), kind
