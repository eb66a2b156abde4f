"""The post-mortem context: contract events appended to a real ledger, caught up, then queried.

The backend does not matter to the queries, so these use a SQLite ledger file only
(tests/test_cluster_events.py covers both backends for the projection itself).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.payloads import core_event, finding, new_event, node, pod

from analytics.capacity.projection import CapacityProjection
from analytics.cluster_events.projection import ClusterEventsProjection
from analytics.incidents.timeline import context, escape_cell, render_markdown
from analytics.readmodel.model import ReadModel
from analytics.readmodel.runner import Runner
from store.contract import batch_from_columns, samples_event, validate_event
from store.ledger import Ledger
from store.migrate import upgrade
from store.timefmt import parse_rfc3339_us

CLUSTER = "prod-eks-1"
START = datetime(2026, 10, 14, 4, 0)
END = datetime(2026, 10, 14, 6, 0)


@dataclass
class ContextBed:
    """A ledger, a read model with the capacity and cluster_events projections, a runner.

    Not the app bed of support.beds: the context is a query of the read model, called here
    directly, so no app, client or keys; only the two projections it reads, in memory.
    """

    ledger: Ledger
    model: ReadModel
    runner: Runner
    n: int = 0

    def add(self, *raws: dict[str, Any]) -> None:
        """Append contract events."""
        self.ledger.append([validate_event(r) for r in raws])

    def cpu(self, cluster: str, node_name: str, start: str, minutes: int, ratio: float) -> None:
        """A node's CPU usage at `ratio` of 10 allocatable cores, every 5 minutes."""
        t0 = parse_rfc3339_us(start)
        ts = np.array([t0 + k * 300_000_000 for k in range(minutes // 5 + 1)], dtype=np.int64)
        labels = {"node": node_name, "nodepool": "pool-a", "zone": "z1"}
        series = [("node_cpu_usage_cores", labels), ("node_cpu_allocatable_cores", labels)]
        n = len(ts)
        batch = batch_from_columns(
            series,
            np.concatenate([np.zeros(n, int), np.ones(n, int)]),
            np.concatenate([ts, ts]),
            np.concatenate([np.full(n, 10.0 * ratio), np.full(n, 10.0)]),
        )
        self.n += 1
        self.ledger.append([samples_event("//t/prom", f"cpu-{self.n}", t0, cluster, batch)])

    def context(self, **kw: Any) -> list[dict[str, Any]]:
        """Catch up, then the context of CLUSTER in [START, END) unless overridden."""
        self.runner.catch_up()
        args: dict[str, Any] = {"cluster": CLUSTER, "namespace": None, "start": START, "end": END}
        return context(self.model.cursor(), **{**args, **kw})


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty SQLite ledger to copy."""
    path = tmp_path_factory.mktemp("template") / "ledger.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def bed(template: Path, tmp_path: Path) -> Iterator[ContextBed]:
    path = tmp_path / "ledger.db"
    shutil.copy(template, path)
    ledger = Ledger.from_url(f"sqlite:///{path}")
    model = ReadModel(":memory:")
    runner = Runner(ledger, model, [CapacityProjection(), ClusterEventsProjection()])
    try:
        yield ContextBed(ledger, model, runner)
    finally:
        model.close()
        ledger.engine.dispose()


def at(entries: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(t, kind) of each entry."""
    return [(e["t"], e["kind"]) for e in entries]


def warning(
    id: str,
    time: str,
    name: str,
    namespace: str | None = "payments",
    uid: str | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """A core/v1 Warning about a pod (or, without namespace, a node) observed at `time`."""
    ref: dict[str, Any] = {"kind": "Pod" if namespace else "Node", "name": name}
    if namespace:
        ref["namespace"] = namespace
    data = {
        "metadata": {
            "name": f"{name}.{uid or id}",
            "namespace": namespace or "default",
            "uid": uid or id,
        },
        "involvedObject": ref,
        "reason": "FailedScheduling",
        "message": "0/3 nodes are available",
        "count": 1,
        **kw.pop("data", {}),
    }
    return core_event(id, time=time, data=data, **kw)


# -- window, namespace, cluster ------------------------------------------------------------------


def test_window_is_start_inclusive_end_exclusive(bed: ContextBed) -> None:
    bed.add(
        warning("w-before", "2026-10-14T03:59:59.999999Z", "a"),
        warning("w-start", "2026-10-14T04:00:00Z", "b"),
        warning("w-last", "2026-10-14T05:59:59.999999Z", "c"),
        warning("w-end", "2026-10-14T06:00:00Z", "d"),
    )
    entries = bed.context()
    assert at(entries) == [
        ("2026-10-14T04:00:00Z", "k8s_warning"),
        ("2026-10-14T05:59:59.999999Z", "k8s_warning"),
    ]
    assert entries[0]["summary"] == ("FailedScheduling on Pod payments/b: 0/3 nodes are available")
    # An aware window is the same instants; an empty or inverted window has nothing.
    tz = timezone(timedelta(hours=-4))
    aware = bed.context(start=datetime(2026, 10, 14, 0, 0, tzinfo=tz), end=END.replace(tzinfo=UTC))
    assert aware == entries
    assert bed.context(start=END, end=START) == []


def test_namespace_keeps_its_own_and_cluster_wide_facts(bed: ContextBed) -> None:
    t = "2026-10-14T04:10:00Z"
    bed.add(
        warning("w-pay", t, "api-1"),
        warning("w-web", t, "web-1", namespace="web"),
        warning("w-node", t, "node-a", namespace=None),
        pod("p-pay", "api-1", 2, t),
        pod("p-web", "web-1", 2, t, namespace="web"),
        node("n-a", "node-a", False, t),
        finding(
            "f-pay",
            "gd-pay",
            "ACTIVE",
            t,
            data={"namespace": "payments", "first_seen": "2026-10-14T04:05:00Z"},
        ),
        finding(
            "f-web",
            "gd-web",
            "ACTIVE",
            t,
            data={"namespace": "web", "first_seen": "2026-10-14T04:05:00Z"},
        ),
        finding("f-all", "gd-all", "ACTIVE", t, data={"first_seen": "2026-10-14T04:05:00Z"}),
    )
    names = {
        (
            e["kind"],
            e["details"].get("finding_id")
            or e["details"].get("object_name")
            or e["details"].get("pod")
            or e["details"].get("node"),
        )
        for e in bed.context(namespace="payments")
    }
    assert names == {
        ("finding", "gd-pay"),
        ("finding", "gd-all"),
        ("k8s_warning", "api-1"),
        ("k8s_warning", "node-a"),
        ("pod_restart", "api-1"),
        ("node_not_ready", "node-a"),
    }
    assert len(bed.context()) == 9


def test_other_clusters_stay_out_and_findings_without_a_cluster_stay_in(bed: ContextBed) -> None:
    t = "2026-10-14T04:10:00Z"
    other = "staging-eks"
    bed.add(
        warning("w-other", t, "api-1", cluster=other),
        pod("p-other", "api-1", 2, t, cluster=other),
        node("n-other", "node-a", False, t) | {"cluster": other},
        finding(
            "f-other",
            "gd-1",
            "ACTIVE",
            t,
            cluster=other,
            data={"first_seen": "2026-10-14T04:05:00Z"},
        ),
        finding("f-none", "gd-2", "ACTIVE", t, data={"first_seen": "2026-10-14T04:05:00Z"}),
        finding(
            "f-mine",
            "gd-3",
            "ACTIVE",
            t,
            cluster=CLUSTER,
            data={"first_seen": "2026-10-14T04:06:00Z"},
        ),
    )
    bed.cpu(other, "n9", "2026-10-14T04:00:00Z", 90, 0.95)
    entries = bed.context()
    assert [(e["kind"], e["details"]["finding_id"], e["details"]["cluster"]) for e in entries] == [
        ("finding", "gd-2", None),
        ("finding", "gd-3", CLUSTER),
    ]
    theirs = bed.context(cluster=other)
    assert sorted(e["kind"] for e in theirs) == [
        "finding",
        "finding",
        "k8s_warning",
        "node_not_ready",
        "pod_restart",
        "sustained",
        "sustained",
        "sustained",
    ]
    assert [e["details"]["cluster"] for e in theirs if e["kind"] == "finding"] == [other, None]


# -- nodes -----------------------------------------------------------------------------------------


def test_node_transitions_only_on_change(bed: ContextBed) -> None:
    bed.add(
        node("a0", "node-a", True, "2026-10-14T03:00:00Z"),  # first seen Ready: no entry
        node("a1", "node-a", True, "2026-10-14T04:01:00Z", reason="KubeletReady"),  # no change
        node(
            "a2",
            "node-a",
            False,
            "2026-10-14T04:10:00Z",
            reason="KubeletNotReady",
            nodepool="general",
            zone="z1",
        ),
        node("a3", "node-a", False, "2026-10-14T04:12:00Z", reason="NodeStatusUnknown"),
        node("a4", "node-a", True, "2026-10-14T04:41:00Z", reason="KubeletReady"),
        node("b0", "node-b", False, "2026-10-14T04:20:00Z"),  # first seen NotReady: counts
        node("c0", "node-c", True, "2026-10-14T04:30:00Z"),  # first seen Ready: no entry
        # NotReady before the window, Ready inside it: the change is inside.
        node("d0", "node-d", True, "2026-10-14T02:00:00Z"),
        node("d1", "node-d", False, "2026-10-14T03:30:00Z"),
        node("d2", "node-d", True, "2026-10-14T04:05:00Z"),
        # Recorded late but earlier in time: node-e's previous status is judged by time.
        node("e1", "node-e", False, "2026-10-14T04:50:00Z"),
    )
    bed.add(node("e0", "node-e", False, "2026-10-14T04:45:00Z"))
    entries = bed.context()
    assert [(e["t"], e["kind"], e["details"]["node"]) for e in entries] == [
        ("2026-10-14T04:05:00Z", "node_ready", "node-d"),
        ("2026-10-14T04:10:00Z", "node_not_ready", "node-a"),
        ("2026-10-14T04:20:00Z", "node_not_ready", "node-b"),
        ("2026-10-14T04:41:00Z", "node_ready", "node-a"),
        ("2026-10-14T04:45:00Z", "node_not_ready", "node-e"),
    ]
    assert entries[1]["summary"] == "Node node-a NotReady (KubeletNotReady) [general, z1]"
    ready = entries[3]
    # NotReady since the change at 04:10, not since the last NotReady status (04:12).
    assert ready["summary"] == "Node node-a Ready again after 31m NotReady (KubeletReady)"
    assert ready["details"]["not_ready_seconds"] == 31 * 60
    assert ready["details"]["not_ready_since"] == "2026-10-14T04:10:00Z"
    assert ready["details"]["previous_at"] == "2026-10-14T04:12:00Z"
    assert entries[0]["details"]["previous_ready"] is False
    assert entries[0]["details"]["not_ready_since"] == "2026-10-14T03:30:00Z"


# -- pods ------------------------------------------------------------------------------------------


def test_restarts_only_on_increase(bed: ContextBed) -> None:
    bed.add(
        pod("a0", "api-1", 0, "2026-10-14T03:00:00Z"),
        pod("a1", "api-1", 0, "2026-10-14T04:01:00Z", phase="Pending"),  # no restart
        pod("a2", "api-1", 2, "2026-10-14T04:02:00Z", reason="Error", node="node-a"),
        pod("a3", "api-1", 2, "2026-10-14T04:03:00Z"),  # same count
        pod("a4", "api-1", 1, "2026-10-14T04:04:00Z"),  # a new pod of the same name
        pod("a5", "api-1", 3, "2026-10-14T04:05:00Z"),
        pod("b0", "api-2", 4, "2026-10-14T04:06:00Z"),  # first status with restarts
        pod("c0", "api-3", 0, "2026-10-14T04:07:00Z"),  # first status, none
        pod("d0", "api-4", 1, "2026-10-14T03:50:00Z"),  # before the window
        pod("d1", "api-4", 1, "2026-10-14T04:08:00Z"),  # no increase across the edge
        pod("d2", "api-4", 2, "2026-10-14T06:00:00Z"),  # at the end: outside
    )
    entries = bed.context()
    assert [(e["t"][11:19], e["kind"], e["summary"]) for e in entries] == [
        (
            "04:02:00",
            "pod_restart",
            "Pod payments/api-1 restarted: restarts 0 → 2 (Error) on node-a",
        ),
        ("04:05:00", "pod_restart", "Pod payments/api-1 restarted: restarts 1 → 3"),
        ("04:06:00", "pod_restart", "Pod payments/api-2 restarted: restarts 4"),
    ]
    assert entries[1]["details"] | {"position": 0} == {
        "source": "pod_status",
        "namespace": "payments",
        "pod": "api-1",
        "phase": "Running",
        "reason": None,
        "restarts": 3,
        "previous_restarts": 1,
        "node": None,
        "owner": None,
        "position": 0,
    }


def test_crash_loops_and_oom_kills_are_listed_once(bed: ContextBed) -> None:
    crash = "Back-off restarting failed container api in pod api-1"
    bed.add(
        pod("c1", "api-1", 3, "2026-10-14T04:01:30Z", reason="CrashLoopBackOff", node="node-a"),
        pod("c2", "api-1", 3, "2026-10-14T04:03:00Z", reason="CrashLoopBackOff", node="node-a"),
        pod("c3", "api-1", 9, "2026-10-14T04:30:00Z", reason="CrashLoopBackOff", node="node-a"),
        pod("c4", "api-1", 9, "2026-10-14T04:35:00Z", node="node-a"),
        # The same crash loop as a kubelet Warning: folded into the pod's first entry.
        core_event("k-crash", time="2026-10-14T04:30:00Z", data={"count": 27, "message": crash}),
        # An image pull back-off is not a crash loop.
        core_event(
            "k-pull",
            time="2026-10-14T04:20:00Z",
            data={
                "metadata": {"name": "api-2.1", "uid": "k-pull"},
                "involvedObject": {"kind": "Pod", "name": "api-2", "namespace": "payments"},
                "message": 'Back-off pulling image "ecr/api:v2"',
                "count": 3,
            },
        ),
        # An OOM kill seen by the kernel monitor on node-b and as the pod's status 2 s later.
        new_event(
            "k-oom",
            time="2026-10-14T05:00:00Z",
            data={"regarding": {"kind": "Node", "name": "node-b"}, "series": None},
        ),
        pod(
            "o1",
            "spark-1",
            1,
            "2026-10-14T05:00:02Z",
            reason="OOMKilled",
            node="node-b",
            namespace="data",
        ),
        # Another on node-c with no pod status near it: listed by itself.
        new_event(
            "k-oom2",
            time="2026-10-14T05:20:00Z",
            data={
                "metadata": {"name": "node-c.1", "uid": "k-oom2"},
                "regarding": {"kind": "Node", "name": "node-c"},
                "series": None,
            },
        ),
        pod(
            "o2",
            "spark-2",
            1,
            "2026-10-14T05:30:00Z",
            reason="OOMKilled",
            node="node-c",
            namespace="data",
        ),
    )
    entries = bed.context()
    assert [(e["t"][11:19], e["kind"], e["summary"]) for e in entries] == [
        ("04:01:30", "crash_loop", "Pod payments/api-1 CrashLoopBackOff: restarts 3 on node-a"),
        (
            "04:20:00",
            "k8s_warning",
            'BackOff on Pod payments/api-2 ×3: Back-off pulling image "ecr/api:v2"',
        ),
        ("04:30:00", "crash_loop", "Pod payments/api-1 CrashLoopBackOff: restarts 3 → 9 on node-a"),
        ("05:00:02", "oom_killed", "Pod data/spark-1 OOMKilled: restarts 1 on node-b"),
        (
            "05:20:00",
            "oom_killed",
            "OOMKilling on Node node-c: Memory cgroup out of memory: Killed process 4242 (java)",
        ),
        ("05:30:00", "oom_killed", "Pod data/spark-2 OOMKilled: restarts 1 on node-c"),
    ]
    [folded] = entries[0]["details"]["k8s_events"]
    assert folded["count"] == 27 and folded["message"] == crash
    assert folded["first_timestamp"] == "2026-10-14T03:50:00Z"
    assert "k8s_events" not in entries[2]["details"]
    [oom] = entries[3]["details"]["k8s_events"]
    assert (oom["object_kind"], oom["object_name"], oom["reason"]) == (
        "Node",
        "node-b",
        "OOMKilling",
    )
    # With a namespace, node-level OOM events stay; other namespaces' pods go.
    kinds = [(e["kind"], e["summary"][:20]) for e in bed.context(namespace="payments")]
    assert kinds == [
        ("crash_loop", "Pod payments/api-1 C"),
        ("k8s_warning", "BackOff on Pod payme"),
        ("crash_loop", "Pod payments/api-1 C"),
        ("oom_killed", "OOMKilling on Node n"),
        ("oom_killed", "OOMKilling on Node n"),
    ]


# -- Kubernetes events -----------------------------------------------------------------------------


def test_both_event_shapes_one_entry_per_event_object(bed: ContextBed) -> None:
    bed.add(
        # core/v1, observed three times (count 1, 2, 5): one entry, the latest observation.
        warning("k-1a", "2026-10-14T04:10:00Z", "api-1", uid="u1", data={"count": 1}),
        warning("k-1c", "2026-10-14T04:30:00Z", "api-1", uid="u1", data={"count": 5}),
        warning("k-1b", "2026-10-14T04:20:00Z", "api-1", uid="u1", data={"count": 2}),
        # events.k8s.io/v1: note, series.count, regarding.
        new_event(
            "k-2",
            time="2026-10-14T04:15:00Z",
            data={
                "reason": "FailedMount",
                "note": "MountVolume.SetUp failed\nfor volume data",
                "regarding": {"kind": "Pod", "name": "db-0", "namespace": "payments"},
            },
        ),
        # Normal events are not context.
        core_event(
            "k-3",
            time="2026-10-14T04:16:00Z",
            data={"type": "Normal", "reason": "Pulled", "metadata": {"name": "n", "uid": "k-3"}},
        ),
    )
    entries = bed.context()
    assert [(e["t"][11:19], e["summary"]) for e in entries] == [
        (
            "04:15:00",
            "FailedMount on Pod payments/db-0 ×3: MountVolume.SetUp failed for volume data",
        ),
        ("04:30:00", "FailedScheduling on Pod payments/api-1 ×5: 0/3 nodes are available"),
    ]
    assert {e["kind"] for e in entries} == {"k8s_warning"}
    mount = entries[0]["details"]
    assert mount["message"] == "MountVolume.SetUp failed\nfor volume data"
    assert mount["event_time"] == "2026-10-14T04:01:00.250000Z"
    assert mount["last_timestamp"] == "2026-10-14T04:05:00.500000Z"
    assert mount["component"] == "kernel-monitor"


# -- findings --------------------------------------------------------------------------------------


def test_findings_first_seen_and_status_changes(bed: ContextBed) -> None:
    bed.add(
        # New in the window (first_seen 04:05), resolved in the window.
        finding(
            "a1",
            "gd-a",
            "ACTIVE",
            "2026-10-14T04:06:00Z",
            data={"first_seen": "2026-10-14T04:05:00Z"},
        ),
        finding(
            "a2",
            "gd-a",
            "ACTIVE",
            "2026-10-14T04:20:00Z",
            data={"first_seen": "2026-10-14T04:05:00Z"},
        ),  # re-seen, no change
        finding(
            "a3",
            "gd-a",
            "RESOLVED",
            "2026-10-14T05:00:00Z",
            data={"first_seen": "2026-10-14T04:05:00Z", "severity": "CRITICAL"},
        ),
        # Old, archived inside the window.
        finding(
            "b1",
            "gd-b",
            "ACTIVE",
            "2026-10-13T00:00:00Z",
            data={"first_seen": "2026-10-12T00:00:00Z", "severity": "LOW"},
        ),
        finding(
            "b2",
            "gd-b",
            "ARCHIVED",
            "2026-10-14T04:30:00Z",
            data={"first_seen": "2026-10-12T00:00:00Z", "severity": "LOW"},
        ),
        # Old, nothing changed in the window.
        finding(
            "c1",
            "gd-c",
            "ACTIVE",
            "2026-10-14T04:40:00Z",
            data={"first_seen": "2026-10-12T00:00:00Z"},
        ),
        # First seen in the window, reported only after it.
        finding(
            "d1",
            "gd-d",
            "ACTIVE",
            "2026-10-14T09:00:00Z",
            data={"first_seen": "2026-10-14T05:59:00Z"},
        ),
        # Changed at the window's end: outside.
        finding(
            "a4",
            "gd-a",
            "ACTIVE",
            "2026-10-14T06:00:00Z",
            data={"first_seen": "2026-10-14T04:05:00Z"},
        ),
    )
    entries = bed.context()
    title = "Impact:Runtime/CryptoMinerExecuted observed"
    assert [(e["t"][11:19], e["summary"]) for e in entries] == [
        ("04:05:00", f"New HIGH guardduty finding: {title}"),
        ("04:30:00", f"guardduty LOW finding ACTIVE → ARCHIVED: {title}"),
        ("05:00:00", f"guardduty CRITICAL finding ACTIVE → RESOLVED: {title}"),
        ("05:59:00", f"New HIGH guardduty finding: {title}"),
    ]
    assert [e["details"]["change"] for e in entries] == ["new", "status", "status", "new"]
    assert entries[1]["details"]["previous_status"] == "ACTIVE"


# -- sustained capacity runs -----------------------------------------------------------------------


def test_sustained_runs_overlapping_the_window(bed: ContextBed) -> None:
    # 03:00-04:20 hot (80 min, overlaps the start), 05:30-06:45 hot (overlaps the end);
    # 01:00-02:30 hot but over before the window; 04:40-05:10 hot but only 30 minutes.
    bed.cpu(CLUSTER, "n1", "2026-10-14T01:00:00Z", 90, 0.95)
    bed.cpu(CLUSTER, "n1", "2026-10-14T02:35:00Z", 20, 0.40)
    bed.cpu(CLUSTER, "n1", "2026-10-14T03:00:00Z", 80, 0.90)
    bed.cpu(CLUSTER, "n1", "2026-10-14T04:25:00Z", 10, 0.50)
    bed.cpu(CLUSTER, "n1", "2026-10-14T04:40:00Z", 30, 0.99)
    bed.cpu(CLUSTER, "n1", "2026-10-14T05:15:00Z", 10, 0.50)
    bed.cpu(CLUSTER, "n1", "2026-10-14T05:30:00Z", 75, 0.92)
    entries = [e for e in bed.context() if e["kind"] == "sustained"]
    got = [
        (e["t"], e["details"]["scope"], e["details"]["start"], e["details"]["end"]) for e in entries
    ]
    assert got == [
        # A run that began before the window is placed at its start, with its real span.
        ("2026-10-14T04:00:00Z", "cluster", "2026-10-14T03:00:00Z", "2026-10-14T04:20:00Z"),
        ("2026-10-14T04:00:00Z", "node", "2026-10-14T03:00:00Z", "2026-10-14T04:20:00Z"),
        ("2026-10-14T04:00:00Z", "nodepool", "2026-10-14T03:00:00Z", "2026-10-14T04:20:00Z"),
        ("2026-10-14T05:30:00Z", "cluster", "2026-10-14T05:30:00Z", "2026-10-14T06:45:00Z"),
        ("2026-10-14T05:30:00Z", "node", "2026-10-14T05:30:00Z", "2026-10-14T06:45:00Z"),
        ("2026-10-14T05:30:00Z", "nodepool", "2026-10-14T05:30:00Z", "2026-10-14T06:45:00Z"),
    ]
    assert [e["summary"] for e in entries[:3]] == [
        "Cluster prod-eks-1 CPU > 85 % for 1h20m, 2026-10-14 03:00 to 2026-10-14 04:20 "
        "(avg 90 %, max 90 %)",
        "Node n1 CPU > 85 % for 1h20m, 2026-10-14 03:00 to 2026-10-14 04:20 (avg 90 %, max 90 %)",
        "Node pool pool-a CPU > 85 % for 1h20m, 2026-10-14 03:00 to 2026-10-14 04:20 "
        "(avg 90 %, max 90 %)",
    ]
    # A window between the runs has none.
    quiet = bed.context(start=datetime(2026, 10, 14, 4, 21), end=datetime(2026, 10, 14, 5, 29))
    assert [e for e in quiet if e["kind"] == "sustained"] == []


def test_ties_are_ordered_by_kind_then_summary(bed: ContextBed) -> None:
    t = "2026-10-14T04:10:00Z"
    bed.add(
        warning("w-b", t, "b-pod"),
        warning("w-a", t, "a-pod"),
        pod("p1", "z-pod", 1, t),
        node("n1", "node-a", False, t),
        finding("f1", "gd-1", "ACTIVE", t, data={"first_seen": t}),
    )
    entries = bed.context()
    assert [(e["kind"], e["summary"][:26]) for e in entries] == [
        ("finding", "New HIGH guardduty finding"),
        ("k8s_warning", "FailedScheduling on Pod pa"),
        ("k8s_warning", "FailedScheduling on Pod pa"),
        ("node_not_ready", "Node node-a NotReady"),
        ("pod_restart", "Pod payments/z-pod restart"),
    ]
    assert "a-pod" in entries[1]["summary"] and "b-pod" in entries[2]["summary"]
    assert bed.context() == entries


# -- Markdown --------------------------------------------------------------------------------------

INCIDENT = {
    "incident_id": "INC-7",
    "title": "checkout 5xx | above 2%",
    "severity": "P1",
    "cluster": CLUSTER,
    "namespace": "payments",
    "opened_at": "2026-10-14T00:05:00-04:00",
}


def test_markdown_section_escapes_cells(bed: ContextBed) -> None:
    bed.add(
        warning(
            "w-1",
            "2026-10-14T04:10:00Z",
            "api-1",
            data={"message": "a | b\nc `code` *bold* [link](x) <br> \\ done"},
        ),
    )
    entries = bed.context()
    entries.insert(
        0,
        {
            "t": "2026-10-14T04:05:00Z",
            "kind": "incident",
            "summary": "opened (P1) by alice",
            "details": {},
        },
    )
    text = render_markdown(INCIDENT, entries)
    lines = text.splitlines()
    assert lines[0] == "## Timeline"
    assert lines[2] == (
        "Incident **INC-7**: checkout 5xx \\| above 2% — severity P1, cluster prod-eks-1, "
        "namespace payments, opened at 2026-10-14 04:05:00 UTC"
    )
    assert lines[4:] == [
        "| time (UTC) | what | details |",
        "|---|---|---|",
        "| 2026-10-14 04:05:00 | Incident | opened (P1) by alice |",
        "| 2026-10-14 04:10:00 | Warning event | FailedScheduling on Pod payments/api-1: a \\| b "
        "c \\`code\\` \\*bold\\* \\[link\\](x) \\<br> \\\\ done |",
    ]
    # Every row keeps exactly four unescaped pipes: newlines and pipes cannot split a cell.
    for line in lines[6:]:
        assert line.replace("\\|", "").count("|") == 4
    assert text.endswith("|\n")


def test_markdown_escapes_newlines_in_any_text() -> None:
    assert escape_cell("a\nb\r\nc\rd|e") == "a<br>b<br>c<br>d\\|e"
    text = render_markdown(
        {"incident_id": "INC-8", "title": "two\nlines", "severity": "P3", "namespace": None},
        [{"t": "2026-10-14T04:05:00.5Z", "kind": "custom_kind", "summary": "x\ny"}],
    )
    assert "Incident **INC-8**: two<br>lines — severity P3\n" in text
    assert "| 2026-10-14 04:05:00 | custom kind | x<br>y |" in text
    empty = render_markdown({"incident_id": "INC-9"}, [])
    assert empty == "## Timeline\n\nIncident **INC-9**\n\n_Nothing recorded in this window._\n"
