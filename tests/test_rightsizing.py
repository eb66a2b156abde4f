"""`GET /v1/capacity/rightsizing` on a small hand-made cluster with known answers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.beds import Bed, make_bed
from support.containers import GIB, MIB, Samples, append, container_labels

T0 = datetime(2026, 10, 1, tzinfo=UTC)
AS_OF = "2026-10-03T00:00:00Z"  # two days of samples, every 10 minutes
STEPS = 2 * 24 * 6
STEP = timedelta(minutes=10)


def ts(i: int) -> datetime:
    return T0 + i * STEP


def cpu_api(pod: int, i: int) -> float:
    return 0.10 + 0.02 * pod + 0.001 * (i % 37)


def mem_api(pod: int, i: int) -> float:
    return 300 * MIB + pod * 10 * MIB + (i % 11) * MIB


def build(bed: Bed) -> None:
    """api: two pods, over-requested; worker: one pod, under-requested; a pod with no owner
    labels; a container without requests; a job seen for 20 hours; another cluster."""
    s = Samples()
    for i in range(STEPS):
        t = ts(i)
        for pod in range(2):
            labels = container_labels("web", f"api-7d9f-{pod}", "app", "Deployment", "api", "n1")
            s.container(
                labels,
                t,
                cpu_usage=cpu_api(pod, i),
                memory_usage=mem_api(pod, i),
                cpu_request=1.0,
                memory_request=1 * GIB,
                cpu_limit=2.0,
                memory_limit=2 * GIB,
            )
        # The third pod of api only lives for the first half (a roll-out): pods_avg 2.5.
        if i < STEPS // 2:
            labels = container_labels("web", "api-7d9f-2", "app", "Deployment", "api", "n2")
            s.container(labels, t, cpu_usage=0.5, memory_usage=200 * MIB, cpu_request=0.5,
                        memory_request=GIB)  # fmt: skip
        worker = container_labels("web", "worker-0", "main", "StatefulSet", "worker", "n1")
        s.container(worker, t, cpu_usage=0.8 if i % 2 else 0.6, memory_usage=900 * MIB,
                    cpu_request=0.5, memory_request=GIB)  # fmt: skip
        lone = container_labels("web", "debug-shell", "sh", kind=None)
        s.container(lone, t, cpu_usage=0.02, memory_usage=50 * MIB, cpu_request=0.02,
                    memory_request=105 * MIB)  # fmt: skip
        best_effort = container_labels("ops", "agent-x1", "agent", "DaemonSet", "agent", "n1")
        s.container(best_effort, t, cpu_usage=0.05, memory_usage=80 * MIB, memory_request=GIB)
        if i >= STEPS - 6 * 20:  # the last 20 hours only
            job = container_labels("batch", "report-29123-abc", "run", "CronJob", "report")
            s.container(job, t, cpu_usage=1.5, memory_usage=GIB, cpu_request=0.25,
                        memory_request=GIB)  # fmt: skip
    other = Samples()
    for i in range(STEPS):
        labels = container_labels("web", "api-0", "app", "Deployment", "api", "m1")
        other.container(labels, ts(i), cpu_usage=0.2, memory_usage=GIB, cpu_request=0.2,
                        memory_request=GIB)  # fmt: skip
    append(bed.ledger, [s.event("c1", "c1"), other.event("c2", "c2")])
    bed.caught_up()


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    with make_bed(tmp_path, projection_interval_seconds=3600) as b:
        build(b)
        yield b


def items(bed: Bed, **params: Any) -> dict[tuple[str, str, str], dict[str, Any]]:
    r = bed.get("/v1/capacity/rightsizing", as_of=AS_OF, **params)
    assert r.status_code == 200, r.text
    return {(i["cluster"], i["workload"], i["container"]): i for i in r.json()["items"]}


def test_figures_of_an_over_requested_deployment(bed: Bed) -> None:
    r = bed.get("/v1/capacity/rightsizing", as_of=AS_OF)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["as_of"] == AS_OF and body["lookback"] == "14d"
    api = {(i["cluster"], i["workload"]): i for i in body["items"]}[("c1", "api")]
    cpu = [cpu_api(p, i) for p in range(2) for i in range(STEPS)] + [0.5] * (STEPS // 2)
    mem = [mem_api(p, i) for p in range(2) for i in range(STEPS)] + [200 * MIB]
    p95 = float(np.percentile(cpu, 95))
    pods = (2 * STEPS + STEPS // 2) / STEPS
    cpu_request = (2 * STEPS * 1.0 + STEPS // 2 * 0.5) / (2 * STEPS + STEPS // 2)
    assert api["workload_kind"] == "Deployment" and api["namespace"] == "web"
    assert api["pods_avg"] == pytest.approx(pods, rel=1e-12)
    assert api["cpu_usage_p95_cores"] == pytest.approx(p95, rel=1e-12)
    assert api["cpu_recommended_cores"] == pytest.approx(p95, rel=1e-12)
    assert api["cpu_request_cores"] == pytest.approx(cpu_request, rel=1e-12)
    assert api["memory_usage_max_bytes"] == max(mem)
    assert api["memory_recommended_bytes"] == pytest.approx(max(mem) * 1.15, rel=1e-12)
    assert api["memory_request_bytes"] == pytest.approx(GIB, rel=1e-12)
    assert api["cpu_limit_cores"] == 2.0  # the mean of the known limits (the third pod has none)
    assert api["memory_limit_bytes"] == pytest.approx(2 * GIB)
    assert api["cpu_reclaim_cores"] == pytest.approx((cpu_request - p95) * pods, rel=1e-12)
    assert api["memory_reclaim_bytes"] == pytest.approx((GIB - max(mem) * 1.15) * pods, rel=1e-12)
    assert api["status"] == "over" and "CPU request" in api["reason"]
    assert api["monthly_savings"] is None and api["currency"] is None  # no prices here


def test_statuses(bed: Bed) -> None:
    found = items(bed, cluster="c1")
    worker = found[("c1", "worker", "main")]
    assert worker["status"] == "under" and worker["workload_kind"] == "StatefulSet"
    assert worker["cpu_usage_p95_cores"] == pytest.approx(0.8)
    assert worker["cpu_reclaim_cores"] == pytest.approx(0.5 - 0.8)  # negative: a risk
    # Below the minimum: recommend 100 MiB of memory, at least 0.01 cores.
    lone = found[("c1", "debug-shell", "sh")]
    assert lone["workload_kind"] == "Pod"
    assert lone["memory_recommended_bytes"] == 100 * MIB
    assert lone["status"] == "ok"
    assert lone["memory_reclaim_bytes"] == pytest.approx(5 * MIB)
    agent = found[("c1", "agent", "agent")]
    assert agent["status"] == "no_requests" and "CPU" in agent["reason"]
    assert agent["cpu_request_cores"] is None and agent["cpu_reclaim_cores"] is None
    assert agent["cpu_recommended_cores"] == pytest.approx(0.05)
    assert agent["memory_reclaim_bytes"] == pytest.approx(GIB - 100 * MIB)
    job = found[("c1", "report", "run")]
    assert job["status"] == "insufficient_data" and "24 h" in job["reason"]
    assert set(k[0] for k in found) == {"c1"}


def test_filters_lookback_and_settings(bed: Bed, tmp_path: Path) -> None:
    assert set(items(bed, namespace="batch")) == {("c1", "report", "run")}
    assert set(items(bed, workload="api")) == {("c1", "api", "app"), ("c2", "api", "app")}
    # 36 hours back: 18 hours of the job (its 20 hours start 20 h before as_of).
    short = bed.get("/v1/capacity/rightsizing", as_of=AS_OF, lookback="36h").json()
    assert short["lookback"] == "36h"
    worker = next(i for i in short["items"] if i["workload"] == "worker")
    assert worker["pods_avg"] == 1.0
    # Nothing in the window: no items.
    early = bed.get("/v1/capacity/rightsizing", as_of="2026-09-01T00:00:00Z").json()
    assert early["items"] == []


def test_settings_choose_the_defaults(tmp_path: Path) -> None:
    with make_bed(
        tmp_path,
        projection_interval_seconds=3600,
        rightsizing_cpu_percentile=50.0,
        rightsizing_memory_buffer=0.5,
        rightsizing_min_cpu_cores=0.1,
        rightsizing_min_memory_bytes=64 * MIB,
        rightsizing_lookback_days=1.5,
    ) as b:
        build(b)
        r = b.get("/v1/capacity/rightsizing", as_of=AS_OF, workload="debug-shell")
        assert r.status_code == 200, r.text
        assert r.json()["lookback"] == "36h"
        [lone] = r.json()["items"]
        assert lone["cpu_usage_p95_cores"] == pytest.approx(0.02)  # the median
        assert lone["cpu_recommended_cores"] == 0.1
        assert lone["memory_recommended_bytes"] == pytest.approx(75 * MIB)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"lookback": "2w"}, "query.lookback"),
        ({"lookback": "14"}, "query.lookback"),
        ({"lookback": "0d"}, "query.lookback"),
        ({"lookback": "401d"}, "query.lookback"),
        ({"lookback": "9601h"}, "query.lookback"),
        ({"lookback": "1.5d"}, "query.lookback"),
        ({"as_of": "2026-10-03"}, "query.as_of"),
        ({"as_of": "2200-01-01T00:00:00Z"}, "query.as_of"),
        ({"cluster": "bad name"}, "query.cluster"),
    ],
)
def test_bad_parameters_are_422_naming_the_field(
    bed: Bed, params: dict[str, str], field: str
) -> None:
    r = bed.get("/v1/capacity/rightsizing", **params)
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == [field]


def test_keys(bed: Bed) -> None:
    c = bed.client
    assert c.get("/v1/capacity/rightsizing").status_code == 401
    bogus = {"Authorization": "Bearer olk_nope"}
    assert c.get("/v1/capacity/rightsizing", headers=bogus).status_code == 401
    # Every scope covers read: no key of a known scope is refused with 403.
    for scope in ("read", "write", "admin", "query"):
        r = bed.get("/v1/capacity/rightsizing", scope, as_of=AS_OF, lookback="400d")
        assert r.status_code == 200, r.text
