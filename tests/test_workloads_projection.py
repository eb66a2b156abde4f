"""The workloads projection: a row per container and timestamp, node labels, against an oracle."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.containers import METRICS, Samples, append, container_labels
from support.projections import assert_rebuild_equals_catch_up, table_rows

from analytics.capacity.workloads import VALUE_COLUMNS, WorkloadsProjection
from analytics.readmodel.model import ReadModel
from analytics.readmodel.runner import Runner
from store.ledger import Ledger
from store.migrate import upgrade

TABLES = ("wl_values", "wl_nodes")
T0 = datetime(2026, 10, 14, 23, 30, tzinfo=UTC)  # histories cross UTC midnight
SHORT = {name: short for short, name in METRICS.items()}


def history(seed: int) -> list[dict[str, Any]]:
    """Sample events of two clusters: containers with and without owner labels, restated
    samples, series missing key labels, node series with and without pool and zone."""
    rng = random.Random(seed)
    raws = []
    containers = [
        (f"ns{rng.randrange(2)}", f"pod-{i}", rng.choice(["app", "sidecar"])) for i in range(5)
    ]
    sent: list[tuple[str, dict[str, str], datetime]] = []
    for e in range(12):
        cluster = rng.choice(["c1", "c2"])
        s = Samples()
        for ns, pod, container in rng.sample(containers, rng.randint(1, len(containers))):
            owner = rng.random() < 0.7
            labels = container_labels(
                ns,
                pod,
                container,
                kind="Deployment" if owner else None,
                workload=pod.rsplit("-", 1)[0] if owner else None,
                node=rng.choice([None, "n1", "n2"]),
            )
            for name in rng.sample(sorted(METRICS.values()), rng.randint(1, 6)):
                for k in rng.sample(range(6), rng.randint(1, 3)):
                    t = T0 + timedelta(minutes=5 * k)
                    s.add(name, labels, t, rng.uniform(0, 4))
        # A restatement of an earlier sample with another value (of a container this event
        # does not otherwise carry: one label set per container and event).
        here = {(lb["namespace"], lb["pod"], lb["container"]) for _, lb in s.series}
        earlier = [
            x for x in sent if (x[1]["namespace"], x[1]["pod"], x[1]["container"]) not in here
        ]
        if earlier and rng.random() < 0.7:
            name, labels, t = rng.choice(earlier)
            s.add(name, labels, t, rng.uniform(10, 20))
        # Not a container's series: no container label, an empty pod label.
        s.add("container_cpu_usage_cores", {"namespace": "ns0", "pod": "p"}, T0, 1.0)
        s.add("container_cpu_usage_cores", {"namespace": "ns0", "pod": "", "container": "c"}, T0, 1)
        for node in ("n1", "n2", "n3"):
            pool = rng.choice([None, "general", "gpu"])
            zone = rng.choice([None, "z1", "z2"])
            s.node(node, T0 + timedelta(minutes=5 * rng.randrange(6)), 4.0, 16e9, pool, zone)
        sent += [
            (s.series[i][0], s.series[i][1], datetime.fromtimestamp(t / 1e6, UTC))
            for i, t in zip(s.cols[0], s.cols[1], strict=True)
            if s.series[i][0] in SHORT
            and s.series[i][1].get("pod")
            and "container" in s.series[i][1]
        ]
        raws.append(s.raw(f"e{seed}-{e}", cluster))
    return raws


def oracle(raws: list[dict[str, Any]]) -> dict[str, list[tuple[Any, ...]]]:
    """The tables as the design says, from the CloudEvents in ledger order, in plain Python."""
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    nodes: set[tuple[Any, ...]] = set()
    for ev in raws:
        for s in ev["data"]["samples"]:
            lb, ts = s["labels"], datetime.fromisoformat(s["ts"][:-1])
            if s["name"].startswith("node_"):
                if lb.get("node") and (lb.get("nodepool") or lb.get("zone")):
                    nodes.add((ev["cluster"], lb["node"], lb.get("nodepool"), lb.get("zone"), ts))
                continue
            if s["name"] not in SHORT or not all(
                lb.get(k) for k in ("namespace", "pod", "container")
            ):
                continue
            key = (ev["cluster"], lb["namespace"], lb["pod"], lb["container"], ts)
            row = rows.setdefault(key, {})
            row[SHORT[s["name"]]] = float(s["value"])
            for label in ("workload_kind", "workload", "node"):
                if lb.get(label):
                    row[label] = lb[label]
    values = [
        (
            *key,
            row.get("workload_kind", "Pod"),
            row.get("workload", key[2]),
            row.get("node"),
            *(row.get(c) for c in VALUE_COLUMNS),
        )
        for key, row in rows.items()
    ]
    return {
        "wl_values": sorted(values, key=_order),
        "wl_nodes": sorted(nodes, key=_order),
    }


def _order(r: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple((v is not None, str(v)) for v in r)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rebuild_equals_catch_up_and_the_oracle(tmp_path: Path, seed: int) -> None:
    raws = history(seed)
    tables = assert_rebuild_equals_catch_up(tmp_path, raws, WorkloadsProjection, TABLES, seed)
    assert tables == oracle(raws)
    assert tables["wl_values"] and tables["wl_nodes"]


def runner(tmp_path: Path) -> tuple[Ledger, ReadModel, Runner]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    ledger = Ledger.from_url(url)
    model = ReadModel(tmp_path / "rm.duckdb")
    return ledger, model, Runner(ledger, model, [WorkloadsProjection()])


def test_restated_and_redelivered_samples(tmp_path: Path) -> None:
    ledger, model, run = runner(tmp_path)
    try:
        web = container_labels("web", "api-7d9f-x1", "app", "Deployment", "api", "n1")
        bare = container_labels("web", "api-7d9f-x1", "app", kind=None)
        first = Samples().container(web, T0, cpu_usage=0.5, cpu_request=1.0)
        append(ledger, [first.raw("a", "c1")])
        run.catch_up()
        # Later: the CPU usage at T0 restated, memory added by a series without owner labels.
        second = Samples().container(bare, T0, cpu_usage=0.7, memory_usage=3e8)
        append(ledger, [second.raw("b", "c1")])
        run.catch_up()
        expected = [
            ("c1", "web", "api-7d9f-x1", "app", T0.replace(tzinfo=None), "Deployment", "api",
             "n1", 0.7, 3e8, 1.0, None, None, None),
        ]  # fmt: skip
        assert table_rows(model, "wl_values") == expected
        # A re-delivery is a duplicate in the ledger: nothing is folded twice.
        head = ledger.head()
        append(ledger, [first.raw("a", "c1"), second.raw("b", "c1")])
        assert ledger.head() == head
        run.catch_up()
        assert table_rows(model, "wl_values") == expected
    finally:
        model.close()
        ledger.engine.dispose()


def test_a_pod_without_owner_labels_is_its_own_workload(tmp_path: Path) -> None:
    ledger, model, run = runner(tmp_path)
    try:
        lone = container_labels("batch", "debug-shell", "sh", kind=None)
        no_ns = {"pod": "x", "container": "c"}
        s = Samples().container(lone, T0, cpu_usage=0.1)
        s.add("container_cpu_usage_cores", no_ns, T0, 9.0)
        s.add("container_memory_working_set_bytes", {"namespace": "a", "pod": "x"}, T0, 9.0)
        append(ledger, [s.raw("a", "c1")])
        run.catch_up()
        rows = (
            model.cursor()
            .execute(
                "SELECT namespace, pod, workload_kind, workload, node, cpu_usage FROM wl_values"
            )
            .fetchall()
        )
        assert rows == [("batch", "debug-shell", "Pod", "debug-shell", None, 0.1)]
        assert table_rows(model, "wl_nodes") == []
    finally:
        model.close()
        ledger.engine.dispose()


def test_node_labels_are_kept_per_timestamp(tmp_path: Path) -> None:
    ledger, model, run = runner(tmp_path)
    try:
        t1 = T0 + timedelta(minutes=5)
        s = Samples().node("n1", T0, 4, 16e9, "general", "z1").node("n1", t1, 4, 16e9, "gpu")
        s.node("n2", T0, 4, 16e9)  # no pool, no zone: nothing to keep
        append(ledger, [s.raw("a", "c1")])
        run.catch_up()
        append(ledger, [Samples().node("n1", T0, 4, 16e9, "general", "z1").raw("b", "c1")])
        run.catch_up()
        assert table_rows(model, "wl_nodes") == [
            ("c1", "n1", "general", "z1", T0.replace(tzinfo=None)),
            ("c1", "n1", "gpu", None, t1.replace(tzinfo=None)),
        ]
    finally:
        model.close()
        ledger.engine.dispose()


def test_the_empty_ledger(tmp_path: Path) -> None:
    tables = assert_rebuild_equals_catch_up(tmp_path, [], WorkloadsProjection, TABLES)
    assert tables == {"wl_values": [], "wl_nodes": []}
