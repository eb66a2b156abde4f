"""Sustained runs: the numpy `sustained` against the SQL it replaced, on projected read models.

Histories go through the real path (samples events in a SQLite ledger, the capacity projection
caught up by the Runner), so the oracle reads the same `cap_points` view the old code did.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.capacity.hotspots import sustained
from analytics.capacity.projection import CapacityProjection
from analytics.readmodel.model import ReadModel
from analytics.readmodel.runner import Runner
from analytics.thresholds import SUSTAINED_MAX_GAP as MAX_GAP
from analytics.thresholds import SUSTAINED_MIN
from analytics.thresholds import SUSTAINED_UTILIZATION as SUSTAINED_THRESHOLD
from store.contract import Event, batch_from_columns, samples_event
from store.ledger import Ledger
from store.migrate import upgrade

T0 = datetime(2026, 9, 1)
STEP = timedelta(minutes=5)
EPOCH = datetime(1970, 1, 1)
CPU_USAGE, CPU_ALLOC = "node_cpu_usage_cores", "node_cpu_allocatable_cores"
MEM_USAGE, MEM_ALLOC = "node_memory_usage_bytes", "node_memory_allocatable_bytes"
MEMORY = float(2**35)

# -- the oracle: the SQL `sustained` ran before it moved to numpy, verbatim --------------------

_SUSTAINED = """
WITH p AS (
    SELECT cluster, scope, nodepool, node, resource, ts, usage / allocatable AS u
    FROM cap_points
    WHERE scope IN ('cluster', 'nodepool', 'node') AND resource IN ('cpu', 'memory')
      AND allocatable > 0 AND usage IS NOT NULL AND ts >= ? AND ts < ? {cluster}
),
f AS (
    SELECT *, u > ? AS hot,
        lag(ts) OVER w AS prev_ts,
        lag(u > ?) OVER w AS prev_hot
    FROM p
    WINDOW w AS (PARTITION BY cluster, scope, nodepool, node, resource ORDER BY ts)
),
g AS (
    SELECT *, sum(CASE WHEN hot AND (prev_hot IS DISTINCT FROM TRUE OR ts - prev_ts > ?)
                       THEN 1 ELSE 0 END)
              OVER (PARTITION BY cluster, scope, nodepool, node, resource ORDER BY ts) AS run
    FROM f
)
SELECT cluster, scope, nodepool, node, resource, min(ts) AS start, max(ts) AS "end",
       avg(u) AS utilization_avg, max(u) AS utilization_max, count(*) AS samples
FROM g WHERE hot
GROUP BY cluster, scope, nodepool, node, resource, run
HAVING max(ts) - min(ts) >= ?
ORDER BY start, cluster, scope, nodepool NULLS FIRST, node NULLS FIRST, resource
"""


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def oracle(
    con: duckdb.DuckDBPyConnection, start: datetime, end: datetime, cluster: str | None = None
) -> list[dict[str, Any]]:
    """The old `sustained`, body and all."""
    params: list[Any] = [start, end]
    clause = ""
    if cluster is not None:
        clause, params = "AND cluster = ?", [*params, cluster]
    params += [SUSTAINED_THRESHOLD, SUSTAINED_THRESHOLD, MAX_GAP, SUSTAINED_MIN]
    rows = con.execute(_SUSTAINED.format(cluster=clause), params).fetchall()
    return [
        {
            "cluster": r[0],
            "scope": r[1],
            "nodepool": r[2],
            "node": r[3],
            "resource": r[4],
            "start": _iso(r[5]),
            "end": _iso(r[6]),
            "duration_seconds": (r[6] - r[5]).total_seconds(),
            "utilization_avg": r[7],
            "utilization_max": r[8],
            "samples": r[9],
        }
        for r in rows
    ]


def approx(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs with their utilisations compared to the last bits (summation order)."""
    return [
        {
            **r,
            "utilization_avg": pytest.approx(r["utilization_avg"], rel=1e-12),
            "utilization_max": pytest.approx(r["utilization_max"], rel=1e-12),
        }
        for r in runs
    ]


