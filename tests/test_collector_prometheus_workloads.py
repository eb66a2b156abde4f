"""The per-container workload metrics of the Prometheus collector, against a real Prometheus.

Six hours of cAdvisor- and kube-state-metrics-shaped series are back-filled with promtool:
pods of a Deployment (through its ReplicaSet), a CronJob (through its Job), a StatefulSet
scheduled late, a DaemonSet reported by two kube-state-metrics replicas, a bare pod, orphan
ReplicaSet and Job, a custom controller, a pod with a non-controller owner only, a pod
kube-state-metrics does not know, a container without requests, and a pod that goes away
mid-range. The expected samples are computed here from the same numbers with Prometheus 2.x's
documented rules (5-minute look-back, `rate`'s extrapolation) and the owner rule of
docs/collectors.md, independently of the default PromQL.
"""

from __future__ import annotations

import functools
import math
import re
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from support import REPO
from support.prom import (
    PrometheusServer,
    PrometheusUnavailable,
    openmetrics_series,
    start_prometheus,
)

from ingest.collectors.prometheus.collector import PrometheusCollector, PrometheusConfig
from ingest.collectors.prometheus.promql import DEFAULT_QUERIES
from ingest.collectors.prometheus.workloads import POD_INFO, WORKLOAD_QUERIES
from ingest.collectors.prometheus.workloads import PODS as PODS_QUERY
from ingest.collectors.runtime import run_once
from store.contract import METRIC_SAMPLES
from store.ledger import Ledger
from store.migrate import upgrade

D0 = 1_709_251_200  # 2024-03-01T00:00:00Z, the first scrape
SCRAPE = 60
N = 6 * 60 + 1  # six hours of scrapes, both ends included
LOOKBACK = 5  # Prometheus's 5-minute look-back and the [5m] range, in scrapes
CLUSTER = "gov-prod"
LAG = 120
NODE_A = "ip-10-0-1-10.us-gov-west-1.compute.internal"
NODE_B = "ip-10-0-2-20.us-gov-west-1.compute.internal"
INSTANCE = {NODE_A: "10.0.1.10:10250", NODE_B: "10.0.2.20:10250"}
MIB, GIB = 2**20, 2**30
Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Container:
    """A container: its requests and limits (None: not set, so no series)."""

    name: str
    cpu_request: float | None = None
    memory_request: float | None = None
    cpu_limit: float | None = None
    memory_limit: float | None = None


@dataclass(frozen=True)
class Pod:
    """A pod as kube-state-metrics and cAdvisor report it, over scrape indexes."""

    namespace: str
    name: str
    owner: tuple[str, str] | None  # the controller (kind, name); None: owner_kind="<none>"
    node: str
    containers: tuple[Container, ...]
    scheduled: int = 0  # the first scrape with a node (Pending without one before)
    running: tuple[int, int] = (0, N)  # [first, end) scrapes with phase Running
    gone: int = N  # every series of the pod stops here (the pod was deleted)
    ksm_replicas: int = 1  # kube-state-metrics replicas reporting the pod (0: not at all)
    controller: bool = True  # False: the owner reference is not a controller


