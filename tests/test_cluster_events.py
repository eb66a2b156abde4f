"""The cluster_events projection: every contract shape lands in its table, exactly once.

Real ledgers (SQLite file and PostgreSQL 15) and real DuckDB read models; incremental catch-up
in random pages must equal a rebuild.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import numpy as np
import pytest
from support.payloads import core_event, finding, incident_opened, new_event, node, pod

from analytics.cluster_events.projection import TABLES, ClusterEventsProjection
from analytics.readmodel.model import ReadModel
from analytics.readmodel.registry import default_projections
from analytics.readmodel.runner import Runner
from ingest import demo
from store.contract import Event, batch_from_columns, samples_event, validate_event
from store.ledger import Ledger
from store.migrate import upgrade
from store.timefmt import parse_rfc3339_us

HANDLED = ClusterEventsProjection.types


def ts(text: str) -> datetime:
    """A naive UTC datetime, as the read model returns TIMESTAMP columns."""
    return datetime.fromisoformat(text.removesuffix("Z"))


def table(model: ReadModel, name: str, cols: str = "*") -> list[tuple[Any, ...]]:
    """Every row of a table in ledger order."""
    return model.cursor().execute(f"SELECT {cols} FROM {name} ORDER BY position").fetchall()


def all_rows(model: ReadModel) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows in ledger order."""
    return {t: table(model, t) for t in TABLES}


def caught_up(ledger: Ledger, batch_events: int = 500) -> ReadModel:
    """A fresh in-memory read model with the ledger folded in."""
    model = ReadModel(":memory:")
    projection = ClusterEventsProjection()
    projection.batch_events = batch_events
    runner = Runner(ledger, model, [projection])
    runner.catch_up()
    assert runner.checkpoint("cluster_events") == ledger.head()
    return model


def test_registered_by_default() -> None:
    assert "cluster_events" in [p.name for p in default_projections()]


def test_every_shape_lands_in_its_table(ledger: Ledger) -> None:
    """Both Event shapes, node and pod status, findings with and without a cluster."""
    ledger.append(
        [
            validate_event(e)
            for e in (
                core_event("k1", time="2026-10-14T04:00:00Z"),
                new_event("k2", time="2026-10-14T04:05:00Z"),
                node(
                    "n1",
                    "node-a",
                    False,
                    "2026-10-14T04:02:00Z",
                    reason="KubeletNotReady",
                    nodepool="general",
                    zone="z1",
                    instance_type="m6i.xlarge",
                ),
                pod(
                    "p1",
                    "api-1",
                    3,
                    "2026-10-14T04:03:00Z",
                    reason="CrashLoopBackOff",
                    node="node-a",
                    owner="ReplicaSet/api",
                ),
                finding(
                    "f1",
                    "gd-1",
                    "ACTIVE",
                    "2026-10-14T04:04:00Z",
                    data={"namespace": "payments", "resource": "Pod/payments/api-1"},
                ),
                finding("f2", "gd-1", "RESOLVED", "2026-10-15T00:00:00Z", cluster="prod-eks-1"),
                incident_opened("i1", time="2026-10-14T04:06:00Z"),
            )
        ]
    )
    model = caught_up(ledger)
    try:
        assert table(model, "k8s_events") == [
            (
                "prod-eks-1", "payments", "Pod", "api-1", "BackOff",
                "Back-off restarting failed container api in pod api-1", "Warning", 4,
                ts("2026-10-14T03:50:00"), ts("2026-10-14T04:00:00"), None, "kubelet", "node-a",
                "payments", "api-1.17f9a3", "uid-core", "v1", ts("2026-10-14T04:00:00"), 1,
            ),
            (
                # A node is cluster-scoped: no namespace, whatever metadata.namespace says.
                "prod-eks-1", None, "Node", "node-a", "OOMKilling",
                "Memory cgroup out of memory: Killed process 4242 (java)", "Warning", 3,
                None, ts("2026-10-14T04:05:00.5"), ts("2026-10-14T04:01:00.25"),
                "kernel-monitor", "node-a", "default", "node-a.18a", "uid-new",
                "events.k8s.io/v1", ts("2026-10-14T04:05:00"), 2,
            ),
        ]  # fmt: skip
        assert table(model, "node_status") == [
            (
                "prod-eks-1", "node-a", False, "KubeletNotReady", "general", "z1", "m6i.xlarge",
                3.92, 15_944_000_000, 110, ts("2026-10-14T04:02:00"), 3,
            )
        ]  # fmt: skip
        assert table(model, "pod_status") == [
            (
                "prod-eks-1", "payments", "api-1", "Running", "CrashLoopBackOff", 3, "node-a",
                "ReplicaSet/api", ts("2026-10-14T04:03:00"), 4,
            )
        ]  # fmt: skip
        common = (
            "guardduty", "gd-1", "Impact:Runtime/CryptoMinerExecuted observed",
            "Impact:Runtime/CryptoMinerExecuted", "HIGH",
        )  # fmt: skip
        assert table(model, "findings") == [
            (
                *common, "Pod/payments/api-1", "payments", "ACTIVE", ts("2026-10-14T03:00:00"),
                ts("2026-10-14T04:04:00"), None, ts("2026-10-14T04:04:00"), 5,
            ),
            (
                *common, None, None, "RESOLVED", ts("2026-10-14T03:00:00"),
                ts("2026-10-15T00:00:00"), "prod-eks-1", ts("2026-10-15T00:00:00"), 6,
            ),
        ]  # fmt: skip
    finally:
        model.close()


