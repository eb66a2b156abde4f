"""The Prometheus collector against a real Prometheus 2.42 serving back-filled data.

The session's Prometheus holds two days of known series (node-exporter CPU counters and
memory, kube-state-metrics node labels, allocatable, requests, pod phases, cAdvisor usage,
kubelet volume stats), back-filled with promtool. The expected canonical samples are
computed here from the same numbers, independently of PromQL.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import itertools
import math
import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml
from support import SUPPORT
from support.prom import PrometheusServer, PrometheusUnavailable, start_prometheus

from ingest.collectors.prometheus.collector import (
    PrometheusCollector,
    PrometheusConfig,
    build,
)
from ingest.collectors.prometheus.promql import DEFAULT_QUERIES
from ingest.collectors.runtime import Sink, run_once
from store.collectors import load_cursor
from store.contract import METRIC_SAMPLES
from store.ledger import Ledger
from store.migrate import upgrade

WORKER = SUPPORT / "prometheus_worker.py"
REPO = Path(__file__).resolve().parents[1]

D0 = 1_709_251_200  # 2024-03-01T00:00:00Z, the first scrape
SCRAPE = 60
N = 2 * 24 * 60 + 1  # two days of scrapes, both ends included
TIMES = D0 + SCRAPE * np.arange(N, dtype=np.int64)
HOUR, DAY = 3600, 86400
CLUSTER = "gov-prod"
LAG = 120

NODES = {
    # node → (node-exporter instance, kube_node_labels labels or None when it has none)
    "ip-10-0-1-10.us-gov-west-1.compute.internal": (
        "10.0.1.10:9100",
        {
            "label_karpenter_sh_nodepool": "general",
            "label_eks_amazonaws_com_nodegroup": "legacy-ng",
            "label_topology_kubernetes_io_zone": "us-gov-west-1a",
        },
    ),
    "ip-10-0-2-20.us-gov-west-1.compute.internal": (
        "10.0.2.20:9100",
        {
            "label_eks_amazonaws_com_nodegroup": "system-ng",
            "label_topology_kubernetes_io_zone": "us-gov-west-1b",
        },
    ),
    "ip-10-0-3-30.us-gov-west-1.compute.internal": ("10.0.3.30:9100", None),
}
EXPECTED_NODE_LABELS = {
    "ip-10-0-1-10.us-gov-west-1.compute.internal": {
        "nodepool": "general",
        "zone": "us-gov-west-1a",
    },
    "ip-10-0-2-20.us-gov-west-1.compute.internal": {
        "nodepool": "system-ng",
        "zone": "us-gov-west-1b",
    },
    "ip-10-0-3-30.us-gov-west-1.compute.internal": {},
}
MODES = ("idle", "user", "system", "iowait", "steal")
BUSY = ("user", "system")
# (namespace, pod, node, cpu request, memory request, phase as a function of the scrape index)
PODS = (
    ("payments", "api-1", 0, 0.5, 512 * 2**20, lambda i: "Running"),
    ("payments", "api-2", 1, 0.25, 256 * 2**20, lambda i: "Running"),
    ("payments", "settle-x", 1, 1.0, 2**30, lambda i: "Running" if i < 2000 else "Succeeded"),
    ("batch", "worker-0", 2, 2.0, 4 * 2**30, lambda i: "Pending" if i < 900 else "Running"),
    ("monitoring", "prom-0", 0, 0.125, 2**31, lambda i: "Running"),
)
PHASES = ("Pending", "Running", "Succeeded")
PVCS = (
    # (namespace, claim, kubelets reporting it)
    ("payments", "data-postgres-0", 2),
    ("monitoring", "prometheus-db", 1),
)


@dataclass
class Dataset:
    """The series written to Prometheus and the canonical samples expected from them."""

    lines: list[str] = field(default_factory=list)
    # (metric, frozen labels) → values at TIMES (NaN where the metric has no value)
    expected: dict[tuple[str, tuple[tuple[str, str], ...]], np.ndarray] = field(
        default_factory=dict
    )

    def series(self, name: str, labels: Mapping[str, str], values: np.ndarray) -> None:
        """Add one series sampled at every scrape."""
        text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        head = f"{name}{{{text}}} "
        self.lines.extend(
            f"{head}{v!r} {t}" for t, v in zip(TIMES.tolist(), values.tolist(), strict=True)
        )

    def expect(self, name: str, labels: Mapping[str, str], values: np.ndarray) -> None:
        key = (name, tuple(sorted(labels.items())))
        self.expected[key] = self.expected.get(key, 0.0) + values

    def openmetrics(self) -> str:
        return "\n".join(self.lines) + "\n# EOF\n"


def rate(counter: np.ndarray) -> np.ndarray:
    """Prometheus 2.x `rate(x[5m])` for samples on the step grid: (c(t) - c(t-5m)) / 300.

    The range [t-5m, t] holds the samples at both ends, so there is no extrapolation; the
    first five minutes have no full window and are NaN (the tests never query them).
    """
    out = np.full(len(counter), np.nan)
    out[5:] = (counter[5:] - counter[:-5]) / 300.0
    return out


@functools.cache
def make_dataset() -> Dataset:
    rng = np.random.default_rng(20240301)
    ones = np.ones(N)
    ds = Dataset()
    for index, (node, (instance, node_labels)) in enumerate(NODES.items()):
        canonical = {"node": node, **EXPECTED_NODE_LABELS[node]}
        exporter = {"instance": instance, "job": "node-exporter"}
        busy = np.zeros(N)
        for cpu in ("0", "1"):
            for mode in MODES:
                steps = rng.uniform(0, 30 if mode in BUSY else 5, N).round(3)
                counter = 1000.0 * (index + 1) + np.cumsum(steps)
                ds.series("node_cpu_seconds_total", {**exporter, "cpu": cpu, "mode": mode}, counter)
                if mode in BUSY:
                    busy = busy + rate(counter)
        ds.expect("node_cpu_usage_cores", canonical, busy)
        ds.series("node_uname_info", {**exporter, "nodename": node, "sysname": "Linux"}, ones)
        total = 16e9 * ones
        available = np.round(8e9 + rng.normal(0, 1e9, N).cumsum() / 30)
        ds.series("node_memory_MemTotal_bytes", exporter, total)
        ds.series("node_memory_MemAvailable_bytes", exporter, available)
        ds.expect("node_memory_usage_bytes", canonical, total - available)
        ksm = {"job": "kube-state-metrics", "node": node}
        if node_labels is not None:
            ds.series("kube_node_labels", {**ksm, **node_labels}, ones)
        cores = np.where(np.arange(N) < 1500, 1.93, 3.92) if index == 1 else 7.91 * ones
        memory = (14_000_000_000 + index * 10**9) * ones
        ds.series("kube_node_status_allocatable", {**ksm, "resource": "cpu", "unit": "core"}, cores)
        ds.series(
            "kube_node_status_allocatable", {**ksm, "resource": "memory", "unit": "byte"}, memory
        )
        ds.expect("node_cpu_allocatable_cores", canonical, cores)
        ds.expect("node_memory_allocatable_bytes", canonical, memory)
    nodes = list(NODES)
    for namespace, pod, node_index, cpu, mem, phase_of in PODS:
        ksm = {"job": "kube-state-metrics", "namespace": namespace, "pod": pod}
        ns = {"namespace": namespace}
        phases = [phase_of(i) for i in range(N)]
        for phase in PHASES:
            on = np.array([1.0 if p == phase else 0.0 for p in phases])
            ds.series("kube_pod_status_phase", {**ksm, "phase": phase}, on)
        holds = np.array([1.0 if p in ("Pending", "Running") else np.nan for p in phases])
        node = nodes[node_index]
        # Per container: no kube_pod_owner, so each pod is its own workload (kind Pod).
        app = {"namespace": namespace, "pod": pod, "container": "app", "node": node}
        app |= {"workload_kind": "Pod", "workload": pod}
        for resource, unit, amount in (("cpu", "core", cpu), ("memory", "byte", mem)):
            ds.series(
                "kube_pod_container_resource_requests",
                {**ksm, "container": "app", "node": node, "resource": resource, "unit": unit},
                amount * ones,
            )
            metric = f"namespace_{resource}_requests_{'cores' if resource == 'cpu' else 'bytes'}"
            ds.expect(metric, ns, np.nan_to_num(amount * holds))
            ds.expect(metric.replace("namespace", "container", 1), app, amount * holds)
        ds.series("kube_pod_info", {**ksm, "node": node, "uid": f"uid-{pod}"}, ones)
        ds.expect("namespace_pod_count", ns, ones)
        cadvisor = {"job": "kubelet", "namespace": namespace, "pod": pod, "node": node}
        app_cpu = 50.0 + np.cumsum(rng.uniform(0, 20, N).round(2))
        pause_cpu = np.cumsum(rng.uniform(0, 0.1, N).round(3))
        working_set = np.round(2e8 + rng.uniform(0, 1e8, N))
        # The pod-level cgroup ("" container) adds up its containers: counting it doubles.
        for container, c_cpu, c_mem in (
            ("app", app_cpu, working_set),
            ("POD", pause_cpu, 1e6 * ones),
            ("", app_cpu + pause_cpu, working_set + 1e6),
        ):
            labels = {**cadvisor, "container": container} if container else cadvisor
            ds.series("container_cpu_usage_seconds_total", labels, c_cpu)
            ds.series("container_memory_working_set_bytes", labels, c_mem)
        ds.expect("namespace_cpu_usage_cores", ns, rate(app_cpu))
        ds.expect("namespace_memory_usage_bytes", ns, working_set)
        ds.expect("container_cpu_usage_cores", app, rate(app_cpu))
        ds.expect("container_memory_working_set_bytes", app, working_set)
    for namespace, claim, kubelets in PVCS:
        labels = {"namespace": namespace, "persistentvolumeclaim": claim}
        used = np.round(5e9 + np.cumsum(rng.uniform(0, 1e6, N)))
        capacity = np.where(np.arange(N) < 2400, 20e9, 50e9)  # a resize
        for k in range(kubelets):
            kubelet = {**labels, "job": "kubelet", "node": nodes[k], "instance": nodes[k]}
            # A second kubelet reporting the volume lags behind: max takes the newest.
            ds.series("kubelet_volume_stats_used_bytes", kubelet, used - k * 4096)
            ds.series("kubelet_volume_stats_capacity_bytes", kubelet, capacity)
        ds.expect("pvc_used_bytes", labels, used)
        ds.expect("pvc_capacity_bytes", labels, capacity)
    return ds


@pytest.fixture(scope="session")
def prometheus() -> Iterator[PrometheusServer]:
    """One Prometheus for the session serving the dataset (back-fill and start: about 2 s)."""
    try:
        server = start_prometheus(make_dataset().openmetrics())
    except PrometheusUnavailable as exc:
        # CI installs Prometheus; a missing server is a broken environment, never a skip.
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.close()


# -- helpers ---------------------------------------------------------------------------------

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


def config(prometheus: PrometheusServer, **overrides: Any) -> PrometheusConfig:
    """The tests' configuration: one day back-filled in 6 h chunks at a 60 s step."""
    fields: dict[str, Any] = {
        "url": prometheus.url,
        "step": "60s",
        "backfill": "1d",
        "chunk": "6h",
        "lag": f"{LAG}s",
    }
    return PrometheusConfig(**(fields | overrides))


