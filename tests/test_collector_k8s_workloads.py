"""The Kubernetes collector's container samples and NodePool status, against the API double.

The official `kubernetes` client reads the double (tests/support/k8s_double.py) over HTTP;
events land in a real SQLite ledger. Pods, owners and pools come from tests/k8s_fixtures/ and
are changed in place between runs, as a cluster changes.
"""

from __future__ import annotations

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
from support import REPO, SUPPORT
from support.k8s_double import FakeCluster, Fault, load, serve, write_kubeconfig

from ingest.collectors.kubernetes.collector import KubernetesCollector, KubernetesConfig
from ingest.collectors.runtime import run_once
from store.collectors import load_cursor
from store.ledger import Ledger, RecordedEvent
from store.timefmt import parse_rfc3339_us

TOKEN = "double-token-workloads"
NODE_A = "ip-10-0-12-34.us-gov-west-1.compute.internal"
NODE_B = "ip-10-0-45-67.us-gov-west-1.compute.internal"
PODS = "/api/v1/pods"
POD_METRICS = "/apis/metrics.k8s.io/v1beta1/pods"
REPLICASETS = "/apis/apps/v1/replicasets"
JOBS = "/apis/batch/v1/jobs"
NODEPOOLS = "/apis/karpenter.sh/v1/nodepools"
NODEPOOL = "opsledger.k8s.nodepool.status"
SCRAPE = parse_rfc3339_us("2026-10-14T07:10:03Z")  # metrics-server's latest node timestamp
MI, GI = 2**20, 2**30
NOW = parse_rfc3339_us("2026-10-14T07:11:00Z") / 1e6

Series = dict[tuple[str, str, str], tuple[dict[str, str], float]]


@pytest.fixture
def cluster() -> FakeCluster:
    """A fresh double's state."""
    return FakeCluster()


@pytest.fixture
def kubeconfig(cluster: FakeCluster, tmp_path: Path) -> Iterator[Path]:
    """The double served on 127.0.0.1, and a kubeconfig naming it."""
    with serve(cluster) as url:
        yield write_kubeconfig(tmp_path / "kubeconfig", url, TOKEN)


def collector(kubeconfig: Path, **overrides: Any) -> KubernetesCollector:
    """A collector of the double with short watches and back-offs, and a fixed clock."""
    settings: dict[str, Any] = {
        "kubeconfig": str(kubeconfig),
        "watch_seconds": 0.1,
        "backoff_seconds": 0.01,
        **overrides,
    }
    return KubernetesCollector("prod", KubernetesConfig(**settings), clock=lambda: NOW)


def run(ledger: Ledger, c: KubernetesCollector) -> int:
    """One successful run; the number of events it appended."""
    result = run_once(ledger, c)
    assert result.error is None, result.error
    return result.appended


def recorded(ledger: Ledger, event_type: str) -> list[RecordedEvent]:
    """The recorded events of a type, in ledger order."""
    return [e for e in ledger.iter_all() if e.type == event_type]


def containers(ledger: Ledger) -> Series:
    """Every container sample by (metric, pod, container): its labels and value."""
    out: Series = {}
    for e in recorded(ledger, "opsledger.metric.samples"):
        assert e.samples is not None
        for s in e.samples.to_data()["samples"]:
            if s["name"].startswith("container_"):
                assert parse_rfc3339_us(s["ts"]) == SCRAPE
                key = (s["name"], s["labels"]["pod"], s["labels"]["container"])
                assert key not in out, f"{key} recorded twice"
                out[key] = (s["labels"], s["value"])
    return out


def pod(
    name: str, namespace: str, owner: tuple[str, str] | None, resources: dict[str, Any]
) -> dict[str, Any]:
    """A Running pod on node A with one container `main`, owned by `owner` (kind, name)."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": f"uid-{name}"}
    if owner is not None:
        meta["ownerReferences"] = [
            {"apiVersion": "v1", "kind": owner[0], "name": owner[1], "uid": "u", "controller": True}
        ]
    return {
        "metadata": meta,
        "spec": {"nodeName": NODE_A, "containers": [{"name": "main", "resources": resources}]},
        "status": {"phase": "Running"},
    }


def usage(name: str, namespace: str, cpu: str, memory: str) -> dict[str, Any]:
    """The PodMetrics of a pod with one container `main`."""
    return {
        "metadata": {"name": name, "namespace": namespace},
        "timestamp": "2026-10-14T07:10:00Z",
        "window": "20s",
        "containers": [{"name": "main", "usage": {"cpu": cpu, "memory": memory}}],
    }


def workload(series: Series, pod_name: str) -> tuple[str, str]:
    """The (workload_kind, workload) of a pod's series (the same on every one)."""
    found = {
        (lb["workload_kind"], lb["workload"]) for lb, _ in series.values() if lb["pod"] == pod_name
    }
    assert len(found) == 1, found
    return found.pop()


