"""Capacity rollups against numbers computed independently: real NAB CPU traces and a hand case.

Capacity (docs/metrics.md): a scope sums its members at each timestamp, ratios are taken per
timestamp, then avg / p95 (linear interpolation) / max over the timestamps of each
[start, start + step) UTC bucket.
"""

from __future__ import annotations

import calendar
import csv
import math
import random
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

from analytics.capacity.projection import CapacityProjection
from analytics.capacity.rollups import _avg_p95_max
from analytics.capacity.trends import POINT_FIELDS, trends
from analytics.readmodel.model import ReadModel
from analytics.readmodel.runner import Runner
from store.contract import Event, batch_from_columns, samples_event
from store.ledger import Ledger

NAB = Path("/work/shared/data/nab")
NAB_NODES = {
    "ec2_cpu_utilization_5f5533": "general",
    "ec2_cpu_utilization_825cc2": "general",
    "ec2_cpu_utilization_ac20cd": "general",
    "rds_cpu_utilization_cc0c53": "db",
}
CORES = 4.0
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
STEPS = {"1h": HOUR_US, "1d": DAY_US}
FIELDS = (*POINT_FIELDS, "points")


def us(text: str) -> int:
    """UTC microseconds of a naive ISO timestamp."""
    return calendar.timegm(datetime.fromisoformat(text).timetuple()) * 1_000_000