PODS = (
    Pod(
        "shop",
        "web-7c9d8f6b5-x2k4q",
        ("ReplicaSet", "web-7c9d8f6b5"),
        NODE_A,
        (Container("app", 0.5, 512 * MIB, 1.0, GIB), Container("log-shipper")),
    ),
    # Deleted after 200 scrapes: its series stop, the look-back keeps them five minutes.
    Pod(
        "shop",
        "web-7c9d8f6b5-p8m2n",
        ("ReplicaSet", "web-7c9d8f6b5"),
        NODE_B,
        (Container("app", 0.5, 512 * MIB, 1.0, GIB),),
        gone=200,
    ),
    Pod(
        "shop",
        "legacy-5d8f9-qw7rt",
        ("ReplicaSet", "legacy-5d8f9"),
        NODE_B,
        (Container("app", 0.25, 256 * MIB),),
    ),
    # Pending 30 scrapes, Running 120, then Succeeded (its requests no longer count).
    Pod(
        "batch",
        "report-28391040-abcde",
        ("Job", "report-28391040"),
        NODE_B,
        (Container("main", 1.0, 2 * GIB, None, 2 * GIB),),
        running=(30, 150),
    ),
    Pod("batch", "migrate-9k2lm", ("Job", "migrate"), NODE_A, (Container("migrate", 0.5, GIB),)),
    # Unscheduled (no node) for 20 scrapes, then Running on node A.
    Pod(
        "data",
        "db-0",
        ("StatefulSet", "db"),
        NODE_A,
        (Container("postgres", 2.0, 4 * GIB, None, 4 * GIB),),
        scheduled=20,
        running=(22, N),
    ),
    Pod(
        "kube-system",
        "node-exporter-7xk2p",
        ("DaemonSet", "node-exporter"),
        NODE_A,
        (Container("node-exporter", 0.1, 64 * MIB, 0.2, 128 * MIB),),
        ksm_replicas=2,
    ),
    Pod("default", "debug-shell", None, NODE_B, (Container("shell"),)),
    Pod(
        "default",
        "adopted-1",
        ("ConfigMap", "settings"),
        NODE_B,
        (Container("app", 0.05, 32 * MIB),),
        controller=False,
    ),
    Pod("ci", "build-42-main", ("Workflow", "build-42"), NODE_A, (Container("main", 1.5, GIB),)),
    Pod("default", "ghost-1", None, NODE_A, (Container("c"),), ksm_replicas=0),
)
# ReplicaSet → its controller (None: no owner); Job → its controller.
REPLICASETS = {("shop", "web-7c9d8f6b5"): ("Deployment", "web"), ("shop", "legacy-5d8f9"): None}
JOBS = {("batch", "report-28391040"): ("CronJob", "report"), ("batch", "migrate"): None}
# What the owner rule gives each pod: the test's own statement of docs/collectors.md.
WORKLOAD_OF = {
    "web-7c9d8f6b5-x2k4q": ("Deployment", "web"),
    "web-7c9d8f6b5-p8m2n": ("Deployment", "web"),
    "legacy-5d8f9-qw7rt": ("ReplicaSet", "legacy-5d8f9"),
    "report-28391040-abcde": ("CronJob", "report"),
    "migrate-9k2lm": ("Job", "migrate"),
    "db-0": ("StatefulSet", "db"),
    "node-exporter-7xk2p": ("DaemonSet", "node-exporter"),
    "debug-shell": ("Pod", "debug-shell"),
    "adopted-1": ("Pod", "adopted-1"),
    "build-42-main": ("Workflow", "build-42"),
}
RESOURCES = {
    # metric → (kube-state-metrics family, resource, unit, Container field)
    "container_cpu_requests_cores": ("requests", "cpu", "core", "cpu_request"),
    "container_memory_requests_bytes": ("requests", "memory", "byte", "memory_request"),
    "container_cpu_limits_cores": ("limits", "cpu", "core", "cpu_limit"),
    "container_memory_limits_bytes": ("limits", "memory", "byte", "memory_limit"),
}


@dataclass
class Raw:
    """One back-filled series: its values at the scrape indexes, NaN where it has none."""

    name: str
    labels: dict[str, str]
    values: np.ndarray


@dataclass
class Dataset:
    series: list[Raw] = field(default_factory=list)

    def add(self, name: str, labels: Mapping[str, str], values: np.ndarray) -> None:
        self.series.append(Raw(name, dict(labels), values))

    def of(self, name: str, **match: str) -> list[Raw]:
        return [
            s
            for s in self.series
            if s.name == name and all(s.labels.get(k, "") == v for k, v in match.items())
        ]

    def openmetrics(self) -> str:
        lines: list[str] = []
        for s in self.series:
            samples = [
                (D0 + SCRAPE * i, float(v)) for i, v in enumerate(s.values) if not math.isnan(v)
            ]
            lines.extend(openmetrics_series(s.name, s.labels, samples))
        return "\n".join(lines) + "\n# EOF\n"


def during(first: int, end: int, value: float | np.ndarray) -> np.ndarray:
    """`value` at the scrapes [first, end), NaN elsewhere."""
    out = np.full(N, np.nan)
    out[first:end] = value[first:end] if isinstance(value, np.ndarray) else value
    return out