# -- container samples -----------------------------------------------------------------------


def test_container_samples_and_the_owner_rule(
    sqlite_ledger: Ledger, cluster: FakeCluster, kubeconfig: Path
) -> None:
    """Usage from PodMetrics, requests and limits from specs, each under its pod's workload."""
    cluster.find(PODS, "report-29345280-7hx9k")["status"]["phase"] = "Running"
    small = {"requests": {"cpu": "50m", "memory": "64Mi"}}
    cluster.items(PODS).extend(
        [
            pod("aws-node-x7k2p", "kube-system", ("DaemonSet", "aws-node"), small),
            pod("debug-shell", "default", None, {}),  # no controller and no requests
            pod("legacy-7f8e9d-abcde", "default", ("ReplicaSet", "legacy-7f8e9d"), small),
            pod("migrate-1-q8w7e", "db", ("Job", "migrate-1"), small),
            pod("etl-nightly-3829", "batch", ("Workflow", "etl-nightly"), small),
            pod("vanished-5c6d-zz9x", "default", ("ReplicaSet", "vanished-5c6d"), small),
        ]
    )
    cluster.items(REPLICASETS).append(
        {"metadata": {"name": "legacy-7f8e9d", "namespace": "default", "uid": "rs-orphan"}}
    )
    cluster.items(JOBS).append(
        {"metadata": {"name": "migrate-1", "namespace": "db", "uid": "job-by-hand"}}
    )
    cluster.items(POD_METRICS).extend(
        [
            usage("debug-shell", "default", "1500000n", "12Mi"),
            usage("aws-node-x7k2p", "kube-system", "3m", "40Mi"),
            usage("checkout-api-7c9d8f6b5-gone1", "checkout", "1", "1Gi"),  # pod deleted since
        ]
    )
    run(sqlite_ledger, collector(kubeconfig))
    got = containers(sqlite_ledger)

    api = "checkout-api-7c9d8f6b5-x2k4q"
    assert got[("container_cpu_requests_cores", api, "checkout-api")] == (
        {
            "namespace": "checkout",
            "pod": api,
            "container": "checkout-api",
            "workload_kind": "Deployment",  # its ReplicaSet's owner
            "workload": "checkout-api",
            "node": NODE_A,
        },
        0.25,
    )
    values = {k: v for k, (_, v) in got.items() if k[1] == api}
    assert values == {
        ("container_cpu_requests_cores", api, "checkout-api"): 0.25,
        ("container_memory_requests_bytes", api, "checkout-api"): 512 * MI,
        ("container_memory_limits_bytes", api, "checkout-api"): 512 * MI,  # no CPU limit
        ("container_cpu_usage_cores", api, "checkout-api"): 0.0,
        ("container_memory_working_set_bytes", api, "checkout-api"): 0.0,
        ("container_cpu_requests_cores", api, "istio-proxy"): 0.1,
        ("container_memory_requests_bytes", api, "istio-proxy"): 128 * MI,
        ("container_cpu_usage_cores", api, "istio-proxy"): pytest.approx(0.004123456),
        ("container_memory_working_set_bytes", api, "istio-proxy"): 52344 * 1024,
    }
    assert workload(got, "checkout-api-7c9d8f6b5-p9m2z") == ("Deployment", "checkout-api")
    assert (
        got[("container_cpu_usage_cores", "checkout-api-7c9d8f6b5-p9m2z", "checkout-api")][0][
            "node"
        ]
        == NODE_B
    )
    assert workload(got, "postgres-0") == ("StatefulSet", "postgres")
    assert workload(got, "aws-node-x7k2p") == ("DaemonSet", "aws-node")
    assert workload(got, "report-29345280-7hx9k") == ("CronJob", "report")  # Job → CronJob
    assert workload(got, "migrate-1-q8w7e") == ("Job", "migrate-1")  # a Job of no CronJob
    assert workload(got, "legacy-7f8e9d-abcde") == ("ReplicaSet", "legacy-7f8e9d")  # orphan
    assert workload(got, "etl-nightly-3829") == ("Workflow", "etl-nightly")  # a custom resource
    assert workload(got, "debug-shell") == ("Pod", "debug-shell")
    assert workload(got, "coredns-6b9f8c7d5-m4n5p") == ("Deployment", "coredns")
    assert got[("container_memory_limits_bytes", "coredns-6b9f8c7d5-m4n5p", "coredns")][1] == (
        170 * MI
    )

    # A container without requests: usage only, no requests or limits samples.
    assert {k[0] for k in got if k[1] == "debug-shell"} == {
        "container_cpu_usage_cores",
        "container_memory_working_set_bytes",
    }
    assert got[("container_cpu_usage_cores", "debug-shell", "main")][1] == pytest.approx(0.0015)
    # Pending: requests without a node; its GPU limit is no CPU or memory limit.
    trainer = {k[0]: v for k, v in got.items() if k[1] == "gpu-trainer-5f6d7c8b9-qwert"}
    assert {k: v for k, (_, v) in trainer.items()} == {
        "container_cpu_requests_cores": 2.0,
        "container_memory_requests_bytes": 8 * GI,
    }
    assert all("node" not in labels for labels, _ in trainer.values())
    # A pod whose PodMetrics outlived it, and one whose ReplicaSet is gone: left out.
    pods = {k[1] for k in got}
    assert "checkout-api-7c9d8f6b5-gone1" not in pods and "vanished-5c6d-zz9x" not in pods
    # Every container series rides in the namespaces' event of the scrape.
    events = recorded(sqlite_ledger, "opsledger.metric.samples")
    assert sorted(e.id.split("/")[1] for e in events) == ["namespaces", "nodes", "pvcs"]
    assert [len(cluster.requests(p)) for p in (REPLICASETS, JOBS)] == [1, 1]


