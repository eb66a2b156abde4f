"""The Kubernetes collector against an API server double: the real client, a real ledger.

The double (tests/k8s_double.py) serves hand-written fixtures in the API's shapes
(tests/k8s_fixtures/) over HTTP on 127.0.0.1; the official `kubernetes` client reaches it
through a generated kubeconfig. The crash test SIGKILLs a real collector process.
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import SUPPORT
from support.k8s_double import CORE_EVENTS, FakeCluster, Fault, load, serve, write_kubeconfig

from ingest.collectors.kubernetes.collector import KubernetesCollector, KubernetesConfig, build
from ingest.collectors.runtime import run_once
from store.collectors import load_cursor
from store.ledger import Ledger, RecordedEvent
from store.timefmt import parse_rfc3339_us

CLUSTER = "prod"
SOURCE = "opsledger/collector/kubernetes/prod"
TOKEN = "double-token-6c1f0a9e-never-logged"
WORKER = SUPPORT / "k8s_collector_worker.py"
REPO = Path(__file__).resolve().parents[1]

NODE_A = "ip-10-0-12-34.us-gov-west-1.compute.internal"
NODE_B = "ip-10-0-45-67.us-gov-west-1.compute.internal"
NODE_C = "ip-10-0-78-90.us-gov-west-1.compute.internal"
BACKOFF_UID = "6f1c9f0e-2b7a-4d7e-9a31-0c5d2e8b4a17"
CRASHING_POD = "0b8e2f3a-5c61-4f0e-8d2a-9e7c1b4d6a20"
PENDING_POD = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f"
NODES = "/api/v1/nodes"
PODS = "/api/v1/pods"


@pytest.fixture
def cluster() -> FakeCluster:
    """A fresh double's state."""
    return FakeCluster()


@pytest.fixture
def kubeconfig(cluster: FakeCluster, tmp_path: Path) -> Iterator[Path]:
    """The double served on 127.0.0.1, and a kubeconfig naming it."""
    with serve(cluster) as url:
        yield write_kubeconfig(tmp_path / "kubeconfig", url, TOKEN)


@pytest.fixture
def lite(sqlite_ledger: Ledger) -> Ledger:
    """The tests that need not run on every backend."""
    return sqlite_ledger


def collector(kubeconfig: Path, **overrides: Any) -> KubernetesCollector:
    """A collector of the double with short watches and back-offs."""
    settings: dict[str, Any] = {
        "kubeconfig": str(kubeconfig),
        "context": "double",
        "watch_seconds": 0.15,
        "backoff_seconds": 0.01,
        "max_backoff_seconds": 2.0,
        **overrides,
    }
    return KubernetesCollector(CLUSTER, KubernetesConfig(**settings))


def run(ledger: Ledger, c: KubernetesCollector) -> int:
    """One successful run; the number of events it appended."""
    result = run_once(ledger, c)
    assert result.error is None, result.error
    return result.appended


def recorded(ledger: Ledger, event_type: str) -> list[RecordedEvent]:
    """The recorded events of a type, in ledger order."""
    return [e for e in ledger.iter_all() if e.type == event_type]


def k8s_events(ledger: Ledger) -> list[RecordedEvent]:
    """The recorded Kubernetes Events."""
    return recorded(ledger, "opsledger.k8s.event")


def versions(ledger: Ledger) -> list[tuple[str, str]]:
    """(uid, resourceVersion) of each recorded Kubernetes Event."""
    out = []
    for e in k8s_events(ledger):
        assert e.data is not None
        meta = e.data["metadata"]
        assert e.id == f"event/{meta['uid']}/{meta['resourceVersion']}"
        out.append((meta["uid"], meta["resourceVersion"]))
    return out


def statuses(ledger: Ledger, kind: str, key: str, name: str) -> list[dict[str, Any]]:
    """The recorded status data of one node or pod, in order."""
    out = []
    for e in recorded(ledger, f"opsledger.k8s.{kind}.status"):
        assert e.data is not None
        if e.data[key] == name:
            out.append(dict(e.data))
    return out