@functools.cache
def make_dataset() -> Dataset:
    rng = np.random.default_rng(20240301)
    ds = Dataset()
    for ns_rs, parent in REPLICASETS.items():
        kind, name = parent or ("<none>", "<none>")
        ctl = "true" if parent else "<none>"
        labels = {"namespace": ns_rs[0], "replicaset": ns_rs[1]}
        ds.add(
            "kube_replicaset_owner",
            labels | {"owner_kind": kind, "owner_name": name, "owner_is_controller": ctl},
            np.ones(N),
        )
    for ns_job, parent in JOBS.items():
        kind, name = parent or ("<none>", "<none>")
        ctl = "true" if parent else "<none>"
        labels = {"namespace": ns_job[0], "job_name": ns_job[1]}
        ds.add(
            "kube_job_owner",
            labels | {"owner_kind": kind, "owner_name": name, "owner_is_controller": ctl},
            np.ones(N),
        )
    for pod in PODS:
        add_pod(ds, pod, rng)
    return ds


def phase_at(pod: Pod, i: int) -> str:
    first, end = pod.running
    return "Pending" if i < first else "Running" if i < end else "Succeeded"


def add_pod(ds: Dataset, pod: Pod, rng: np.random.Generator) -> None:
    ident = {"namespace": pod.namespace, "pod": pod.name, "uid": f"uid-{pod.name}"}
    for replica in range(pod.ksm_replicas):
        ksm = ident | {"job": "kube-state-metrics", "instance": f"10.0.9.{replica + 1}:8080"}
        # kube-state-metrics labels a pod with its node once scheduled: a new series.
        spans = [(0, pod.scheduled, {}), (pod.scheduled, pod.gone, {"node": pod.node})]
        for first, end, where in spans:
            if first < end:
                ds.add("kube_pod_info", ksm | where, during(first, end, 1.0))
        kind, name = pod.owner or ("<none>", "<none>")
        controller = "<none>" if pod.owner is None else str(pod.controller).lower()
        owner = {"owner_kind": kind, "owner_name": name, "owner_is_controller": controller}
        ds.add("kube_pod_owner", ksm | owner, during(0, pod.gone, 1.0))
        for phase in ("Pending", "Running", "Succeeded", "Failed"):
            on = np.array([float(phase_at(pod, i) == phase) for i in range(N)])
            ds.add("kube_pod_status_phase", ksm | {"phase": phase}, during(0, pod.gone, on))
        for c in pod.containers:
            for family, resource, unit, attr in RESOURCES.values():
                amount = getattr(c, attr)
                if amount is None:
                    continue  # kube-state-metrics has no series for what is not set
                labels = ksm | {"container": c.name, "resource": resource, "unit": unit}
                for first, end, where in spans:
                    if first < end:
                        ds.add(
                            f"kube_pod_container_resource_{family}",
                            labels | where,
                            during(first, end, amount),
                        )
    # cAdvisor: the containers while Running, the pause container and the pod-level cgroup.
    first, end = max(pod.running[0], pod.scheduled), min(pod.running[1], pod.gone)
    cadvisor = {
        "namespace": pod.namespace,
        "pod": pod.name,
        "job": "kubelet",
        "metrics_path": "/metrics/cadvisor",
        "instance": INSTANCE[pod.node],
    }
    cpu_total, mem_total = np.zeros(N), np.zeros(N)
    for c in (*pod.containers, Container("POD")):
        pause = c.name == "POD"
        cpu = 3.0 + np.cumsum(rng.uniform(0, 0.1 if pause else 40.0, N).round(3))
        mem = np.round((1e6 if pause else 1e8) + rng.uniform(0, 5e7, N))
        labels = cadvisor | {
            "container": c.name,
            "id": f"/kubepods/{pod.name}/{c.name}",
            "image": "registry.k8s.io/pause:3.9" if pause else f"example/{c.name}:1",
            "name": f"k8s_{c.name}_{pod.name}",
        }
        ds.add("container_cpu_usage_seconds_total", labels, during(first, end, cpu))
        ds.add("container_memory_working_set_bytes", labels, during(first, end, mem))
        cpu_total, mem_total = cpu_total + cpu, mem_total + mem
    pod_cgroup = cadvisor | {"id": f"/kubepods/{pod.name}"}
    ds.add("container_cpu_usage_seconds_total", pod_cgroup, during(first, end, cpu_total))
    ds.add("container_memory_working_set_bytes", pod_cgroup, during(first, end, mem_total))