def test_finished_pods_and_unreadable_owners(
    sqlite_ledger: Ledger, cluster: FakeCluster, kubeconfig: Path
) -> None:
    """A Succeeded pod sends nothing; pods of unreadable ReplicaSets are left out, not guessed."""
    cluster.fail(Fault(REPLICASETS, status=403, times=10))
    run(sqlite_ledger, collector(kubeconfig))
    got = containers(sqlite_ledger)
    assert {k[1] for k in got} == {"postgres-0"}  # only the StatefulSet's pod is known
    assert len(cluster.requests(JOBS)) == 1  # the Succeeded report pod still needs its Job
    # Without pods of a ReplicaSet or Job, neither is listed.
    cluster.lists[PODS]["items"] = [p for p in cluster.items(PODS) if "postgres" in str(p)]
    before = len(cluster.seen)
    run(sqlite_ledger, collector(kubeconfig, nodepools=False))
    assert not [s for s in cluster.seen[before:] if s.path in (REPLICASETS, JOBS, NODEPOOLS)]
    # workloads: false sends no container samples.
    cluster.find(PODS, "postgres-0")["spec"]["containers"][0]["resources"] = {}
    fresh = len(recorded(sqlite_ledger, "opsledger.metric.samples"))
    run(sqlite_ledger, collector(kubeconfig, workloads=False))
    later = recorded(sqlite_ledger, "opsledger.metric.samples")[fresh:]
    assert later
    for e in later:
        assert e.samples is not None
        assert not [s for s in e.samples.to_data()["samples"] if "container" in s["labels"]]


# -- NodePools -------------------------------------------------------------------------------


def pool_history(ledger: Ledger) -> list[dict[str, Any]]:
    """The recorded NodePool status data, in ledger order."""
    out = []
    for e in recorded(ledger, NODEPOOL):
        assert e.data is not None and e.cluster == "prod"
        assert e.subject == f"nodepool/{e.data['nodepool']}"
        out.append(dict(e.data))
    return out


def test_nodepools_on_change_and_when_deleted(
    sqlite_ledger: Ledger, cluster: FakeCluster, kubeconfig: Path
) -> None:
    """First sight, a limit that changes, a pool that disappears; unchanged pools send nothing."""
    c = collector(kubeconfig)
    run(sqlite_ledger, c)
    first = {
        "nodepool": "general-purpose",
        "limits": {"cpu_cores": 1000.0, "memory_bytes": 1000 * GI},
        "resources": {"cpu_cores": 4.0, "memory_bytes": 15896396 * 1024, "nodes": 1},
        "zones": ["us-gov-west-1a", "us-gov-west-1b"],
    }
    system = {  # no limits; a NotIn zone requirement names no zones
        "nodepool": "system",
        "resources": {"cpu_cores": 0.0, "memory_bytes": 0, "nodes": 0},
    }
    assert pool_history(sqlite_ledger) == [first, system]
    assert {e.time_us for e in recorded(sqlite_ledger, NODEPOOL)} == {int(NOW * 1e6)}

    # The same pools again, from this collector or a restarted one: nothing new.
    assert run(sqlite_ledger, c) == 0
    assert run(sqlite_ledger, collector(kubeconfig)) == 0

    general = cluster.find(NODEPOOLS, "general-purpose")
    general["spec"]["limits"]["cpu"] = 2000
    c.clock = lambda: NOW + 60
    assert run(sqlite_ledger, c) == 1
    cluster.lists[NODEPOOLS]["items"] = [general]
    c.clock = lambda: NOW + 120
    assert run(sqlite_ledger, c) == 1
    assert run(sqlite_ledger, collector(kubeconfig)) == 0
    history = pool_history(sqlite_ledger)
    assert history[2:] == [
        {**first, "limits": {"cpu_cores": 2000.0, "memory_bytes": 1000 * GI}},
        {"nodepool": "system", "deleted": True},
    ]
    times = [e.time_us for e in recorded(sqlite_ledger, NODEPOOL)][2:]
    assert times == [int((NOW + 60) * 1e6), int((NOW + 120) * 1e6)]
    cursor = load_cursor(sqlite_ledger.engine, c.name)
    assert cursor is not None and set(cursor["nodepools"]) == {"general-purpose"}

    # It comes back as it was: a new event, not a conflict with the first one's id.
    cluster.items(NODEPOOLS).append(load("nodepools.json")["items"][1])
    c.clock = lambda: NOW + 180
    assert run(sqlite_ledger, c) == 1
    assert pool_history(sqlite_ledger)[-1] == system