# -- read models built by the capacity projection ----------------------------------------------

Sample = tuple[str, dict[str, str], datetime, float]


def us(t: datetime) -> int:
    return (t - EPOCH) // timedelta(microseconds=1)


def labels(node: str | None, pool: str | None) -> dict[str, str]:
    """A node's labels; None leaves the label out (the member's node or node pool is NULL)."""
    return {k: v for k, v in (("node", node), ("nodepool", pool), ("zone", "z1")) if v is not None}


def event(event_id: str, cluster: str, samples: Sequence[Sample]) -> Event:
    """One samples event of a cluster."""
    series: list[tuple[str, dict[str, str]]] = []
    index: dict[tuple[str, str], int] = {}
    keys = [(name, repr(sorted(lab.items()))) for name, lab, _, _ in samples]
    for key, (name, lab, _, _) in zip(keys, samples, strict=True):
        if key not in index:
            index[key] = len(series)
            series.append((name, lab))
    batch = batch_from_columns(
        series,
        [index[key] for key in keys],
        [us(t) for _, _, t, _ in samples],
        [v for _, _, _, v in samples],
    )
    first = min(us(t) for _, _, t, _ in samples)
    return samples_event("//test/samples", event_id, first, cluster, batch)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty SQLite ledger to copy."""
    path = tmp_path_factory.mktemp("template") / "ledger.db"
    upgrade(f"sqlite:///{path}")
    return path


@contextmanager
def read_model(template: Path, events: Sequence[Event]) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read model the capacity projection built from the events, in a fresh ledger."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.db"
        shutil.copy(template, path)
        ledger = Ledger.from_url(f"sqlite:///{path}")
        model = ReadModel(":memory:")
        try:
            ledger.append(list(events))
            Runner(ledger, model, [CapacityProjection()]).catch_up()
            yield model.cursor()
        finally:
            model.close()
            ledger.engine.dispose()


# -- generated histories -----------------------------------------------------------------------

# Utilisation levels on both sides of 0.85 and exactly at it (8.5 / 10 is 0.85, not above).
LEVELS = (0.3, 0.84, 0.85, 0.8500001, 0.9, 1.0, 1.3)
# What a stretch of samples lacks: nothing, everything (a gap), or one figure.
FAULTS = (
    "none",
    "none",
    "none",
    "gap",
    "no_cpu_usage",
    "no_cpu_allocatable",
    "cpu_allocatable_zero",
    "no_memory",
    "no_memory_usage",
)
# Which samples of a stretch have its fault: with "two in three" a gap leaves holes of exactly
# MAX_GAP between samples, with "every third" holes of 10 minutes.
PATTERNS = {
    "all": lambda i: True,
    "every third": lambda i: i % 3 == 2,
    "two in three": lambda i: i % 3 != 0,
}
# A stretch: samples, cpu and memory level, fault and its pattern, and how many seconds its first
# sample is off the 5-minute grid (so holes and runs fall a second either side of 15 minutes
# and of an hour).
stretches = st.tuples(
    st.one_of(st.sampled_from((1, 2, 3, 12, 13)), st.integers(1, 14)),
    st.sampled_from(LEVELS),
    st.sampled_from(LEVELS),
    st.sampled_from(FAULTS),
    st.sampled_from(sorted(PATTERNS)),
    st.sampled_from((0, 0, 0, -1, 1)),
)
# Nodes as (cluster, node pool, name); a None label is left out, as a scrape may leave it.
nodes = st.lists(
    st.tuples(
        st.sampled_from(("c1", "c2")),
        st.sampled_from(("p1", "p2", None)),
        st.sampled_from(("n1", "n2", "n3", None)),
    ),
    min_size=1,
    max_size=5,
    unique=True,
)


def node_samples(
    node: tuple[str, str | None, str | None], offset: int, cores: float, plan: list[Any]
) -> list[Sample]:
    """A node's samples, stretch after stretch, from `offset` steps after T0."""
    _, pool, name = node
    lab = labels(name, pool)
    out: list[Sample] = []
    k = offset
    for length, cpu, mem, stretch_fault, pattern, jitter in plan:
        for i in range(length):
            t = T0 + k * STEP + timedelta(seconds=0 if i else jitter)
            k += 1
            fault = stretch_fault if PATTERNS[pattern](i) else "none"
            if fault == "gap":
                continue
            if fault != "no_cpu_usage":
                out.append((CPU_USAGE, lab, t, cpu * cores))
            if fault != "no_cpu_allocatable":
                out.append((CPU_ALLOC, lab, t, 0.0 if fault == "cpu_allocatable_zero" else cores))
            if fault != "no_memory":
                if fault != "no_memory_usage":
                    out.append((MEM_USAGE, lab, t, mem * MEMORY))
                out.append((MEM_ALLOC, lab, t, MEMORY))
    return out


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    """Samples of a few nodes in two clusters, each cluster's sent in one or two events."""
    # Nodes share plans, often in step: runs that start together are ordered by their keys.
    plans = draw(st.lists(st.lists(stretches, min_size=1, max_size=8), min_size=1, max_size=3))
    by_cluster: dict[str, list[Sample]] = {}
    for node in draw(nodes):
        offset = draw(st.sampled_from((0, 0, 1, 3)))
        cores = draw(st.sampled_from((4.0, 10.0)))
        plan = draw(st.sampled_from(plans))
        by_cluster.setdefault(node[0], []).extend(node_samples(node, offset, cores, plan))
    events = []
    for cluster, samples in sorted(by_cluster.items()):
        split = T0 + draw(st.integers(0, 60)) * STEP
        for i, part in enumerate(
            ([s for s in samples if s[2] < split], [s for s in samples if s[2] >= split])
        ):
            if part:
                events.append(event(f"{cluster}-{i}", cluster, part))
    return events