# -- the oracle: Prometheus 2.x's rules, applied to the back-filled numbers --------------------


def window(s: Raw, i: int) -> list[int]:
    """The scrapes of `s` in [t - 5m, t] (both ends included in Prometheus 2.x)."""
    return [j for j in range(max(0, i - LOOKBACK), i + 1) if not math.isnan(s.values[j])]


def instant(s: Raw, i: int) -> float | None:
    """An instant selector at scrape i: the newest sample at most 5 minutes old."""
    js = window(s, i)
    return float(s.values[js[-1]]) if js else None


def rate(s: Raw, i: int) -> float | None:
    """`rate(s[5m])` at scrape i: Prometheus 2.x's extrapolatedRate for a counter."""
    js = window(s, i)
    if len(js) < 2:
        return None
    first, last = float(s.values[js[0]]), float(s.values[js[-1]])
    result = last - first  # the counters never reset here
    range_start, range_end = (i - LOOKBACK) * SCRAPE, i * SCRAPE
    to_start = js[0] * SCRAPE - range_start
    to_end = range_end - js[-1] * SCRAPE
    sampled = (js[-1] - js[0]) * SCRAPE
    average = sampled / (len(js) - 1)
    if result > 0 and first >= 0:
        to_start = min(to_start, sampled * (first / result))
    threshold = average * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average / 2
    interval += to_end if to_end < threshold else average / 2
    return result * (interval / sampled) / (LOOKBACK * SCRAPE)


def pod_labels(ds: Dataset, namespace: str, pod: str, i: int) -> dict[str, str]:
    """node, workload_kind and workload of a pod at scrape i, by the documented owner rule."""
    infos = [s for s in ds.of("kube_pod_info", namespace=namespace, pod=pod) if instant(s, i)]
    if not infos:
        return {}  # kube-state-metrics does not know the pod: nothing to say
    labels = {}
    nodes = sorted({s.labels["node"] for s in infos if s.labels.get("node")})
    if nodes:
        labels["node"] = nodes[0]
    owners = [
        s
        for s in ds.of("kube_pod_owner", namespace=namespace, pod=pod, owner_is_controller="true")
        if instant(s, i) is not None and s.labels["owner_kind"] != "<none>"
    ]
    if not owners:
        return labels | {"workload_kind": "Pod", "workload": pod}
    kind, name = owners[0].labels["owner_kind"], owners[0].labels["owner_name"]
    parents = {"ReplicaSet": ("kube_replicaset_owner", "replicaset", "Deployment")}
    parents["Job"] = ("kube_job_owner", "job_name", "CronJob")
    if kind in parents:
        metric, key, parent_kind = parents[kind]
        found = [
            s
            for s in ds.of(metric, namespace=namespace, owner_kind=parent_kind)
            if s.labels[key] == name
            and s.labels["owner_is_controller"] == "true"
            and instant(s, i) is not None
        ]
        if found:
            kind, name = parent_kind, found[0].labels["owner_name"]
    return labels | {"workload_kind": kind, "workload": name}


def holds_resources(ds: Dataset, namespace: str, pod: str, i: int) -> bool:
    """Pending or Running at scrape i (kube_pod_status_phase == 1)."""
    phases = ds.of("kube_pod_status_phase", namespace=namespace, pod=pod)
    return any(instant(s, i) == 1.0 for s in phases if s.labels["phase"] in ("Pending", "Running"))


Expected = dict[tuple[str, Labels], dict[int, float]]