def samples(ledger: Ledger) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every recorded sample value by (name, labels)."""
    out = {}
    for e in recorded(ledger, "opsledger.metric.samples"):
        assert e.samples is not None
        for s in e.samples.to_data()["samples"]:
            out[(s["name"], tuple(sorted(s["labels"].items())))] = s["value"]
    return out


def us(text: str) -> int:
    """UTC microseconds of an RFC 3339 timestamp."""
    return parse_rfc3339_us(text)


# -- Events ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_events_are_recorded_as_the_api_returns_them(
    ledger: Ledger, cluster: FakeCluster, kubeconfig: Path
) -> None:
    """A first run lists every Event; the ledger holds each object with kind and apiVersion."""
    run(ledger, collector(kubeconfig))
    events = {e.data["metadata"]["uid"]: e for e in k8s_events(ledger) if e.data}
    log = cluster.logs[CORE_EVENTS]
    assert set(events) == set(log.objects)
    for uid, obj in log.objects.items():
        e = events[uid]
        assert e.data == {"apiVersion": "v1", "kind": "Event", **obj}
        assert (e.source, e.cluster) == (SOURCE, CLUSTER)
        assert e.id == f"event/{uid}/{obj['metadata']['resourceVersion']}"
    backoff = events[BACKOFF_UID]
    assert backoff.subject == "pod/checkout/checkout-api-7c9d8f6b5-x2k4q"
    assert backoff.time_us == us("2026-10-14T07:02:10Z")  # lastTimestamp
    assert events["d4e5f6a7-b8c9-4d0e-9f1a-2b3c4d5e6f70"].subject == f"node/{NODE_C}"
    # A new-style Event read through core/v1: its series' last observation is its time.
    karpenter = events["e5f6a7b8-c9d0-4e1f-8a2b-3c4d5e6f7a81"]
    assert karpenter.time_us == us("2026-10-14T07:08:41.654321Z")
    assert karpenter.subject == "nodeclaim/general-purpose-x7k2m"
    cursor = load_cursor(ledger.engine, f"kubernetes/{CLUSTER}")
    assert cursor is not None
    assert cursor["events"] == {"api": "v1", "resourceVersion": str(cluster.rv)}


def test_an_updated_event_is_recorded_as_its_updates(
    ledger: Ledger, cluster: FakeCluster, kubeconfig: Path
) -> None:
    """count 1 → 5 is two ledger events; the same versions listed again are duplicates."""
    c = collector(kubeconfig)
    run(ledger, c)
    cluster.update_event(BACKOFF_UID, count=5, lastTimestamp="2026-10-14T07:09:41Z")
    assert run(ledger, c) == 1  # the watch from the cursor's resourceVersion saw the update
    ours = [e for e in k8s_events(ledger) if e.data and e.data["metadata"]["uid"] == BACKOFF_UID]
    assert [e.data["count"] for e in ours if e.data] == [1, 5]
    assert [e.time_us for e in ours] == [us("2026-10-14T07:02:10Z"), us("2026-10-14T07:09:41Z")]
    assert len({e.id for e in ours}) == 2

    # An Event that expires (DELETED) is no new fact: nothing recorded, the cursor moves on.
    cluster.delete_event("a3c5e7f9-1b2d-4f6a-8c0e-2d4f6a8c0e1b")
    assert run(ledger, c) == 0
    cursor = load_cursor(ledger.engine, c.name)
    assert cursor is not None and cursor["events"]["resourceVersion"] == str(cluster.rv)

    # Forced to list again (history compacted): every version it sees is already recorded.
    cluster.compact()
    before = len(k8s_events(ledger))
    result = run_once(ledger, c)
    assert result.error is None and result.appended == 0 and result.duplicates >= 3
    assert len(k8s_events(ledger)) == before
    assert len(cluster.requests(CORE_EVENTS, watch=False)) == 2


def test_resume_after_410_gone_relists_without_duplicates(
    lite: Ledger, cluster: FakeCluster, kubeconfig: Path
) -> None:
    """A watch whose resourceVersion expired (an ERROR event, then HTTP 410) lists again."""
    c = collector(kubeconfig)
    run(lite, c)
    cluster.update_event(BACKOFF_UID, count=2, lastTimestamp="2026-10-14T07:03:10Z")
    added = copy.deepcopy(load("events.json")["items"][0])
    added["metadata"].update(uid="11111111-2222-4333-8444-555555555555", name="x.1")
    cluster.put_event(added)
    cluster.compact()  # the watch from run 1's version now gets a 410 ERROR event
    cluster.put_event(
        {**added, "metadata": {**added["metadata"], "uid": "22222222-2222-4333-8444-555555555555"}}
    )
    run(lite, c)
    assert sorted(versions(lite)) == sorted(cluster.versions())
    watches = cluster.requests(CORE_EVENTS, watch=True)
    lists = cluster.requests(CORE_EVENTS, watch=False)
    assert len(lists) == 2
    # The watch after the relist starts from the new list's version.
    assert int(watches[-1].query["resourceVersion"]) >= cluster.compacted_below

    # 410 as an HTTP status when opening the watch, and on an expired continue token.
    cluster.fail(Fault(CORE_EVENTS, watch=True, status=410))
    cluster.fail(Fault(CORE_EVENTS, watch=False, status=410, on_continue=True))
    cluster.update_event(BACKOFF_UID, count=3, lastTimestamp="2026-10-14T07:04:10Z")
    run(lite, collector(kubeconfig, page_size=2))
    assert sorted(versions(lite)) == sorted(cluster.versions())
    pages = [s.query.get("continue") for s in cluster.requests(CORE_EVENTS, watch=False)[2:]]
    assert [p is None for p in pages] == [True, False, True, False, False], pages


def test_a_dropped_watch_resumes_from_the_last_event(
    lite: Ledger, cluster: FakeCluster, kubeconfig: Path
) -> None:
    """A watch cut off mid-stream is opened again from the last version it delivered."""
    c = collector(kubeconfig)
    run(lite, c)
    start, earlier = cluster.rv, len(cluster.requests(CORE_EVENTS, watch=True))
    template = load("events.json")["items"][1]
    for i in range(3):
        meta = {**template["metadata"], "uid": f"{i}0000000-0000-4000-8000-000000000000"}
        cluster.put_event({**template, "metadata": meta})
    cluster.fail(Fault(CORE_EVENTS, watch=True, drop_after=1))
    run(lite, c)
    assert sorted(versions(lite)) == sorted(cluster.versions())
    watches = cluster.requests(CORE_EVENTS, watch=True)[earlier:]
    assert [int(s.query["resourceVersion"]) for s in watches[:2]] == [start, start + 1]


# -- retries ---------------------------------------------------------------------------------


def test_429_with_retry_after_and_500_are_retried(
    lite: Ledger, cluster: FakeCluster, kubeconfig: Path
) -> None:
    """Throttled: waits as long as Retry-After says; a 500: backs off; then succeeds."""
    cluster.fail(Fault(NODES, status=429, retry_after="1"))
    cluster.fail(Fault(NODES, status=500))
    started = time.monotonic()
    run(lite, collector(kubeconfig))
    assert time.monotonic() - started >= 1.0
    assert len(cluster.requests(NODES)) == 3
    assert len(statuses(lite, "node", "node", NODE_A)) == 1


def test_persistent_failures_fail_the_run_after_bounded_retries(
    lite: Ledger, cluster: FakeCluster, kubeconfig: Path
) -> None:
    """Still failing after `retries`: the run fails (the Events still recorded), the next works."""
    c = collector(kubeconfig, retries=2)
    cluster.fail(Fault(PODS, status=500, times=50))
    result = run_once(lite, c)
    assert result.error is not None and "list pods: HTTP 500" in result.error
    assert len(cluster.requests(PODS)) == 3
    assert len(k8s_events(lite)) == 4  # one source failing does not stop the others
    # A Retry-After longer than we may wait fails at once rather than stalling the scheduler.
    cluster.faults.clear()
    cluster.fail(Fault(NODES, status=429, retry_after="120"))
    started = time.monotonic()
    result = run_once(lite, c)
    assert result.error is not None and "HTTP 429" in result.error
    assert time.monotonic() - started < 5
    run(lite, c)
    assert len(recorded(lite, "opsledger.k8s.pod.status")) == 6


def test_no_secret_reaches_logs_or_run_errors(
    lite: Ledger, cluster: FakeCluster, kubeconfig: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The kubeconfig's token authenticates every request and appears in no log or error."""
    caplog.set_level(logging.DEBUG)
    cluster.fail(Fault(NODES, status=500, times=10))
    cluster.fail(Fault(CORE_EVENTS, status=403, times=10))
    result = run_once(lite, collector(kubeconfig, retries=1))
    assert result.error is not None
    assert TOKEN not in result.error and TOKEN not in caplog.text
    assert {s.authorization for s in cluster.seen} == {f"Bearer {TOKEN}"}