def test_a_cluster_without_the_karpenter_crd(
    sqlite_ledger: Ledger, cluster: FakeCluster, kubeconfig: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """404 on NodePools: no events, no error; pools seen before are then deleted."""
    del cluster.lists[NODEPOOLS]
    c = collector(kubeconfig)
    run(sqlite_ledger, c)
    assert pool_history(sqlite_ledger) == []
    assert len(cluster.requests(NODEPOOLS)) == 1 and "NodePools" not in caplog.text
    assert len(recorded(sqlite_ledger, "opsledger.k8s.node.status")) == 3  # the rest is there

    # Pools seen, then an API failure: unknown is not gone, and the run still succeeds.
    cluster.lists[NODEPOOLS] = load("nodepools.json")
    run(sqlite_ledger, c)
    cluster.fail(Fault(NODEPOOLS, status=500, times=10))
    assert run(sqlite_ledger, collector(kubeconfig, retries=1)) == 0
    assert "skipped NodePools" in caplog.text
    # Karpenter uninstalled: its NodePools are gone.
    cluster.faults.clear()
    del cluster.lists[NODEPOOLS]
    c.clock = lambda: NOW + 60
    assert run(sqlite_ledger, c) == 2
    assert pool_history(sqlite_ledger)[2:] == [
        {"nodepool": "general-purpose", "deleted": True},
        {"nodepool": "system", "deleted": True},
    ]


# -- exactly once ----------------------------------------------------------------------------


def test_a_rerun_appends_only_duplicates(
    sqlite_ledger: Ledger, cluster: FakeCluster, kubeconfig: Path
) -> None:
    """The same scrape and pools again, by this collector or a new one: duplicates, no doubles."""
    c = collector(kubeconfig)
    run(sqlite_ledger, c)
    once = containers(sqlite_ledger)
    events = len(list(sqlite_ledger.iter_all()))
    for again in (c, collector(kubeconfig)):
        result = run_once(sqlite_ledger, again)
        assert result.error is None and result.appended == 0 and result.duplicates >= 1
    assert len(list(sqlite_ledger.iter_all())) == events
    assert containers(sqlite_ledger) == once


@pytest.mark.slow
def test_sigkill_then_rerun_holds_each_sample_and_pool_once(
    sqlite_ledger: Ledger, cluster: FakeCluster, kubeconfig: Path
) -> None:
    """A collector killed at a random point of its runs, then run again until quiet."""
    url = sqlite_ledger.engine.url.render_as_string(hide_password=False)
    worker = SUPPORT / "k8s_collector_worker.py"

    def start(*more: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(worker), url, str(kubeconfig), *more],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )

    rng = random.Random(12)
    for _ in range(2):
        proc = start("3", "0.3")
        time.sleep(rng.uniform(0.5, 2.5))  # before, during or after a snapshot's commit
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        general = cluster.find(NODEPOOLS, "general-purpose")
        general["status"]["resources"]["nodes"] = str(
            int(general["status"]["resources"]["nodes"]) + 1
        )
    proc = start("10", "0.2", "until-quiet")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    containers(sqlite_ledger)  # asserts each (metric, pod, container) is recorded once
    history = pool_history(sqlite_ledger)
    assert [h["nodepool"] for h in history].count("system") == 1
    nodes = [h["resources"]["nodes"] for h in history if h["nodepool"] == "general-purpose"]
    assert nodes == sorted(set(nodes)) and nodes[-1] == 3, (nodes, out)
    assert len(recorded(sqlite_ledger, "opsledger.metric.samples")) == 3