@st.composite
def windows(draw: st.DrawFn) -> tuple[datetime, datetime]:
    """A query window, mostly cutting into the runs of a history (it starts near T0)."""
    start = T0 + draw(st.integers(0, 30)) * STEP + timedelta(seconds=draw(st.sampled_from((0, 1))))
    return start, T0 + draw(st.integers(10, 70)) * STEP


@pytest.mark.slow
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(events=histories(), window=windows())
def test_sustained_equals_the_sql_it_replaced(
    template: Path, events: list[Event], window: tuple[datetime, datetime]
) -> None:
    """Every run, in the same order, over the whole history and a window cutting into it."""
    with read_model(template, events) as con:
        for start, end in ((T0 - timedelta(days=1), T0 + timedelta(days=1)), window):
            for cluster in (None, "c1", "c2", "c3"):
                expected = oracle(con, start, end, cluster)
                assert sustained(con, start, end, cluster) == approx(expected)


# -- a history whose runs are worked out by hand -----------------------------------------------


def at(k: int, seconds: int = 0) -> datetime:
    return T0 + k * STEP + timedelta(seconds=seconds)


def hand_built() -> list[Event]:
    """c1/p1/n1: CPU only, 10 cores; c2/p2/n2: memory only. Steps k are 5 minutes apart."""
    n1 = labels("n1", "p1")
    cpu = {k: 0.9 for k in range(13)} | {6: 1.2, 13: 0.85} | {k: 0.9 for k in range(14, 26)}
    cpu |= {26: 0.5} | {k: 0.95 for k in range(27, 41) if k not in (30, 31)} | {41: 0.2}
    cpu |= {k: 1.0 for k in range(42, 55) if k not in (48, 49, 50)} | {55: 0.3}
    cpu |= {k: 0.9 for k in range(56, 71)} | {71: 0.3}
    c1: list[Sample] = []
    for k, level in cpu.items():
        if k != 35:  # usage missing, allocatable reported: not a point, and no hole either
            c1.append((CPU_USAGE, n1, at(k), level * 10.0))
        if k != 66:  # allocatable missing: not a point
            c1.append((CPU_ALLOC, n1, at(k), 0.0 if k == 63 else 10.0))
    n2 = labels("n2", "p2")
    c2: list[Sample] = []
    for t, level in [(at(k), 0.9) for k in range(13)] + [(at(13), 0.5)]:
        c2 += [(MEM_USAGE, n2, t, level * MEMORY), (MEM_ALLOC, n2, t, MEMORY)]
    # Hot from 01:40 to 02:39:59: a second short of an hour.
    for t in [*(at(k) for k in range(20, 32)), at(32, -1)]:
        c2 += [(MEM_USAGE, n2, t, 0.9 * MEMORY), (MEM_ALLOC, n2, t, MEMORY)]
    c2 += [(MEM_USAGE, n2, at(33), 0.1 * MEMORY), (MEM_ALLOC, n2, at(33), MEMORY)]
    return [event("c1", "c1", c1), event("c2", "c2", c2)]