# -- node and pod status ---------------------------------------------------------------------


def test_node_status_is_recorded_on_first_sight_and_on_change_only(
    lite: Ledger, cluster: FakeCluster, kubeconfig: Path
) -> None:
    """Ready/NotReady transitions and shape changes; the same state again is no event."""
    c = collector(kubeconfig)
    run(lite, c)
    (a,) = statuses(lite, "node", "node", NODE_A)
    assert a == {
        "node": NODE_A,
        "ready": True,
        "nodepool": "general-purpose",  # karpenter.sh/nodepool before the compute type
        "zone": "us-gov-west-1a",
        "instance_type": "m6i.xlarge",
        "allocatable": {"cpu_cores": 3.92, "memory_bytes": 15 * 2**30, "pods": 58},
    }
    (b,) = statuses(lite, "node", "node", NODE_B)
    assert b["nodepool"] == "system-ng" and b["allocatable"]["memory_bytes"] == 16069100 * 1024
    (nc,) = statuses(lite, "node", "node", NODE_C)
    assert nc["ready"] is False and nc["reason"] == "NodeStatusUnknown"
    assert (nc["nodepool"], nc["zone"], nc["instance_type"]) == (
        "hybrid",
        "us-gov-west-1c",
        "c6i.2xlarge",
    )
    first = recorded(lite, "opsledger.k8s.node.status")
    assert first[0].time_us == us("2026-10-01T03:14:47Z")  # the Ready condition's transition
    assert first[0].subject == f"node/{NODE_A}"

    run(lite, c)
    run(lite, collector(kubeconfig))  # a restarted collector: duplicates, nothing new
    assert len(recorded(lite, "opsledger.k8s.node.status")) == 3

    ready = next(
        x for x in cluster.find(NODES, NODE_A)["status"]["conditions"] if x["type"] == "Ready"
    )
    ready.update(
        status="False", reason="KubeletNotReady", lastTransitionTime="2026-10-14T08:00:00Z"
    )
    run(lite, c)
    run(lite, c)
    ready.update(status="True", reason="KubeletReady", lastTransitionTime="2026-10-14T08:05:00Z")
    run(lite, collector(kubeconfig))
    run(lite, c)
    cluster.find(NODES, NODE_A)["status"]["allocatable"]["memory"] = "14Gi"
    run(lite, c)
    history = statuses(lite, "node", "node", NODE_A)
    assert [(h["ready"], h.get("reason")) for h in history] == [
        (True, None),
        (False, "KubeletNotReady"),
        (True, None),
        (True, None),
    ]
    assert history[-1]["allocatable"]["memory_bytes"] == 14 * 2**30
    times = [
        e.time_us
        for e in recorded(lite, "opsledger.k8s.node.status")
        if e.subject == f"node/{NODE_A}"
    ]
    # A change of shape alone keeps the time of the readiness it reports.
    assert times[1:] == [us(t) for t in ("2026-10-14T08:00:00Z", *["2026-10-14T08:05:00Z"] * 2)]