def test_odd_but_valid_fields_do_not_fail_the_page(ledger: Ledger) -> None:
    """Free-form Event fields of the wrong type become NULL; huge counts are clamped."""
    odd = core_event(
        "odd",
        data={
            "count": 2**64 - 1,
            "series": "not an object",
            "firstTimestamp": 5,
            "lastTimestamp": "yesterday",
            "source": ["kubelet"],
            "message": "nul \x00 byte and\nnewline",
        },
    )
    no_count = core_event("bare", data={"count": None, "metadata": {"name": "e2"}})
    ledger.append([validate_event(odd), validate_event(no_count)])
    model = caught_up(ledger)
    try:
        rows = table(
            model,
            "k8s_events",
            "count, first_timestamp, last_timestamp, component, message, event_uid",
        )
        assert rows == [
            (2**63 - 1, None, None, None, "nul \x00 byte and\nnewline", "uid-core"),
            (1, ts("2026-10-14T03:50:00"), ts("2026-10-14T04:00:00"), "kubelet",
             "Back-off restarting failed container api in pod api-1", None),
        ]  # fmt: skip
    finally:
        model.close()


def random_history(rng: random.Random, n: int) -> list[Event]:
    """A mix of every handled type and some others, times jittered out of order."""
    base = parse_rfc3339_us("2026-10-14T00:00:00Z")
    out: list[Event] = []
    for i in range(n):
        t = base + rng.randrange(0, 6 * 3600) * 1_000_000
        when = dt.datetime.fromtimestamp(t / 1e6, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        kind = rng.randrange(6)
        if kind == 0:
            ev = core_event(
                f"e{i}",
                time=when,
                data={
                    "count": rng.randrange(1, 9),
                    "metadata": {"name": f"ev-{rng.randrange(5)}", "uid": f"u{i % 7}"},
                },
            )
        elif kind == 1:
            ev = new_event(f"e{i}", time=when, data={"series": {"count": rng.randrange(2, 9)}})
        elif kind == 2:
            ev = node(f"e{i}", f"node-{rng.randrange(4)}", rng.random() < 0.7, when)
        elif kind == 3:
            ev = pod(
                f"e{i}",
                f"api-{rng.randrange(4)}",
                rng.randrange(5),
                when,
                cluster=rng.choice(["c1", "c2"]),
            )
        elif kind == 4:
            ev = finding(
                f"e{i}",
                f"gd-{rng.randrange(3)}",
                rng.choice(["ACTIVE", "RESOLVED"]),
                when,
                data={"first_seen": "2026-10-13T00:00:00Z"},
            )
        else:
            ev = incident_opened(f"e{i}", incident_id=f"INC-{i}", time=when)
        out.append(validate_event(ev))
        if rng.random() < 0.1:
            labels = {"node": "node-0", "nodepool": "p", "zone": "z"}
            batch = batch_from_columns(
                [("node_cpu_usage_cores", labels)], np.zeros(1, int), np.array([t]), np.ones(1)
            )
            out.append(samples_event("//t/prom", f"s{i}", t, "c1", batch))
    return out


@pytest.mark.parametrize("seed", [3, 17])
def test_incremental_catch_up_in_random_pages_equals_rebuild(ledger: Ledger, seed: int) -> None:
    """Appends and catch-ups interleaved, pages of 1-40 events, partial catch-ups: = replay."""
    rng = random.Random(seed)
    events = random_history(rng, 160)
    model = ReadModel(":memory:")
    projection = ClusterEventsProjection()
    runner = Runner(ledger, model, [projection])
    fed = 0
    try:
        while fed < len(events):
            k = rng.randint(1, 30)
            ledger.append(events[fed : fed + k])
            fed += k
            projection.batch_events = rng.randint(1, 40)
            runner.catch_up(max_batches=rng.choice([None, 1, 2]))
        runner.catch_up()
        assert runner.checkpoint("cluster_events") == ledger.head()
        incremental = all_rows(model)
        handled = [e for e in ledger.read(0, 10_000) if e.type in HANDLED]
        assert sum(len(rows) for rows in incremental.values()) == len(handled)
        assert sorted(r[-1] for rows in incremental.values() for r in rows) == [
            e.position for e in handled
        ]
        reference = caught_up(ledger, batch_events=10_000)
        try:
            assert all_rows(reference) == incremental
        finally:
            reference.close()
        assert runner.rebuild(["cluster_events"]) == len(handled)
        assert all_rows(model) == incremental
    finally:
        model.close()


@pytest.fixture(scope="module")
def demo_ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    """Two demo days of the handled types (the samples are left out: they are not needed)."""
    path = tmp_path_factory.mktemp("demo") / "ledger.db"
    upgrade(f"sqlite:///{path}")
    led = Ledger.from_url(f"sqlite:///{path}")
    now = parse_rfc3339_us("2026-11-22T00:00:00Z")
    for batch in demo.generate(dt.date(2026, 11, 14), now):
        led.append([e for e in batch if e.type in HANDLED])
    try:
        yield led
    finally:
        led.engine.dispose()


def test_the_demo_history_projects_completely(demo_ledger: Ledger) -> None:
    """Every demo event of the four types is a row, with the fields the timeline needs."""
    model = caught_up(demo_ledger, batch_events=97)
    try:
        con = model.cursor()
        counts = {
            t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
            for t in TABLES
        }
        recorded = demo_ledger.read(0, 100_000)
        by_type = {t: sum(e.type == t for e in recorded) for t in HANDLED}
        assert counts == {
            "k8s_events": by_type["opsledger.k8s.event"],
            "node_status": by_type["opsledger.k8s.node.status"],
            "pod_status": by_type["opsledger.k8s.pod.status"],
            "findings": by_type["opsledger.finding"],
        }
        assert all(v > 0 for v in counts.values()), counts
        nulls = con.execute(
            "SELECT count(*) FROM k8s_events WHERE kind IS NULL OR name IS NULL OR reason IS NULL "
            "OR first_timestamp IS NULL OR last_timestamp IS NULL OR count < 1"
        ).fetchone()
        assert nulls == (0,)
        assert con.execute(
            "SELECT count(*) FROM findings WHERE first_seen IS NULL OR cluster IS NULL"
        ).fetchone() == (0,)
    finally:
        model.close()