@functools.cache
def expected_samples(first: int, end: int) -> Expected:
    """(metric, labels) → {ts: value} over the scrapes [first, end)."""
    ds = make_dataset()
    out: Expected = defaultdict(dict)

    def put(metric: str, ns: str, pod: str, container: str, i: int, value: float) -> None:
        labels = {"namespace": ns, "pod": pod, "container": container}
        labels |= pod_labels(ds, ns, pod, i)
        out[(metric, tuple(sorted(labels.items())))][D0 + SCRAPE * i] = value

    usage: dict[tuple[str, str, str], list[Raw]] = defaultdict(list)
    for s in ds.series:
        if s.name.startswith("container_") and s.labels.get("container", "") not in ("", "POD"):
            usage[(s.name, s.labels["namespace"], s.labels["pod"])].append(s)
    for (name, ns, pod), group in usage.items():
        metric = "container_cpu_usage_cores" if "cpu" in name else name
        evaluate = rate if "cpu" in name else instant
        for i in range(first, end):
            by_container: dict[str, float] = defaultdict(float)
            for s in group:
                v = evaluate(s, i)
                if v is not None:  # sum by (...) over the cgroups that have a value
                    by_container[s.labels["container"]] += v
            for container, v in by_container.items():
                put(metric, ns, pod, container, i, v)
    for metric, (family, resource, unit, _) in RESOURCES.items():
        keyed: dict[tuple[str, str, str], list[Raw]] = defaultdict(list)
        for s in ds.of(f"kube_pod_container_resource_{family}", resource=resource, unit=unit):
            keyed[(s.labels["namespace"], s.labels["pod"], s.labels["container"])].append(s)
        for (ns, pod, container), group in keyed.items():
            for i in range(first, end):
                values = [v for s in group if (v := instant(s, i)) is not None]
                if values and holds_resources(ds, ns, pod, i):
                    put(metric, ns, pod, container, i, max(values))
    return dict(out)


# -- the collector against the server ----------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusServer]:
    """A Prometheus serving the dataset (back-fill and start: about a second)."""
    try:
        server = start_prometheus(make_dataset().openmetrics())
    except PrometheusUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.close()


ONLY_WORKLOADS = {name: "" for name in DEFAULT_QUERIES if name not in WORKLOAD_QUERIES}
WORKLOAD_LABELS = {"namespace", "pod", "container", "node", "workload_kind", "workload"}


def new_ledger(path: Path) -> Ledger:
    url = f"sqlite:///{path / 'ledger.db'}"
    upgrade(url)
    return Ledger.from_url(url)


def collect(prometheus: PrometheusServer, ledger: Ledger, **overrides: Any) -> str | None:
    """One run collecting [D0, D0 + 6 h) in 1 h chunks; its error, if any."""
    fields: dict[str, Any] = {
        "url": prometheus.url,
        "step": "60s",
        "backfill": "6h",
        "chunk": "1h",
        "lag": f"{LAG}s",
        "queries": ONLY_WORKLOADS,
    }
    cfg = PrometheusConfig(**(fields | overrides))
    now = D0 + 6 * 3600 - SCRAPE + LAG  # the run ends at D0 + 6 h
    return run_once(ledger, PrometheusCollector(CLUSTER, cfg, clock=lambda: now)).error