def test_pod_restarts_are_not_double_counted_across_runs_and_restarts(
    lite: Ledger, cluster: FakeCluster, kubeconfig: Path
) -> None:
    """Restarts are the summed restartCount, recorded when it changes, never added up twice."""
    c = collector(kubeconfig)
    run(lite, c)
    (crash,) = statuses(lite, "pod", "pod", "checkout-api-7c9d8f6b5-x2k4q")
    assert crash == {
        "namespace": "checkout",
        "pod": "checkout-api-7c9d8f6b5-x2k4q",
        "phase": "Running",
        "reason": "CrashLoopBackOff",
        "restarts": 4,  # 3 + 1 (sidecar)
        "node": NODE_A,
        "owner": "ReplicaSet/checkout-api-7c9d8f6b5",
    }
    (dns,) = statuses(lite, "pod", "pod", "coredns-6b9f8c7d5-m4n5p")
    assert dns["restarts"] == 1 and "reason" not in dns  # init containers count too
    (job,) = statuses(lite, "pod", "pod", "report-29345280-7hx9k")
    assert job["phase"] == "Succeeded" and "reason" not in job and job["owner"].startswith("Job/")
    (pending,) = statuses(lite, "pod", "pod", "gpu-trainer-5f6d7c8b9-qwert")
    assert pending["reason"] == "PendingTooLong" and "node" not in pending
    pend = next(e for e in recorded(lite, "opsledger.k8s.pod.status") if PENDING_POD in e.id)
    assert pend.time_us == us("2026-10-14T06:10:00Z")  # created + pending_after (10m)

    for again in (c, collector(kubeconfig), c):
        run(lite, again)
    assert len(recorded(lite, "opsledger.k8s.pod.status")) == 6

    pod = cluster.find(PODS, "checkout-api-7c9d8f6b5-x2k4q")
    app = pod["status"]["containerStatuses"][0]
    app.update(
        restartCount=5,
        state={"running": {"startedAt": "2026-10-14T07:20:02Z"}},
        lastState={
            "terminated": {
                "exitCode": 137,
                "reason": "OOMKilled",
                "startedAt": "2026-10-14T07:15:00Z",
                "finishedAt": "2026-10-14T07:20:00Z",
            }
        },
    )
    run(lite, collector(kubeconfig))
    run(lite, c)
    history = statuses(lite, "pod", "pod", "checkout-api-7c9d8f6b5-x2k4q")
    assert [(h["restarts"], h.get("reason")) for h in history] == [
        (4, "CrashLoopBackOff"),
        (6, "OOMKilled"),
    ]
    # Restarts counted as a projection counts them: increases between statuses, from zero.
    counts = [0] + [h["restarts"] for h in history]
    assert sum(max(0, b - a) for a, b in itertools.pairwise(counts)) == 6