def collector(cfg: PrometheusConfig, now: float) -> PrometheusCollector:
    return PrometheusCollector(CLUSTER, cfg, clock=lambda: now)


def end_for(now: float) -> int:
    """The exclusive end a run at `now` reaches: the step after the last one ≤ now - lag."""
    return (math.floor((now - LAG) / 60) + 1) * 60


@dataclass
class Recorded:
    """What the ledger holds from the collector: every sample, and each event's chunk."""

    samples: dict[SeriesKey, list[tuple[int, float]]]
    chunks: dict[str, list[tuple[int, int]]]
    events: int


def recorded(ledger: Ledger) -> Recorded:
    samples: dict[SeriesKey, list[tuple[int, float]]] = defaultdict(list)
    chunks: dict[str, list[tuple[int, int]]] = defaultdict(list)
    events = 0
    for event in ledger.iter_all():
        if (
            event.type != METRIC_SAMPLES
            or event.source != f"opsledger/collector/prometheus/{CLUSTER}"
        ):
            continue
        events += 1
        metric, span, step, qhash = event.id.split("/")
        lo, hi = (int(x) for x in span.split("-"))
        assert (step, qhash) == (
            "60s",
            hashlib.sha256(DEFAULT_QUERIES[metric].encode()).hexdigest()[:12],
        )
        assert event.cluster == CLUSTER and event.time_us == (hi - 60) * 10**6
        chunks[metric].append((lo, hi))
        batch = event.samples
        assert batch is not None
        for i, t, v in zip(
            batch.series_index.tolist(), batch.ts_us.tolist(), batch.values.tolist(), strict=True
        ):
            name, labels = batch.series[i]
            assert name == metric
            ts = t // 10**6
            assert lo <= ts < hi and t % 10**6 == 0, (event.id, ts)
            samples[(name, tuple(sorted(orjson.loads(labels).items())))].append((ts, v))
    return Recorded(dict(samples), dict(chunks), events)