def close(a: Any, b: Any) -> bool:
    """Equal; floats to 1e-9 relative (DuckDB may sum the same doubles in another order)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-300)
    return a == b


@pytest.fixture
def ledger(sqlite_ledger: Ledger) -> Ledger:
    """SQLite only: the rollups are DuckDB's work, whatever the ledger's backend."""
    return sqlite_ledger


@pytest.fixture
def model(tmp_path: Path) -> Iterator[ReadModel]:
    """A fresh read model file."""
    m = ReadModel(tmp_path / "read.duckdb")
    try:
        yield m
    finally:
        m.close()


def catch_up(ledger: Ledger, model: ReadModel, batch_events: int) -> None:
    """Fold the whole ledger into the capacity tables, a few events per transaction."""
    projection = CapacityProjection()
    projection.batch_events = batch_events
    runner = Runner(ledger, model, [projection])
    runner.catch_up()
    assert runner.checkpoint("capacity") == ledger.head()


def rollups(
    model: ReadModel, cluster: str, resource: str
) -> dict[tuple[str, str, str | None, str | None, str | None, int], dict[str, Any]]:
    """cap_rollup rows of a cluster and resource by (step, scope, pool, node, namespace, t µs)."""
    rows = (
        model.cursor()
        .execute(
            "SELECT step, scope, nodepool, node, namespace, epoch_us(t), "
            + ", ".join(FIELDS)
            + " FROM cap_rollup WHERE cluster = ? AND resource = ?",
            [cluster, resource],
        )
        .fetchall()
    )
    out: dict[tuple[str, str, str | None, str | None, str | None, int], dict[str, Any]] = {}
    for row in rows:
        key = (row[0], row[1], row[2], row[3], row[4], int(row[5]))
        assert key not in out, f"two rollup rows for {key}"
        out[key] = dict(zip(FIELDS, row[6:], strict=True))
    return out


# -- NAB: real CloudWatch CPU traces as four nodes in two pools -----------------------------


def read_nab(stem: str) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps in UTC µs, CPU %) of one NAB file, as they are."""
    with (NAB / f"{stem}.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    ts = np.array([us(r["timestamp"]) for r in rows], dtype=np.int64)
    pct = np.array([float(r["value"]) for r in rows], dtype=np.float64)
    return ts, pct


def nab_events() -> list[Event]:
    """Each file as one node's usage (value/100 × 4 cores) and allocatable, in chunks, shuffled."""
    events: list[Event] = []
    for stem, pool in NAB_NODES.items():
        ts, pct = read_nab(stem)
        usage = pct / 100.0 * CORES
        labels = {"node": stem, "nodepool": pool, "zone": "us-east-1a"}
        series = [("node_cpu_usage_cores", labels), ("node_cpu_allocatable_cores", labels)]
        for k, at in enumerate(range(0, len(ts), 500)):
            t = ts[at : at + 500]
            batch = batch_from_columns(
                series,
                np.concatenate([np.zeros(len(t)), np.ones(len(t))]).astype(np.int64),
                np.concatenate([t, t]),
                np.concatenate([usage[at : at + 500], np.full(len(t), CORES)]),
            )
            events.append(
                samples_event("//nab.test/cloudwatch", f"{stem}-{k}", int(t[-1]), "nab", batch)
            )
    random.Random(7).shuffle(events)  # arrival order must not matter
    return events


def expected_nab() -> dict[
    tuple[str, str, str | None, str | None, str | None, int], dict[str, Any]
]:
    """The rollups computed here with numpy alone, straight from the CSVs."""
    members: dict[tuple[str, str | None, str | None], list[str]] = {("cluster", None, None): []}
    for stem, pool in NAB_NODES.items():
        members[("node", pool, stem)] = [stem]
        members.setdefault(("nodepool", pool, None), []).append(stem)
        members[("cluster", None, None)].append(stem)
    traces = {stem: read_nab(stem) for stem in NAB_NODES}
    out: dict[tuple[str, str, str | None, str | None, str | None, int], dict[str, Any]] = {}
    for (scope, pool, node), stems in members.items():
        ts_all = np.concatenate([traces[s][0] for s in stems])
        usage_all = np.concatenate([traces[s][1] / 100.0 * CORES for s in stems])
        # Per timestamp: the sum over the members present at that timestamp.
        stamps, inverse = np.unique(ts_all, return_inverse=True)
        usage = np.zeros(len(stamps))
        np.add.at(usage, inverse, usage_all)
        present = np.bincount(inverse, minlength=len(stamps)).astype(np.float64)
        alloc = present * CORES
        util = usage / alloc
        for step, width in STEPS.items():
            buckets = stamps - stamps % width
            for b in np.unique(buckets):
                sel = buckets == b
                out[(step, scope, pool, node, None, int(b))] = {
                    "usage_avg": float(np.mean(usage[sel])),
                    "usage_p95": float(np.percentile(usage[sel], 95)),
                    "usage_max": float(np.max(usage[sel])),
                    "requests_avg": None,
                    "allocatable_avg": float(np.mean(alloc[sel])),
                    "utilization_avg": float(np.mean(util[sel])),
                    "utilization_p95": float(np.percentile(util[sel], 95)),
                    "commitment_avg": None,
                    "points": int(sel.sum()),
                    # The 'nodes' resource: members reporting, per timestamp.
                    "nodes_avg": float(np.mean(present[sel])),
                    "nodes_max": float(np.max(present[sel])),
                }
    return out


def test_nab_traces_share_only_some_timestamps() -> None:
    """The premise of the scope sums: the files overlap in time only partly and unevenly."""
    stamps = {stem: set(read_nab(stem)[0].tolist()) for stem in NAB_NODES}
    ec2 = [s for s in NAB_NODES if NAB_NODES[s] == "general"]
    # Two EC2 traces share many exact timestamps, the third shares none with them.
    assert len(stamps[ec2[1]] & stamps[ec2[2]]) > 1000
    assert not stamps[ec2[0]] & (stamps[ec2[1]] | stamps[ec2[2]])
    assert not stamps["rds_cpu_utilization_cc0c53"] & stamps[ec2[0]]


@pytest.mark.slow
def test_nab_rollups_match_numpy(ledger: Ledger, model: ReadModel) -> None:
    """Hourly and daily cpu rollups per node, pool and cluster equal numpy's, to 1e-9."""
    ledger.append(nab_events())
    catch_up(ledger, model, batch_events=5)
    want = expected_nab()
    got = rollups(model, "nab", "cpu")
    assert set(got) == set(want)
    assert len(got) > 2000
    mismatches = []
    for key, w in sorted(want.items(), key=repr):
        g = got[key]
        for f in FIELDS:
            if not close(g[f], w[f]):
                mismatches.append((key, f, g[f], w[f]))
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[:5]}"

    nodes = rollups(model, "nab", "nodes")
    want_nodes = {k: v for k, v in want.items() if k[1] in ("nodepool", "cluster")}
    assert set(nodes) == set(want_nodes)
    for key, w in want_nodes.items():
        g = nodes[key]
        assert close(g["usage_avg"], w["nodes_avg"]), (key, g, w)
        assert close(g["usage_max"], w["nodes_max"]), (key, g, w)
        assert g["points"] == w["points"], (key, g, w)