def test_a_pod_pending_longer_than_pending_after_gets_pending_too_long(
    lite: Ledger, cluster: FakeCluster, kubeconfig: Path
) -> None:
    """Unschedulable first, PendingTooLong once `pending_after` has passed since creation."""
    created = us("2026-10-14T06:00:00Z") / 1e6
    c = collector(kubeconfig, pending_after="15m")
    c.clock = lambda: created + 5 * 60
    run(lite, c)
    c.clock = lambda: created + 16 * 60
    run(lite, c)
    history = statuses(lite, "pod", "pod", "gpu-trainer-5f6d7c8b9-qwert")
    assert [h["reason"] for h in history] == ["Unschedulable", "PendingTooLong"]
    times = [e.time_us for e in recorded(lite, "opsledger.k8s.pod.status") if PENDING_POD in e.id]
    assert times == [us("2026-10-14T06:00:00Z"), us("2026-10-14T06:15:00Z")]


# -- samples ---------------------------------------------------------------------------------


def test_usage_requests_and_pvc_samples(
    lite: Ledger, cluster: FakeCluster, kubeconfig: Path
) -> None:
    """Canonical metrics from nodes, pods, PVCs, metrics.k8s.io and the kubelet summary."""
    c = collector(kubeconfig)
    run(lite, c)
    got = samples(lite)
    events = recorded(lite, "opsledger.metric.samples")
    scrape = us("2026-10-14T07:10:03Z")  # metrics-server's latest node timestamp
    assert {e.time_us for e in events} == {scrape}
    assert sorted(e.id.split("/")[1] for e in events) == ["namespaces", "nodes", "pvcs"]
    for e in events:
        assert e.samples is not None and set(e.samples.ts_us.tolist()) == {scrape}

    def node(n: str, pool: str, zone: str) -> tuple[tuple[str, str], ...]:
        return tuple(sorted({"node": n, "nodepool": pool, "zone": zone}.items()))

    a = node(NODE_A, "general-purpose", "us-gov-west-1a")
    b = node(NODE_B, "system-ng", "us-gov-west-1b")
    nc = node(NODE_C, "hybrid", "us-gov-west-1c")
    assert got[("node_cpu_allocatable_cores", a)] == 3.92
    assert got[("node_memory_allocatable_bytes", a)] == 15 * 2**30
    assert got[("node_cpu_usage_cores", a)] == pytest.approx(1.523456789)
    assert got[("node_memory_usage_bytes", a)] == 6291456 * 1024
    assert got[("node_cpu_usage_cores", b)] == pytest.approx(0.245691866)
    assert got[("node_cpu_allocatable_cores", nc)] == 7.91
    assert ("node_cpu_usage_cores", nc) not in got  # NotReady: no metrics

    def ns(name: str) -> tuple[tuple[str, str], ...]:
        return (("namespace", name),)

    mi = 2**20
    assert got[("namespace_pod_count", ns("checkout"))] == 2
    assert got[("namespace_cpu_requests_cores", ns("checkout"))] == pytest.approx(0.7)
    assert got[("namespace_memory_requests_bytes", ns("checkout"))] == 2 * 640 * mi
    assert got[("namespace_cpu_usage_cores", ns("checkout"))] == pytest.approx(0.19)
    assert (
        got[("namespace_memory_usage_bytes", ns("checkout"))] == (52344 + 55400) * 1024 + 401 * mi
    )
    # batch: the Succeeded job counts as a pod but not its requests; nothing runs there.
    assert got[("namespace_pod_count", ns("batch"))] == 2
    assert got[("namespace_cpu_requests_cores", ns("batch"))] == 2.0
    assert got[("namespace_memory_requests_bytes", ns("batch"))] == 8 * 2**30
    assert got[("namespace_cpu_usage_cores", ns("batch"))] == 0.0
    assert got[("namespace_cpu_requests_cores", ns("kube-system"))] == pytest.approx(0.1)

    def pvc(n: str, claim: str) -> tuple[tuple[str, str], ...]:
        return (("namespace", n), ("persistentvolumeclaim", claim))

    assert got[("pvc_capacity_bytes", pvc("db", "data-postgres-0"))] == 100 * 2**30
    assert got[("pvc_used_bytes", pvc("db", "data-postgres-0"))] == 64424509440
    assert got[("pvc_capacity_bytes", pvc("monitoring", "prometheus-db"))] == 50 * 2**30
    assert ("pvc_capacity_bytes", pvc("batch", "scratch")) not in got  # not bound yet
    proxied = [s.path for s in cluster.seen if s.path.endswith("/proxy/stats/summary")]
    assert proxied == [f"/api/v1/nodes/{NODE_A}/proxy/stats/summary"]

    # The same scrape again is a duplicate; without metrics-server, the run still works.
    run(lite, c)
    assert len(recorded(lite, "opsledger.metric.samples")) == 3
    cluster.metrics_available = False
    c.clock = lambda: us("2026-10-14T07:11:30.5Z") / 1e6
    run(lite, c)
    later = recorded(lite, "opsledger.metric.samples")[3:]
    assert {e.time_us for e in later} == {us("2026-10-14T07:11:30Z")}
    names = {s["name"] for e in later if e.samples for s in e.samples.to_data()["samples"]}
    assert "node_cpu_usage_cores" not in names and "node_cpu_allocatable_cores" in names