def recorded(ledger: Ledger) -> Expected:
    """(metric, labels) → {ts: value} of every sample the collector appended."""
    out: Expected = defaultdict(dict)
    for event in ledger.iter_all():
        assert event.type == METRIC_SAMPLES and event.samples is not None
        batch = event.samples
        for k, t, v in zip(
            batch.series_index.tolist(), batch.ts_us.tolist(), batch.values.tolist(), strict=True
        ):
            name, raw = batch.series[k]
            points = out[(name, tuple(sorted(orjson.loads(raw).items())))]
            assert t // 10**6 not in points, "a sample recorded twice"
            points[t // 10**6] = v
    return dict(out)


@pytest.fixture(scope="module")
def collected(prometheus: PrometheusServer, tmp_path_factory: pytest.TempPathFactory) -> Expected:
    """What one run with the default workload queries records."""
    ledger = new_ledger(tmp_path_factory.mktemp("workloads"))
    try:
        assert collect(prometheus, ledger) is None
        return recorded(ledger)
    finally:
        ledger.engine.dispose()


def series_of(
    got: Expected, metric: str, pod: str, container: str
) -> dict[Labels, dict[int, float]]:
    return {
        labels: points
        for (name, labels), points in got.items()
        if name == metric and dict(labels)["pod"] == pod and dict(labels)["container"] == container
    }


def test_the_samples_are_the_values_computed_from_the_back_filled_series(
    collected: Expected,
) -> None:
    want = expected_samples(0, N - 1)  # the run covers [D0, D0 + 6 h)
    assert set(collected) == set(want)
    for key, points in want.items():
        stamps = sorted(points)
        assert sorted(collected[key]) == stamps, f"{key}: other timestamps"
        np.testing.assert_allclose(
            [collected[key][t] for t in stamps],
            [points[t] for t in stamps],
            rtol=1e-9,
            err_msg=str(key),
        )


def test_each_pod_gets_its_workload_by_the_owner_rule_and_its_node(collected: Expected) -> None:
    by_pod: dict[str, set[Labels]] = defaultdict(set)
    for name, labels in collected:
        assert name in WORKLOAD_QUERIES
        assert set(dict(labels)) <= WORKLOAD_LABELS, "a label other than the canonical ones"
        by_pod[dict(labels)["pod"]].add(labels)
    assert set(by_pod) == {pod.name for pod in PODS}
    for pod in PODS:
        found = [dict(labels) for labels in by_pod[pod.name]]
        kinds = {(lb.get("workload_kind"), lb.get("workload")) for lb in found}
        # A pod kube-state-metrics does not know keeps no workload labels (nor a node).
        assert kinds == {WORKLOAD_OF.get(pod.name, (None, None))}, pod.name
        nodes = {lb.get("node") for lb in found}
        if pod.ksm_replicas == 0:
            assert nodes == {None}
        elif pod.scheduled:  # requests of the unscheduled pod have no node yet
            assert nodes == {None, pod.node}
        else:
            assert nodes == {pod.node}, pod.name


def test_requests_and_limits_only_where_set_and_held(collected: Expected) -> None:
    at = D0 + 60 * SCRAPE
    # A container without requests or limits: usage only.
    metrics = {name for (name, labels) in collected if dict(labels)["container"] == "log-shipper"}
    assert metrics == {"container_cpu_usage_cores", "container_memory_working_set_bytes"}
    # Set only for memory: no CPU limit series.
    report = "report-28391040-abcde"
    assert not series_of(collected, "container_cpu_limits_cores", report, "main")
    ((labels, limits),) = series_of(
        collected, "container_memory_limits_bytes", report, "main"
    ).items()
    assert dict(labels)["workload_kind"] == "CronJob" and limits[at] == 2 * GIB
    # The Job's pod holds its requests while Pending or Running, not once Succeeded.
    ((_, requests),) = series_of(collected, "container_cpu_requests_cores", report, "main").items()
    assert sorted(requests) == [D0 + SCRAPE * i for i in range(150)]
    # Two kube-state-metrics replicas report the DaemonSet's pod: one series.
    daemon = series_of(
        collected, "container_cpu_requests_cores", "node-exporter-7xk2p", "node-exporter"
    )
    assert [points[at] for points in daemon.values()] == [0.1]


def test_a_pod_that_goes_away_stops_after_the_look_back(collected: Expected) -> None:
    gone = next(p for p in PODS if p.gone < N)
    last = D0 + SCRAPE * (gone.gone - 1)  # its last scrape
    ends = {
        name: max(points)
        for (name, labels), points in collected.items()
        if dict(labels)["pod"] == gone.name
    }
    # An instant selector sees the last sample 5 minutes on; rate needs two samples in [5m].
    assert ends == {
        "container_cpu_usage_cores": last + 4 * SCRAPE,
        "container_memory_working_set_bytes": last + 5 * SCRAPE,
        "container_cpu_requests_cores": last + 5 * SCRAPE,
        "container_memory_requests_bytes": last + 5 * SCRAPE,
        "container_cpu_limits_cores": last + 5 * SCRAPE,
        "container_memory_limits_bytes": last + 5 * SCRAPE,
    }


# -- labels, cardinality and event size with per-container series -----------------------------


def test_per_container_series_are_split_into_parts_at_series_boundaries(
    prometheus: PrometheusServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ingest.collectors.prometheus.collector as module

    monkeypatch.setattr(module, "SAMPLES_PER_EVENT", 250)
    ledger = new_ledger(tmp_path)
    metric = "container_memory_working_set_bytes"
    only = ONLY_WORKLOADS | dict.fromkeys(WORKLOAD_QUERIES, "") | {metric: WORKLOAD_QUERIES[metric]}
    assert collect(prometheus, ledger, queries=only, backfill="1h") is None
    want = {key for key in expected_samples(5 * 60, 6 * 60) if key[0] == metric}
    assert len(want) == 10  # containers running in the last hour, 60 samples each
    events = ledger.read(0, 100)
    # At most 250 samples, so 4 whole series, per event: 4 + 4 + 2.
    assert [e.id.rsplit("/", 1)[1] for e in events] == ["part1", "part2", "part3"]
    seen: set[tuple[str, str]] = set()
    for event, size in zip(events, (4, 4, 2), strict=True):
        assert event.samples is not None and len(event.samples) == 60 * size
        series = set(event.samples.series)
        assert len(series) == size and not series & seen, "a series split across two events"
        seen |= series
    assert {(name, tuple(sorted(orjson.loads(raw).items()))) for name, raw in seen} == want
    ledger.engine.dispose()


def test_labels_beyond_the_canonical_ones_are_dropped_and_required_ones_enforced(
    prometheus: PrometheusServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = new_ledger(tmp_path)
    raw = 'kube_pod_container_resource_requests{namespace="shop", resource="cpu"}'
    # Per pod only: no container label, so the series are not containers.
    per_pod = 'sum by (namespace, pod) (container_memory_working_set_bytes{container!=""})'
    queries = ONLY_WORKLOADS | dict.fromkeys(WORKLOAD_QUERIES, "")
    queries |= {"container_cpu_requests_cores": raw, "container_memory_working_set_bytes": per_pod}
    assert collect(prometheus, ledger, queries=queries, backfill="10m") is None
    got = recorded(ledger)
    # uid, job, instance, resource and unit are gone; kube-state-metrics' node is kept. (The
    # last 10 minutes: web-7c9d8f6b5-p8m2n is gone by then.)
    kept = {(dict(labels)["pod"], dict(labels).get("node")) for _, labels in got}
    assert kept == {("web-7c9d8f6b5-x2k4q", NODE_A), ("legacy-5d8f9-qw7rt", NODE_B)}
    assert {(name, tuple(dict(labels))) for name, labels in got} == {
        ("container_cpu_requests_cores", ("container", "namespace", "node", "pod"))
    }
    pods = {
        dict(labels)["pod"]
        for name, labels in expected_samples(6 * 60 - 10, 6 * 60)
        if name == "container_memory_working_set_bytes"
    }
    message = f"dropped {len(pods)} series without the labels namespace, pod, container"
    assert message in caplog.text
    ledger.engine.dispose()


def test_a_query_not_aggregated_per_container_fails_without_committing(
    prometheus: PrometheusServer, tmp_path: Path
) -> None:
    ledger = new_ledger(tmp_path)
    # Two kube-state-metrics replicas report the DaemonSet's pod: two series, one container.
    raw = 'kube_pod_container_resource_requests{namespace="kube-system", resource="cpu"}'
    queries = ONLY_WORKLOADS | {"container_cpu_requests_cores": raw}
    error = collect(prometheus, ledger, queries=queries)
    assert error is not None and "aggregate the query by (namespace, pod, container" in error
    assert ledger.head() == 0
    ledger.engine.dispose()


def test_the_docs_state_pod_info_as_the_defaults_use_it() -> None:
    text = (REPO / "docs" / "collectors.md").read_text(encoding="utf-8")
    block = text.split("`POD_INFO`, as the defaults use it:", 1)[1]
    block = block.split("```\n", 1)[1].split("```", 1)[0]
    pods = re.search(r"with `PODS` = `([^`]+)`", text)
    assert pods is not None and pods[1] == PODS_QUERY

    def squeeze(query: str) -> str:  # the block is laid out on lines; the query is one line
        return re.sub(r"\(\s+", "(", re.sub(r"\s+", " ", query)).strip()

    assert squeeze(block.replace("PODS", pods[1])) == squeeze(POD_INFO)