def test_nab_resource_never_reported_has_no_points(ledger: Ledger, model: ReadModel) -> None:
    """CloudWatch gives CPU only: no memory point or rollup may claim timestamps it never saw.

    Each point is a scope's value at one timestamp; a row with no usage, requests or
    allocatable at all is not a point, and counting such rows makes `points` claim data there
    is none of (a memory trend of all-null values, 12 "points" an hour).
    """
    ledger.append([e for e in nab_events() if e.id.startswith("rds_")])
    catch_up(ledger, model, batch_events=200)
    con = model.cursor()
    empty_points = con.execute(
        "SELECT scope, resource, count(*) FROM cap_points "
        "WHERE usage IS NULL AND requests IS NULL AND allocatable IS NULL GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    empty_rollups = con.execute(
        "SELECT step, scope, resource, count(*), sum(points) FROM cap_rollup "
        "WHERE usage_avg IS NULL AND requests_avg IS NULL AND allocatable_avg IS NULL "
        "GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert (empty_points, empty_rollups) == ([], [])


def test_nab_trend_query_returns_the_rollups(ledger: Ledger, model: ReadModel) -> None:
    """analytics.capacity.trends gives the same numbers, one series per node pool, in time order."""
    ledger.append(nab_events())
    catch_up(ledger, model, batch_events=40)
    want = expected_nab()
    # [start, end): the window cuts the db trace, which runs to 2014-02-28 14:30.
    start, end = us("2014-02-20T00:00:00"), us("2014-04-30T00:00:00")
    series = trends(
        model.cursor(),
        "cpu",
        "nodepool",
        "1h",
        datetime.fromtimestamp(start / 1e6, UTC).replace(tzinfo=None),
        datetime.fromtimestamp(end / 1e6, UTC).replace(tzinfo=None),
        cluster="nab",
    )
    assert [s["key"] for s in series] == [
        {"cluster": "nab", "nodepool": "db"},
        {"cluster": "nab", "nodepool": "general"},
    ]
    for s in series:
        pool = s["key"]["nodepool"]
        expected = sorted(
            (k[5], v)
            for k, v in want.items()
            if k[:3] == ("1h", "nodepool", pool) and start <= k[5] < end
        )
        assert len(s["points"]) == len(expected) > 100
        for point, (t, w) in zip(s["points"], expected, strict=True):
            stamp = datetime.fromtimestamp(t / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            assert point["t"] == stamp
            for f in FIELDS[:-1]:
                assert close(point[f], w[f]), (pool, f, point, w)


# -- a hand case: namespaces, commitment, the 'nodes' and 'pods' resources ------------------

T0, T1, T2 = "2026-01-05T10:00:00", "2026-01-05T10:30:00", "2026-01-05T11:00:00"
T3 = "2026-01-06T00:00:00"  # the next UTC day


NODE_METRICS_ORDER = (
    "node_cpu_usage_cores",
    "node_cpu_allocatable_cores",
    "node_memory_usage_bytes",
    "node_memory_allocatable_bytes",
)
NS_METRICS_ORDER = (
    "namespace_cpu_usage_cores",
    "namespace_cpu_requests_cores",
    "namespace_memory_usage_bytes",
    "namespace_memory_requests_bytes",
    "namespace_pod_count",
)
NODE_POOLS = {"n1": "a", "n2": "a", "n3": "b"}
# ts -> node -> (cpu usage, cpu allocatable, memory usage, memory allocatable)
# n2 misses T1; only n1 reports at T3.
NODE_SAMPLES: dict[str, dict[str, tuple[float, ...]]] = {
    T0: {"n1": (1, 4, 8, 16), "n2": (2, 4, 4, 16), "n3": (4, 8, 16, 32)},
    T1: {"n1": (3, 4, 8, 16), "n3": (2, 8, 8, 32)},
    T2: {"n1": (2, 4, 4, 16), "n2": (2, 4, 4, 16), "n3": (6, 8, 8, 32)},
    T3: {"n1": (1, 4, 2, 16)},
}
# ts -> namespace -> (cpu usage, cpu requests, memory usage, memory requests, pods)
NS_SAMPLES: dict[str, dict[str, tuple[float, ...]]] = {
    T0: {"web": (1, 2, 4, 8, 3), "db": (2, 4, 8, 16, 1)},
    T1: {"web": (2, 2, 4, 8, 4), "db": (1, 4, 8, 16, 1)},
    T2: {"web": (3, 4, 4, 8, 5), "db": (1, 4, 8, 16, 2)},  # web's cpu requests re-sent as 6
}


def hand_events() -> list[Event]:
    """The tables above as samples events, plus a stale and a re-sent sample."""

    def node(name: str) -> dict[str, str]:
        return {"node": name, "nodepool": NODE_POOLS[name], "zone": "z1"}

    def nodes_at(*stamps: str) -> list[tuple[str, dict[str, str], str, float]]:
        return [
            (metric, node(n), t, value)
            for t in stamps
            for n, values in NODE_SAMPLES[t].items()
            for metric, value in zip(NODE_METRICS_ORDER, values, strict=True)
        ]

    namespaces = [
        (metric, {"namespace": ns}, t, value)
        for t, by_ns in NS_SAMPLES.items()
        for ns, values in by_ns.items()
        for metric, value in zip(NS_METRICS_ORDER, values, strict=True)
    ]
    rows = [
        # A stale value of n1 at T0, superseded by the later event (1 core, not 100).
        [("node_cpu_usage_cores", node("n1"), T0, 100.0)],
        nodes_at(T0, T1),
        namespaces,
        nodes_at(T2, T3),
        # web's cpu requests at T2 re-sent: 6 replaces 4.
        [("namespace_cpu_requests_cores", {"namespace": "web"}, T2, 6.0)],
    ]
    return [event(f"hand-{i}", r) for i, r in enumerate(rows)]


def event(event_id: str, rows: Sequence[tuple[str, dict[str, str], str, float]]) -> Event:
    """A samples event of cluster 'hand' from (metric, labels, naive UTC ts, value) rows."""
    series: list[tuple[str, dict[str, str]]] = []
    index = []
    for name, labels, _, _ in rows:
        if (name, labels) not in series:
            series.append((name, labels))
        index.append(series.index((name, labels)))
    ts = [us(r[2]) for r in rows]
    batch = batch_from_columns(series, index, ts, [float(r[3]) for r in rows])
    return samples_event("//hand.test/prometheus", event_id, max(ts), "hand", batch)


def p95(values: Sequence[float]) -> float:
    """The 95th percentile with linear interpolation, by hand: rank 0.95·(n−1)."""
    v = sorted(values)
    rank = 0.95 * (len(v) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (rank - lo) * (v[hi] - v[lo])


def mean(values: Sequence[float]) -> float | None:
    """The mean, or None (SQL's avg) when there is nothing to average."""
    return sum(values) / len(values) if values else None


# Per scope member and resource, per timestamp: (usage, requests, allocatable) as worked out by
# hand from hand_events(). Key: (scope, resource, nodepool, node, namespace).
Point = tuple[float, float | None, float | None]
HAND_POINTS: dict[tuple[str, str, str | None, str | None, str | None], dict[str, Point]] = {
    # Cluster: node sums (n2 missing at T1, only n1 at T3) and namespace request sums (web's
    # re-sent 6 at T2; no namespace reports at T3).
    ("cluster", "cpu", None, None, None): {
        T0: (7, 6, 16),
        T1: (5, 6, 12),
        T2: (10, 10, 16),
        T3: (1, None, 4),
    },
    ("cluster", "memory", None, None, None): {
        T0: (28, 24, 64),
        T1: (16, 24, 48),
        T2: (16, 24, 64),
        T3: (2, None, 16),
    },
    ("cluster", "nodes", None, None, None): {
        T0: (3, None, None),
        T1: (2, None, None),
        T2: (3, None, None),
        T3: (1, None, None),
    },
    ("cluster", "pods", None, None, None): {
        T0: (4, None, None),
        T1: (5, None, None),
        T2: (7, None, None),
    },
    ("nodepool", "cpu", "a", None, None): {
        T0: (3, None, 8),
        T1: (3, None, 4),
        T2: (4, None, 8),
        T3: (1, None, 4),
    },
    ("nodepool", "memory", "a", None, None): {
        T0: (12, None, 32),
        T1: (8, None, 16),
        T2: (8, None, 32),
        T3: (2, None, 16),
    },
    ("nodepool", "nodes", "a", None, None): {
        T0: (2, None, None),
        T1: (1, None, None),
        T2: (2, None, None),
        T3: (1, None, None),
    },
    ("nodepool", "cpu", "b", None, None): {T0: (4, None, 8), T1: (2, None, 8), T2: (6, None, 8)},
    ("nodepool", "memory", "b", None, None): {
        T0: (16, None, 32),
        T1: (8, None, 32),
        T2: (8, None, 32),
    },
    ("nodepool", "nodes", "b", None, None): {
        T0: (1, None, None),
        T1: (1, None, None),
        T2: (1, None, None),
    },
    # n1 at T0 is 1 core: the later event wins over the stale 100.
    ("node", "cpu", "a", "n1", None): {
        T0: (1, None, 4),
        T1: (3, None, 4),
        T2: (2, None, 4),
        T3: (1, None, 4),
    },
    ("node", "memory", "a", "n1", None): {
        T0: (8, None, 16),
        T1: (8, None, 16),
        T2: (4, None, 16),
        T3: (2, None, 16),
    },
    ("node", "cpu", "a", "n2", None): {T0: (2, None, 4), T2: (2, None, 4)},
    ("node", "memory", "a", "n2", None): {T0: (4, None, 16), T2: (4, None, 16)},
    ("node", "cpu", "b", "n3", None): {T0: (4, None, 8), T1: (2, None, 8), T2: (6, None, 8)},
    ("node", "memory", "b", "n3", None): {T0: (16, None, 32), T1: (8, None, 32), T2: (8, None, 32)},
    # Namespaces: allocatable is the cluster's node allocatable at the same timestamp.
    ("namespace", "cpu", None, None, "web"): {T0: (1, 2, 16), T1: (2, 2, 12), T2: (3, 6, 16)},
    ("namespace", "cpu", None, None, "db"): {T0: (2, 4, 16), T1: (1, 4, 12), T2: (1, 4, 16)},
    ("namespace", "memory", None, None, "web"): {T0: (4, 8, 64), T1: (4, 8, 48), T2: (4, 8, 64)},
    ("namespace", "memory", None, None, "db"): {T0: (8, 16, 64), T1: (8, 16, 48), T2: (8, 16, 64)},
    ("namespace", "pods", None, None, "web"): {
        T0: (3, None, None),
        T1: (4, None, None),
        T2: (5, None, None),
    },
    ("namespace", "pods", None, None, "db"): {
        T0: (1, None, None),
        T1: (1, None, None),
        T2: (2, None, None),
    },
}


def hand_rollups() -> dict[tuple[Any, ...], dict[str, Any]]:
    """The rollups of HAND_POINTS: avg / p95 / max over the timestamps of each UTC bucket."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for (scope, resource, pool, node, ns), points in HAND_POINTS.items():
        for step, width in STEPS.items():
            buckets: dict[int, list[Point]] = {}
            for t, point in points.items():
                buckets.setdefault(us(t) - us(t) % width, []).append(point)
            for start, pts in buckets.items():
                usage = [float(u) for u, _, _ in pts]
                req = [float(r) for _, r, _ in pts if r is not None]
                alloc = [float(a) for _, _, a in pts if a is not None]
                util = [u / a for u, _, a in pts if a]
                commit = [r / a for _, r, a in pts if r is not None and a]
                out[(step, scope, resource, pool, node, ns, start)] = {
                    "usage_avg": mean(usage),
                    "usage_p95": p95(usage),
                    "usage_max": max(usage),
                    "requests_avg": mean(req),
                    "allocatable_avg": mean(alloc),
                    "utilization_avg": mean(util),
                    "utilization_p95": p95(util) if util else None,
                    "commitment_avg": mean(commit),
                    "points": len(pts),
                }
    return out


def test_hand_case_namespaces_commitment_nodes_pods(ledger: Ledger, model: ReadModel) -> None:
    """Every point and rollup of the hand case, and no other, with the values worked out above."""
    ledger.append(hand_events())
    catch_up(ledger, model, batch_events=2)
    con = model.cursor()
    points = con.execute(
        "SELECT scope, resource, nodepool, node, namespace, strftime(ts, '%Y-%m-%dT%H:%M:%S'), "
        "usage, requests, allocatable FROM cap_points WHERE cluster = 'hand'"
    ).fetchall()
    got_points: dict[tuple[Any, ...], dict[str, Point]] = {}
    for *key, t, usage, req, alloc in points:
        assert t not in got_points.setdefault(tuple(key), {}), (key, t)
        got_points[tuple(key)][t] = (usage, req, alloc)
    assert got_points == HAND_POINTS

    rows = con.execute(
        "SELECT step, scope, resource, nodepool, node, namespace, epoch_us(t), "
        + ", ".join(FIELDS)
        + " FROM cap_rollup WHERE cluster = 'hand'"
    ).fetchall()
    got = {(*r[:6], int(r[6])): dict(zip(FIELDS, r[7:], strict=True)) for r in rows}
    assert len(got) == len(rows), "two rollup rows for one bucket"
    want = hand_rollups()
    assert sorted(got, key=repr) == sorted(want, key=repr)
    for key, w in want.items():
        bad = {f: (got[key][f], w[f]) for f in FIELDS if not close(got[key][f], w[f])}
        assert not bad, (key, bad)

    # A few in plain numbers, so the arithmetic is visible in one place.
    hour10 = us(T0)
    c = got[("1h", "cluster", "cpu", None, None, None, hour10)]
    assert (c["usage_avg"], c["usage_max"], c["requests_avg"], c["allocatable_avg"]) == (
        6,
        7,
        6,
        14,
    )
    assert c["usage_p95"] == pytest.approx(6.9)  # 5 + 0.95 × (7 − 5)
    assert c["commitment_avg"] == pytest.approx((6 / 16 + 6 / 12) / 2)
    day5 = us("2026-01-05T00:00:00")
    assert got[("1d", "cluster", "cpu", None, None, None, day5)]["commitment_avg"] == 0.5
    web = got[("1h", "namespace", "cpu", None, None, "web", us(T2))]
    assert (web["requests_avg"], web["allocatable_avg"], web["commitment_avg"]) == (6, 16, 0.375)
    assert got[("1h", "cluster", "nodes", None, None, None, hour10)]["usage_avg"] == 2.5
    assert got[("1d", "cluster", "pods", None, None, None, day5)]["usage_max"] == 7
    # No namespace reported at T3: no cluster pods point, and requests are unknown, not 0.
    assert ("1h", "cluster", "pods", None, None, None, us(T3)) not in got
    assert got[("1d", "cluster", "cpu", None, None, None, us(T3))]["commitment_avg"] is None


def test_commitment_counts_allocatable_of_nodes_without_usage(
    ledger: Ledger, model: ReadModel
) -> None:
    """Namespace allocatable is the cluster's node allocatable at the ts (the issue's rule).

    n2 reports allocatable but no usage yet (a node just joined: metrics-server has no usage
    for it). Its 4 cores are allocatable all the same, so requests of 2 commit 2 / 8, not 2 / 4.
    """
    n1 = {"node": "n1", "nodepool": "a", "zone": "z1"}
    n2 = {"node": "n2", "nodepool": "a", "zone": "z1"}
    web = {"namespace": "web"}
    ledger.append(
        [
            event(
                "joined",
                [
                    ("node_cpu_usage_cores", n1, T0, 1.0),
                    ("node_cpu_allocatable_cores", n1, T0, 4.0),
                    ("node_cpu_allocatable_cores", n2, T0, 4.0),
                    ("namespace_cpu_usage_cores", web, T0, 1.0),
                    ("namespace_cpu_requests_cores", web, T0, 2.0),
                ],
            )
        ]
    )
    catch_up(ledger, model, batch_events=200)
    rows = model.cursor().execute(
        "SELECT scope, allocatable_avg, commitment_avg FROM cap_rollup "
        "WHERE step = '1h' AND resource = 'cpu' AND scope IN ('namespace', 'cluster')"
    )
    got = {scope: (alloc, commitment) for scope, alloc, commitment in rows.fetchall()}
    assert got["namespace"] == (8.0, 0.25)
    # The cluster's allocatable_avg is left out: the product sums it over the nodes reporting
    # usage too, on purpose, so utilisation is not skewed; commitment has no usage in it.
    assert got["cluster"][1] == 0.25


@pytest.mark.parametrize("width", [1, 2, 7, 60, 1440])
def test_numpy_figures_match_duckdb_aggregates(width: int) -> None:
    """The projection's numpy avg / quantile_cont(0.95) / max equal DuckDB's, NULLs as NaN.

    Infinities too: a usage over a subnormal allocatable overflows to inf in both.
    """
    rng = np.random.default_rng(width)
    dense = rng.uniform(0, 8, (40, width))
    dense[1, : max(1, width // 10)] = np.inf
    holes = dense.copy()
    holes[rng.random(holes.shape) < 0.3] = np.nan
    holes[0] = np.nan  # a row with nothing reported
    holes[2, :] = np.inf
    con = duckdb.connect()
    for rows in (dense, holes):
        figures = _avg_p95_max(rows, np.isnan(rows))
        for i, row in enumerate(rows):
            values = row[~np.isnan(row)].tolist()
            want = con.execute(
                "SELECT avg(x), quantile_cont(x, 0.95), max(x), count(x) "
                "FROM (SELECT unnest(?::DOUBLE[]) AS x)",
                [values],
            ).fetchone()
            assert want is not None
            got = [float(f[i]) for f in figures]
            assert got[3] == want[3]
            if not values:
                assert np.isnan(got[:3]).all() and want[:3] == (None, None, None)
                continue
            assert got[:3] == pytest.approx([float(w) for w in want[:3]], rel=1e-12)