def test_events_k8s_io_v1_objects(lite: Ledger, cluster: FakeCluster, kubeconfig: Path) -> None:
    """events.k8s.io/v1 Events are recorded in their own shape, with their own ids."""
    c = collector(kubeconfig, events_api="events.k8s.io/v1", usage=False, pvc_usage=False)
    run(lite, c)
    (e,) = k8s_events(lite)
    assert e.data is not None
    assert (
        e.data["apiVersion"] == "events.k8s.io/v1" and e.data["regarding"]["name"] == "postgres-0"
    )
    assert (
        e.id == f"events.k8s.io/{e.data['metadata']['uid']}/{e.data['metadata']['resourceVersion']}"
    )
    assert e.time_us == us("2026-10-14T07:04:30Z")  # deprecatedLastTimestamp
    assert not [s for s in cluster.seen if "metrics.k8s.io" in s.path or "proxy" in s.path]


def test_an_events_field_selector_is_passed_to_list_and_watch(
    lite: Ledger, cluster: FakeCluster, kubeconfig: Path
) -> None:
    """`events_field_selector: type=Warning` keeps Normal Events out, listed or watched."""
    c = collector(kubeconfig, events_field_selector="type=Warning", usage=False)
    run(lite, c)
    normal = load("events.json")["items"][2]
    cluster.put_event({**normal, "metadata": {**normal["metadata"], "uid": "n-2"}})
    cluster.update_event(BACKOFF_UID, count=2)
    run(lite, c)
    assert {e.data["type"] for e in k8s_events(lite) if e.data} == {"Warning"}
    assert len(k8s_events(lite)) == 3
    assert {s.query.get("fieldSelector") for s in cluster.requests(CORE_EVENTS)} == {"type=Warning"}


# -- crash safety ----------------------------------------------------------------------------