def runs(
    member: str, resource: str, span: str, seconds: float, *figures: Any
) -> list[dict[str, Any]]:
    """A run as the cluster, its node pool and its node (their only node) each have it.

    `member` is "cluster/nodepool/node", `span` "HH:MM:SS-HH:MM:SS" on T0's day and `figures`
    the average and peak utilisation and the number of samples.
    """
    cluster, nodepool, node = member.split("/")
    start, end = span.split("-")
    avg, peak, samples = figures
    return [
        {
            "cluster": cluster,
            "scope": scope,
            "nodepool": pool,
            "node": name,
            "resource": resource,
            "start": f"2026-09-01T{start}Z",
            "end": f"2026-09-01T{end}Z",
            "duration_seconds": seconds,
            "utilization_avg": pytest.approx(avg, rel=1e-12),
            "utilization_max": pytest.approx(peak, rel=1e-12),
            "samples": samples,
        }
        for scope, pool, name in (
            ("cluster", None, None),
            ("node", nodepool, node),
            ("nodepool", nodepool, None),
        )
    ]


def test_sustained_runs_of_a_hand_built_history(template: Path) -> None:
    # c1 CPU: 00:00-01:00 hot (13 samples, one at 1.2: exactly an hour, kept); 01:05 at exactly
    # 0.85 ends it; 01:10-02:05 hot (55 min, dropped). 02:15-03:20 hot with a 15-minute hole
    # (not over 15: one run) and a sample without usage: 14 steps - 3 = 11 samples. 03:30-04:30
    # hot but a 20-minute hole splits it in two short runs. 04:40-05:50 hot, with one sample of
    # allocatable 0 and one without allocatable, neither a point: 15 - 2 = 13 samples.
    # c2 memory: 00:00-01:00 hot (kept); 01:40-02:39:59 hot, a second short (dropped).
    first = runs("c1/p1/n1", "cpu", "00:00:00-01:00:00", 3600.0, 12 / 13, 1.2, 13)
    second = runs("c2/p2/n2", "memory", "00:00:00-01:00:00", 3600.0, 0.9, 0.9, 13)
    third = runs("c1/p1/n1", "cpu", "02:15:00-03:20:00", 3900.0, 0.95, 0.95, 11)
    fourth = runs("c1/p1/n1", "cpu", "04:40:00-05:50:00", 4200.0, 0.9, 0.9, 13)
    day = (T0, T0 + timedelta(days=1))
    with read_model(template, hand_built()) as con:
        assert sustained(con, *day) == first + second + third + fourth
        assert sustained(con, *day, cluster="c2") == second
        assert sustained(con, *day, cluster="c3") == []
        # From 00:30 the first runs last 30 minutes; before 03:20 (exclusive) the third ends at
        # 03:15, still an hour long, with 10 samples.
        cut = runs("c1/p1/n1", "cpu", "02:15:00-03:15:00", 3600.0, 0.95, 0.95, 10)
        assert sustained(con, at(6), at(40)) == cut
        # Inside a caller's transaction (the report's snapshot) sustained() reads that snapshot
        # and leaves the transaction open; outside one it leaves none behind.
        con.begin()
        assert sustained(con, *day) == first + second + third + fourth
        con.rollback()
        con.begin()
        con.rollback()