def assert_exactly_once(rec: Recorded, start: int, end: int) -> None:
    """Every expected series holds each step of [start, end) once, with the expected value."""
    expected = make_dataset().expected
    assert set(rec.samples) == set(expected)
    steps = range(start, end, 60)
    for key, points in rec.samples.items():
        stamps = [t for t, _ in points]
        repeated = [t for t, n in Counter(stamps).items() if n > 1]
        assert not repeated, f"{key}: {len(repeated)} timestamps recorded twice"
        # NaN: no sample (a container's requests while its pod has Succeeded).
        grid = [t for t in steps if not np.isnan(expected[key][(t - D0) // SCRAPE])]
        assert sorted(stamps) == grid, f"{key}: {len(set(grid) - set(stamps))} steps missing"
        want = expected[key][(np.array(sorted(stamps)) - D0) // SCRAPE]
        got = np.array([v for _, v in sorted(points)])
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=str(key))


def assert_tiles(
    rec: Recorded, start: int, end: int, chunk: int, run_ends: tuple[int, ...] = ()
) -> None:
    """Per metric, the events' chunks tile [start, end), cut on the chunk grid or a run's end."""
    for metric, spans in rec.chunks.items():
        spans.sort()
        assert spans[0][0] == start and spans[-1][1] == end, metric
        for (_, hi), (lo, _) in itertools.pairwise(spans):
            assert hi == lo, f"{metric}: gap or overlap at {hi}/{lo}"
            assert lo % chunk == 0 or lo in run_ends, f"{metric}: cut {lo} is off the grid"


# -- values, chunks, cursor ------------------------------------------------------------------


@pytest.mark.slow
def test_back_fill_then_increment_give_the_independently_computed_samples(
    prometheus: PrometheusServer, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    ledger = Ledger.from_url(url)
    cfg = config(prometheus)
    now1 = D0 + DAY + 3 * HOUR + 150.5  # now - lag falls between two steps
    start, end1 = end_for(now1) - DAY, end_for(now1)
    first = run_once(ledger, collector(cfg, now1))
    assert first.error is None, first.error
    assert load_cursor(ledger.engine, f"prometheus/{CLUSTER}") == {"end": end1}
    rec = recorded(ledger)
    assert max(t for points in rec.samples.values() for t, _ in points) <= now1 - LAG
    assert_exactly_once(rec, start, end1)
    assert_tiles(rec, start, end1, 6 * HOUR)
    assert len(rec.chunks["pvc_used_bytes"]) == 5  # 3 h to 6 h, three full chunks, 0 h to 3 h

    # Nine hours later: only the new range is queried and appended.
    now2 = now1 + 9 * HOUR
    end2 = end_for(now2)
    second = run_once(ledger, collector(cfg, now2))
    assert second.error is None and second.duplicates == 0
    rec2 = recorded(ledger)
    assert_exactly_once(rec2, start, end2)
    assert_tiles(rec2, start, end2, 6 * HOUR, run_ends=(end1,))
    assert load_cursor(ledger.engine, f"prometheus/{CLUSTER}") == {"end": end2}
    # The same instant again: nothing to do.
    head = ledger.head()
    assert run_once(ledger, collector(cfg, now2)).appended == 0 and ledger.head() == head

    # A redo of the first run (its cursor lost) recomputes the same ids and content: duplicates.
    class Forgetful(Sink):
        def cursor(self) -> dict[str, Any] | None:
            return None

    sink = Forgetful(ledger, f"prometheus/{CLUSTER}")
    collector(cfg, now1).collect(sink)
    assert (sink.appended, sink.duplicates) == (0, rec.events)
    assert ledger.head() == head
    ledger.engine.dispose()


def test_a_long_outage_resumes_at_the_back_fill_window(
    prometheus: PrometheusServer, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    ledger = Ledger.from_url(url)
    cfg = config(prometheus, backfill="2h", chunk="1h")
    now1 = D0 + 6 * HOUR + LAG
    assert run_once(ledger, collector(cfg, now1)).error is None
    now2 = now1 + DAY
    assert run_once(ledger, collector(cfg, now2)).error is None
    spans = sorted(recorded(ledger).chunks["namespace_pod_count"])
    end1, end2 = end_for(now1), end_for(now2)
    assert spans[0][0] == end1 - 2 * HOUR and spans[2][1] == end1
    assert spans[3][0] == end2 - 2 * HOUR and spans[-1][1] == end2
    ledger.engine.dispose()


# -- crash safety: SIGKILL a real collector process mid back-fill ----------------------------


def start_worker(ledger_url: str, cfg: PrometheusConfig, now: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), ledger_url, CLUSTER, cfg.model_dump_json(), repr(now)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


@pytest.mark.slow
def test_sigkill_mid_back_fill_then_rerun_records_every_sample_once(
    prometheus: PrometheusServer, ledger: Ledger, backend_url: str
) -> None:
    cfg = config(prometheus, chunk="2h")
    now = D0 + DAY + 5 * HOUR + 7
    start, end = end_for(now) - DAY, end_for(now)
    name = f"prometheus/{CLUSTER}"
    cursors = []
    for commits in (1, 3):
        proc = start_worker(backend_url, cfg, now)
        try:
            assert proc.stdout is not None
            for _ in range(commits):
                line = proc.stdout.readline()
                assert line.startswith("committed "), (line, proc.stderr and proc.stderr.read())
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        cursor = load_cursor(ledger.engine, name)
        assert cursor is not None and start < cursor["end"] < end, "the kill missed the back-fill"
        cursors.append(cursor["end"])
    assert cursors[0] < cursors[1]
    result = run_once(ledger, collector(cfg, now))
    assert result.error is None, result.error
    assert load_cursor(ledger.engine, name) == {"end": end}
    rec = recorded(ledger)
    assert_exactly_once(rec, start, end)
    assert_tiles(rec, start, end, 2 * HOUR, run_ends=tuple(cursors))


# -- failures are recorded, never half-committed ---------------------------------------------


def test_a_failing_query_commits_nothing_and_is_recorded(
    prometheus: PrometheusServer, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    ledger = Ledger.from_url(url)
    now = D0 + 12 * HOUR
    broken = config(prometheus, queries={"namespace_pod_count": "count by (namespace (kube_pod"})
    result = run_once(ledger, collector(broken, now))
    assert result.error is not None and "namespace_pod_count" in result.error
    assert "bad_data" in result.error and "HTTP 400" in result.error
    assert ledger.head() == 0 and load_cursor(ledger.engine, f"prometheus/{CLUSTER}") is None
    # Not aggregated to the canonical labels: two kubelets report one claim.
    raw = config(prometheus, queries={"pvc_used_bytes": "kubelet_volume_stats_used_bytes"})
    result = run_once(ledger, collector(raw, now))
    assert result.error is not None and "aggregate the query by" in result.error
    assert ledger.head() == 0
    ledger.engine.dispose()


def test_other_metric_names_keep_their_labels_and_a_blank_query_disables_a_default(
    prometheus: PrometheusServer, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    ledger = Ledger.from_url(url)
    queries = {name: "" for name in DEFAULT_QUERIES} | {
        "kube_pod_phase_running": 'kube_pod_status_phase{phase="Running"}'
    }
    cfg = config(prometheus, queries=queries, backfill="10m")
    assert run_once(ledger, collector(cfg, D0 + 12 * HOUR)).error is None
    events = ledger.read(0, 100)
    assert len(events) == 1 and events[0].samples is not None
    series = {(n, tuple(sorted(orjson.loads(labels)))) for n, labels in events[0].samples.series}
    assert series == {("kube_pod_phase_running", ("job", "namespace", "phase", "pod"))}
    assert len(events[0].samples.series) == len(PODS) and len(events[0].samples) == 10 * len(PODS)
    ledger.engine.dispose()


# -- authentication: SigV4 (AMP) and bearer tokens, against a local double ---------------------


class FakePrometheus:
    """A local HTTP server answering query_range with one series, after checking each request."""

    def __init__(self, check: Callable[[str, str, Mapping[str, str], bytes], str | None]) -> None:
        self.check = check
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                outer.requests.append((self.path, headers, body))
                problem = outer.check("POST", self.path, headers, body)
                if problem is not None:
                    self._reply(403, {"status": "error", "errorType": "auth", "error": problem})
                    return
                form = dict(pair.split("=", 1) for pair in body.decode().split("&") if "=" in pair)
                start, end, step = int(form["start"]), int(form["end"]), int(form["step"])
                values = [[t, "3"] for t in range(start, end + 1, step)]
                result = [{"metric": {"namespace": "payments", "job": "ksm"}, "values": values}]
                self._reply(
                    200, {"status": "success", "data": {"resultType": "matrix", "result": result}}
                )

            def _reply(self, code: int, payload: dict[str, Any]) -> None:
                raw = orjson.dumps(payload)
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakePrometheus:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


ONLY_POD_COUNT = {name: "" for name in DEFAULT_QUERIES} | {
    "namespace_pod_count": "count by (namespace) (kube_pod_info)"
}
ACCESS_KEY, SECRET_KEY, SESSION_TOKEN = (
    "AKIDEXAMPLE",
    "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    "FwoGZXIvYXdzEXAMPLE",
)
AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[A-Z0-9]+)/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)/"
    r"(?P<service>[a-z0-9-]+)/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), "
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)


def sigv4_problem(
    method: str, path: str, headers: Mapping[str, str], body: bytes, *, secret: str, region: str
) -> str | None:
    """Why the request's SigV4 signature is wrong (computed here from the spec), or None."""
    m = AUTHORIZATION.match(headers.get("authorization", ""))
    if m is None:
        return "the Authorization header is not SigV4"
    amz_date = headers.get("x-amz-date", "")
    if not re.fullmatch(r"\d{8}T\d{6}Z", amz_date) or amz_date[:8] != m["date"]:
        return "X-Amz-Date is missing or does not match the credential scope"
    if (m["key"], m["region"], m["service"]) != (ACCESS_KEY, region, "aps"):
        return "wrong credential scope"
    signed = m["signed"].split(";")
    if not {"host", "x-amz-date", "x-amz-security-token"} <= set(signed):
        return f"host, x-amz-date and the session token must be signed: {signed}"
    if headers.get("x-amz-security-token") != SESSION_TOKEN:
        return "the session token is missing"
    path_part, _, query = path.partition("?")
    canonical = "\n".join(
        [
            method,
            path_part,
            "&".join(sorted(query.split("&"))) if query else "",
            "".join(f"{h}:{' '.join(headers[h].split())}\n" for h in signed),
            m["signed"],
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{m['date']}/{region}/aps/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + secret).encode()
    for part in (m["date"], region, "aps", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    want = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return None if hmac.compare_digest(want, m["signature"]) else "the signature does not match"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Temporary credentials in the environment, and no other source of the chain."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_sigv4_signs_every_query_for_amp(aws_env: None, tmp_path: Path) -> None:
    region = "us-gov-west-1"

    def check(method: str, path: str, headers: Mapping[str, str], body: bytes) -> str | None:
        return sigv4_problem(method, path, headers, body, secret=SECRET_KEY, region=region)

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    ledger = Ledger.from_url(url)
    with FakePrometheus(check) as amp:
        cfg = PrometheusConfig(
            url=f"{amp.url}/workspaces/ws-0123abcd-4567-89ef-0123-456789abcdef/",
            sigv4={"region": region},
            backfill="3h",
            queries=ONLY_POD_COUNT,
        )
        result = run_once(ledger, PrometheusCollector(CLUSTER, cfg, clock=lambda: D0 + DAY))
        assert result.error is None, result.error
        paths = {path for path, _, _ in amp.requests}
        assert paths == {"/workspaces/ws-0123abcd-4567-89ef-0123-456789abcdef/api/v1/query_range"}
        assert len(amp.requests) == 1 and result.appended == 1
        # The verifier is not a rubber stamp: a changed body or secret fails it.
        path, headers, body = amp.requests[0]
        assert check("POST", path, headers, body) is None
        assert check("POST", path, headers, body + b"&x=1") == "the signature does not match"
        assert sigv4_problem("POST", path, headers, body, secret="other", region=region)
        # The wrong region is refused by the server, and the failure is recorded.
        wrong = PrometheusConfig.model_validate(
            cfg.model_dump() | {"sigv4": {"region": "us-east-1"}}
        )
        failed = run_once(ledger, PrometheusCollector(CLUSTER, wrong, clock=lambda: D0 + 2 * DAY))
        assert failed.error is not None and "wrong credential scope" in failed.error
        assert SECRET_KEY not in failed.error and SESSION_TOKEN not in failed.error
    assert [e.samples and len(e.samples) for e in ledger.read(0, 10)] == [180]
    ledger.engine.dispose()


def test_bearer_token_from_the_environment_or_a_file_and_never_in_errors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token = "s3cret-t0ken-value"

    def check(method: str, path: str, headers: Mapping[str, str], body: bytes) -> str | None:
        return None if headers.get("authorization") == f"Bearer {token}" else "bad token"

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    ledger = Ledger.from_url(url)
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    with FakePrometheus(check) as prom:
        base = {"url": prom.url, "backfill": "1h", "queries": ONLY_POD_COUNT}
        from_env = PrometheusConfig(**base, bearer_token_env="PROM_TOKEN")
        missing = run_once(ledger, PrometheusCollector("a", from_env, clock=lambda: D0))
        assert missing.error is not None and "PROM_TOKEN is not set" in missing.error
        monkeypatch.setenv("PROM_TOKEN", token)
        assert run_once(ledger, PrometheusCollector("a", from_env, clock=lambda: D0)).error is None
        from_file = PrometheusConfig(**base, bearer_token_file=token_file)
        assert run_once(ledger, PrometheusCollector("b", from_file, clock=lambda: D0)).error is None
        assert all(h["authorization"] == f"Bearer {token}" for _, h, _ in prom.requests)
        monkeypatch.setenv("PROM_TOKEN", "wrong-" + token)
        refused = run_once(ledger, PrometheusCollector("c", from_env, clock=lambda: D0))
        assert refused.error is not None and "HTTP 403" in refused.error
        assert token not in refused.error
        assert token not in repr(from_env) and token not in repr(from_file)
    assert len(ledger.read(0, 10)) == 2
    ledger.engine.dispose()


# -- configuration -----------------------------------------------------------------------------


def test_config_defaults_and_build() -> None:
    cfg = PrometheusConfig(url="https://prometheus.monitoring.svc:9090/")
    assert (cfg.interval, cfg.step, cfg.backfill, cfg.chunk, cfg.lag, cfg.timeout) == (
        "5m",
        "60s",
        "35d",
        "6h",
        "2m",
        "30s",
    )
    assert cfg.url == "https://prometheus.monitoring.svc:9090"
    assert cfg.effective_queries() == dict(sorted(DEFAULT_QUERIES.items()))
    built = build("prod-1", cfg)
    assert built.name == "prometheus/prod-1" and built.interval_seconds == 300
    with pytest.raises(ValueError, match="cluster"):
        build("bad cluster", cfg)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"url": "ftp://x"}, "http"),
        ({"url": "https://user:pw@x"}, "credentials"),
        ({"usl": "x"}, "Extra inputs"),
        ({"step": "1m30"}, "duration"),
        ({"step": "0s"}, "longer than 0s"),
        ({"chunk": "90s"}, "whole number of steps"),
        ({"step": "1s", "chunk": "1d"}, "11000"),
        ({"queries": {"bad-name": "up"}}, "metric name"),
        ({"queries": dict.fromkeys(DEFAULT_QUERIES, "")}, "every query is disabled"),
        ({"bearer_token_env": "T", "sigv4": {"region": "us-east-1"}}, "at most one"),
        ({"bearer_token_env": "not a name"}, "environment variable"),
        ({"sigv4": {"region": "Mars"}}, "region"),
        ({"sigv4": {"region": "us-east-1", "extra": 1}}, "Extra inputs"),
    ],
)
def test_config_refuses(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PrometheusConfig(**({"url": "http://127.0.0.1:9090"} | fields))


def test_a_blank_back_fill_starts_at_now(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    ledger = Ledger.from_url(url)
    cfg = PrometheusConfig(url="http://127.0.0.1:9", backfill="0s")
    assert run_once(ledger, PrometheusCollector("x", cfg, clock=lambda: D0 + 30)).error is None
    assert load_cursor(ledger.engine, "prometheus/x") == {"end": end_for(D0 + 30)}
    ledger.engine.dispose()


# -- docs --------------------------------------------------------------------------------------

DOC = REPO / "docs" / "collectors.md"


def test_the_docs_show_the_default_queries_and_every_field() -> None:
    text = DOC.read_text(encoding="utf-8")
    block = text.split("The defaults in full", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(block) == {"queries": DEFAULT_QUERIES}
    rows = {
        m["metric"]: m["query"].replace("\\|", "|")
        for m in re.finditer(r"^\| `(?P<metric>\w+)` \| `(?P<query>[^`]+)`", text, re.M)
    }
    for metric, query in DEFAULT_QUERIES.items():
        assert metric in rows, f"no row for {metric}"
        assert rows[metric] in query, f"{metric}: the table's query is not the default"
    for name in PrometheusConfig.model_fields:
        assert f"| `{name}` |" in text, f"the field {name} is not documented"


def test_a_large_chunk_is_split_into_parts_at_series_boundaries(
    prometheus: PrometheusServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ingest.collectors.prometheus.collector as module

    monkeypatch.setattr(module, "SAMPLES_PER_EVENT", 100)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    ledger = Ledger.from_url(url)
    only_pvc = {name: "" for name in DEFAULT_QUERIES} | {
        "pvc_used_bytes": DEFAULT_QUERIES["pvc_used_bytes"]
    }
    cfg = config(prometheus, queries=only_pvc, backfill="1h")
    assert run_once(ledger, collector(cfg, D0 + 12 * HOUR + LAG - 60)).error is None
    events = ledger.read(0, 10)
    assert [e.id.rsplit("/", 1)[1] for e in events] == ["part1", "part2"]
    assert [len(e.samples or ()) for e in events] == [60, 60]
    ledger.engine.dispose()