def start_worker(
    url: str, kubeconfig: Path, runs: int, watch: float, *more: str
) -> subprocess.Popen[str]:
    """A collector process that runs `runs` times against the double."""
    return subprocess.Popen(
        [sys.executable, str(WORKER), url, str(kubeconfig), str(runs), str(watch), *more],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


@pytest.mark.slow
def test_sigkill_mid_run_then_run_again_holds_every_item_exactly_once(
    backend_url: str, ledger: Ledger, cluster: FakeCluster, kubeconfig: Path
) -> None:
    """Kill -9 a collector mid-list and mid-watch while Events change; then run it to the end.

    Every version of every Event is then recorded once (none missing, none under two ids), and
    the unchanged nodes, pods and scrape once each, however many runs saw them.
    """
    rng = random.Random(5)
    template = load("events.json")["items"][0]
    uids = [f"{i:08d}-aaaa-4bbb-8ccc-dddddddddddd" for i in range(40)]

    def add(uid: str) -> None:
        cluster.put_event({**template, "metadata": {**template["metadata"], "uid": uid}})

    for uid in uids[:10]:  # with the fixtures' 4: a list of 7 pages of 2
        add(uid)
    name = f"kubernetes/{CLUSTER}"

    # 1. Killed mid-list: some pages committed, the cursor has no resourceVersion yet.
    cluster.list_delay = 0.1
    proc = start_worker(backend_url, kubeconfig, runs=3, watch=0.6)
    assert proc.stdout is not None
    lines = [proc.stdout.readline() for _ in range(rng.randint(2, 4))]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert all(line.startswith("emit") for line in lines), lines
    cursor = load_cursor(ledger.engine, name)
    assert cursor is not None and cursor["events"]["resourceVersion"] is None
    assert 0 < len(k8s_events(ledger)) < 14
    cluster.list_delay = 0.0

    # 2, 3. Killed mid-watch while Events are created and updated (one commit per change).
    for round_, changes in ((2, uids[10:25]), (3, uids[25:])):
        proc = start_worker(backend_url, kubeconfig, runs=3, watch=0.6)
        assert proc.stdout is not None
        lines = [proc.stdout.readline()]
        while lines[-1].split()[-1] == "None":  # change Events once the list is committed
            lines.append(proc.stdout.readline())
        assert lines[-1].startswith("emit"), lines
        for n, uid in enumerate(changes):
            add(uid)
            cluster.update_event(uids[n], count=round_)
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.1))
        assert proc.poll() is None, "the collector ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    # Run again until a run finds nothing new (the first one catches up on the backlog).
    proc = start_worker(backend_url, kubeconfig, 10, 0.4, "until-quiet")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    got, want = versions(ledger), cluster.versions()
    assert len(got) == len(set(got)) and set(got) == want, (sorted(want - set(got)), out)
    assert len(recorded(ledger, "opsledger.k8s.node.status")) == 3
    assert len(recorded(ledger, "opsledger.k8s.pod.status")) == 6
    assert len(recorded(ledger, "opsledger.metric.samples")) == 3
    cursor = load_cursor(ledger.engine, f"kubernetes/{CLUSTER}")
    assert cursor is not None and int(cursor["events"]["resourceVersion"]) >= cluster.rv


# -- configuration ---------------------------------------------------------------------------


def test_config_and_build() -> None:
    """The config refuses unknown fields and contradictions; build names the collector."""
    cfg = KubernetesConfig()
    assert (cfg.in_cluster, cfg.interval, cfg.pending_after, cfg.watch_seconds) == (
        False,
        "1m",
        "10m",
        30.0,
    )
    c = build("prod-eks-1", KubernetesConfig(interval="5m"))
    assert (c.name, c.interval_seconds) == ("kubernetes/prod-eks-1", 300.0)
    bad: list[dict[str, Any]] = [
        {"token": "x"},
        {"in_cluster": True, "kubeconfig": "/k"},
        {"interval": "1 minute"},
        {"watch_seconds": 90},
        {"watch_seconds": 0},
        {"events_api": "v2"},
    ]
    for fields in bad:
        with pytest.raises(ValueError):
            KubernetesConfig(**fields)
    with pytest.raises(ValueError):
        build("no spaces", cfg)


def test_credentials_that_cannot_load_fail_the_run_cleanly(lite: Ledger, tmp_path: Path) -> None:
    """No ServiceAccount or kubeconfig: a failed run with a reason, not a crashed scheduler."""
    for cfg in (
        KubernetesConfig(in_cluster=True),
        KubernetesConfig(kubeconfig=str(tmp_path / "missing")),
    ):
        result = run_once(lite, KubernetesCollector(CLUSTER, cfg))
        assert result.error is not None and "credentials" in result.error
