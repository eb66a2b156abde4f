"""Ledgers for the report tests: the demo's October 2026 (built once per session), and a tiny
one whose names are hostile HTML."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from support.payloads import cloudevent, sample

from analytics.readmodel.model import ReadModel
from analytics.readmodel.registry import default_projections
from analytics.readmodel.runner import Runner
from ingest import demo
from store.contract import validate_event
from store.ledger import Ledger
from store.migrate import upgrade
from store.timefmt import parse_rfc3339_us

MONTH = "2026-10"
#: Half of September too, so the report has a previous month to compare incidents with.
DEMO_SINCE = dt.date(2026, 9, 15)
DEMO_NOW = "2026-11-01T00:00:00Z"
#: The report's sections and charts, by element id (the report and browser tests look for each).
SECTIONS = (
    "decisions",
    "summary",
    "utilisation",
    "namespaces",
    "sustained",
    "counts",
    "headroom",
    "rightsizing",
    "network",
    "storage",
    "findings",
    "incidents",
    "cost",
    "method",
)
CHARTS = (
    "cluster-0-cpu",
    "cluster-0-memory",
    "pools-0-cpu",
    "pools-0-memory",
    "ns-0-cpu-commitment",
    "ns-0-cpu-utilization",
    "ns-0-memory-commitment",
    "ns-0-memory-utilization",
    "sustained-0",
    "nodes-0",
    "pods-0",
    "headroom-0-0",
    "pvc-0",
    "findings",
    "mtta-by-severity",
    "mttr-by-severity",
    "cost",
)
CLUSTER = "prod-eks-1"


def catch_up(url: str, read_model: Path) -> None:
    """Fold the whole ledger into the read model file."""
    ledger = Ledger.from_url(url)
    model = ReadModel(read_model)
    try:
        Runner(ledger, model, default_projections()).catch_up()
    finally:
        model.close()
        ledger.engine.dispose()


def demo_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with `ledger.db` and `analytics.duckdb` of the demo up to 1 November 2026.

    Built once per test session (about 15 s) and copied by each user, so that the report and
    the browser tests share it.
    """
    root = tmp_path_factory.getbasetemp() / "report-demo"
    if (root / "done").exists():
        return root
    root.mkdir(exist_ok=True)
    url = f"sqlite:///{root / 'ledger.db'}"
    upgrade(url)
    ledger = Ledger.from_url(url)
    try:
        demo.load(ledger, DEMO_SINCE, parse_rfc3339_us(DEMO_NOW))
    finally:
        ledger.engine.dispose()
    catch_up(url, root / "analytics.duckdb")
    (root / "done").touch()
    return root


def copy_demo(tmp_path_factory: pytest.TempPathFactory, into: Path) -> tuple[str, Path]:
    """A private copy of the demo ledger and read model: (ledger URL, read model path)."""
    src = demo_files(tmp_path_factory)
    into.mkdir(parents=True, exist_ok=True)
    for name in ("ledger.db", "analytics.duckdb"):
        shutil.copy2(src / name, into / name)
    return f"sqlite:///{into / 'ledger.db'}", into / "analytics.duckdb"


def append_raw(url: str, raws: Iterable[dict[str, Any]]) -> None:
    """Validate contract JSON events and append them."""
    ledger = Ledger.from_url(url)
    try:
        ledger.append([validate_event(raw, i) for i, raw in enumerate(raws)])
    finally:
        ledger.engine.dispose()


# -- hostile names -------------------------------------------------------------------------------

HOSTILE_POOL = '"><img src=x onerror=alert(1)>'
HOSTILE_NS = "<script>alert('ns')</script>"
HOSTILE_PVC = "data</style><script>alert(2)</script>"
HOSTILE_TITLE = "<iframe src=https://evil.example/></iframe> & 'quoted' \"title\""
HOSTILE_URL = 'https://evil.example/pm"><script>alert(3)</script>'
HOSTILE_FINDING = "<svg onload=alert(4)>"
HOSTILE_RESOURCE = "arn:<b>bold</b>"
_STEP = 300


def _ts(t: int) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def hostile_events() -> list[dict[str, Any]]:
    """Two days of samples, an incident, a finding, cost and budget, with hostile names."""
    start = int(dt.datetime(2026, 10, 30, tzinfo=dt.UTC).timestamp())
    nodes = [
        {"node": f"node-{i}", "nodepool": HOSTILE_POOL, "zone": "us-gov-west-1a"} for i in (1, 2)
    ]
    ns = {"namespace": HOSTILE_NS}
    pvc = {"namespace": HOSTILE_NS, "persistentvolumeclaim": HOSTILE_PVC}
    out = []
    for day in range(2):
        samples = []
        for k in range(288):
            t = start + day * 86400 + k * _STEP
            hot = 0.93 if 14 * 12 <= k < 17 * 12 else 0.5  # three hours above 85 %
            for n in nodes:
                samples += [
                    sample("node_cpu_allocatable_cores", n, t, 4.0),
                    sample("node_cpu_usage_cores", n, t, round(4.0 * hot, 3)),
                    sample("node_memory_allocatable_bytes", n, t, 16 * 2**30),
                    sample("node_memory_usage_bytes", n, t, 8 * 2**30),
                ]
            samples += [
                sample("namespace_cpu_requests_cores", ns, t, 6.0),
                sample("namespace_cpu_usage_cores", ns, t, 3.0),
                sample("namespace_pod_count", ns, t, 12),
                sample("pvc_capacity_bytes", pvc, t, 100 * 2**30),
                sample("pvc_used_bytes", pvc, t, round((80 + (day * 288 + k) / 120) * 2**30)),
            ]
        out.append(
            cloudevent(
                "opsledger.metric.samples",
                {"samples": samples},
                id=f"hostile-samples-{day}",
                time=_ts(start + day * 86400 + 287 * _STEP),
                cluster=CLUSTER,
            )
        )
    inc = {"incident_id": "INC-1", "title": HOSTILE_TITLE, "severity": "P1"}
    out += [
        cloudevent("opsledger.incident.opened", inc, id="h-open", time="2026-10-30T10:00:00Z",
                   cluster=CLUSTER),
        cloudevent("opsledger.incident.acknowledged", {"incident_id": "INC-1", "by": "<me>"},
                   id="h-ack", time="2026-10-30T12:00:00Z", cluster=None),
        cloudevent("opsledger.incident.postmortem_linked",
                   {"incident_id": "INC-1", "url": HOSTILE_URL},
                   id="h-pm", time="2026-10-31T10:00:00Z", cluster=None),
        cloudevent(
            "opsledger.finding",
            {
                "provider": "guardduty", "finding_id": "f-1", "title": HOSTILE_FINDING,
                "finding_type": "Policy:Kubernetes/Anonymous", "severity": "HIGH",
                "resource": HOSTILE_RESOURCE, "namespace": HOSTILE_NS, "status": "ACTIVE",
                "first_seen": "2026-10-30T08:00:00Z", "last_seen": "2026-10-30T08:00:00Z",
            },
            id="h-finding", time="2026-10-30T08:00:00Z", cluster=CLUSTER,
        ),
        cloudevent("opsledger.cost.daily",
                   {"date": "2026-10-30", "service": "<AmazonEC2>", "amount": 100.0,
                    "currency": "USD"},
                   id="h-cost", time="2026-10-31T00:00:00Z", cluster=None),
        cloudevent("opsledger.budget.set", {"month": MONTH, "amount": 1000.0, "currency": "USD"},
                   id="h-budget", time="2026-10-01T00:00:00Z", cluster=None),
    ]  # fmt: skip
    return out


def hostile_ledger(into: Path) -> tuple[str, Path]:
    """A migrated ledger of `hostile_events()` and its caught-up read model."""
    into.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{into / 'ledger.db'}"
    upgrade(url)
    append_raw(url, hostile_events())
    catch_up(url, into / "analytics.duckdb")
    return url, into / "analytics.duckdb"


# -- every kind of decision ----------------------------------------------------------------------

#: The small world of `decisions_events()`: what each figure is built to trigger.
DECISION_KINDS = (
    "reclaim_workload",
    "expand_pool",
    "raise_nodepool_limit",
    "zone_risk",
    "subnet_ips",
    "expand_pvc",
    "budget",
)
INSTANCE_TYPE = "m6i.xlarge"
INSTANCE_HOURLY = 0.192
_DECISION_STEP = 900
_DECISION_DAYS = 4


def decisions_events() -> list[dict[str, Any]]:
    """Four days before 1 November 2026 of a cluster with one of each decision.

    Node pool `general`: three 4-core, 16 GiB m6i.xlarge nodes, two in zone a and one in b,
    each using 3 cores (9 of 12: 85 % of N-1 is gone, expand). Containers: shop's Deployment
    web requests 2 cores and 4 GiB on two pods and uses 0.2 cores and 1 GiB (over-requested:
    reclaim); batch's StatefulSet db requests 0.1 cores and uses 0.5 (under-requested). Their
    4.1 cores of requests pass the NodePool's 4-core limit (raise it) and do not fit in zone b
    alone (zone risk). Zone a's subnet has no free address left; the PVC is 95 % full; the
    month's 80 USD of spend is over its 50 USD budget.
    """
    start = int(dt.datetime(2026, 10, 28, tzinfo=dt.UTC).timestamp())
    nodes = [
        ("node-a1", "us-gov-west-1a"),
        ("node-a2", "us-gov-west-1a"),
        ("node-b1", "us-gov-west-1b"),
    ]
    pods = [
        ("shop", "web-1", "app", "Deployment", "web", "node-a1", 2.0, 0.2, 4 * 2**30, 2**30),
        ("shop", "web-2", "app", "Deployment", "web", "node-b1", 2.0, 0.2, 4 * 2**30, 2**30),
        ("batch", "db-0", "pg", "StatefulSet", "db", "node-a2", 0.1, 0.5, 512 * 2**20, 2**30),
    ]
    pvc = {"namespace": "batch", "persistentvolumeclaim": "data-db-0"}
    out = [
        cloudevent(
            "opsledger.k8s.node.status",
            {
                "node": node, "ready": True, "nodepool": "general", "zone": zone,
                "instance_type": INSTANCE_TYPE,
                "allocatable": {"cpu_cores": 4.0, "memory_bytes": 16 * 2**30, "pods": 58},
            },
            id=f"d-node-{node}", time=_ts(start), cluster=CLUSTER,
        )
        for node, zone in nodes
    ]  # fmt: skip
    per_day = 86400 // _DECISION_STEP
    for day in range(_DECISION_DAYS):
        samples = []
        for k in range(per_day):
            t = start + day * 86400 + k * _DECISION_STEP
            for node, zone in nodes:
                n = {"node": node, "nodepool": "general", "zone": zone}
                samples += [
                    sample("node_cpu_allocatable_cores", n, t, 4.0),
                    sample("node_cpu_usage_cores", n, t, 3.0),
                    sample("node_memory_allocatable_bytes", n, t, 16 * 2**30),
                    sample("node_memory_usage_bytes", n, t, 8 * 2**30),
                ]
            for ns, pod, container, kind, workload, node, cpu_req, cpu, mem_req, mem in pods:
                labels = {
                    "namespace": ns, "pod": pod, "container": container,
                    "workload_kind": kind, "workload": workload, "node": node,
                }  # fmt: skip
                samples += [
                    sample("container_cpu_requests_cores", labels, t, cpu_req),
                    sample("container_cpu_usage_cores", labels, t, cpu),
                    sample("container_memory_requests_bytes", labels, t, mem_req),
                    sample("container_memory_working_set_bytes", labels, t, mem),
                ]
            samples += [
                sample("pvc_capacity_bytes", pvc, t, 100 * 2**30),
                sample("pvc_used_bytes", pvc, t, 95 * 2**30),
            ]
        out.append(
            cloudevent(
                "opsledger.metric.samples",
                {"samples": samples},
                id=f"d-samples-{day}",
                time=_ts(start + (day + 1) * 86400 - _DECISION_STEP),
                cluster=CLUSTER,
            )
        )
    out += [
        cloudevent("opsledger.k8s.nodepool.status",
                   {"nodepool": "general", "limits": {"cpu_cores": 4.0}},
                   id="d-nodepool", time=_ts(start), cluster=CLUSTER),
        cloudevent("opsledger.network.subnet.status",
                   {"subnet_id": "subnet-a", "zone": "us-gov-west-1a", "cidr": "10.0.0.0/24",
                    "available_ips": 0, "total_ips": 251, "vpc_id": "vpc-1"},
                   id="d-subnet-a", time=_ts(start + 3 * 86400), cluster=CLUSTER),
        cloudevent("opsledger.network.subnet.status",
                   {"subnet_id": "subnet-b", "zone": "us-gov-west-1b", "cidr": "10.0.1.0/24",
                    "available_ips": 200, "total_ips": 251, "vpc_id": "vpc-1"},
                   id="d-subnet-b", time=_ts(start + 3 * 86400), cluster=CLUSTER),
        cloudevent("opsledger.budget.set", {"month": MONTH, "amount": 50.0, "currency": "USD"},
                   id="d-budget", time="2026-10-01T00:00:00Z", cluster=None),
    ]  # fmt: skip
    for d in range(1, 31):
        day = dt.date(2026, 10, d).isoformat()
        out.append(
            cloudevent(
                "opsledger.cost.instance_type.daily",
                {"date": day, "instance_type": INSTANCE_TYPE, "amount": INSTANCE_HOURLY * 72,
                 "usage_hours": 72.0, "currency": "USD"},
                id=f"d-ec2-{day}", time=f"{day}T23:00:00Z", cluster=None,
            )
        )  # fmt: skip
    for d in range(28, 32):
        day = dt.date(2026, 10, d).isoformat()
        out.append(
            cloudevent(
                "opsledger.cost.daily",
                {"date": day, "service": "AmazonEC2", "amount": 20.0, "currency": "USD"},
                id=f"d-cost-{day}", time=f"{day}T23:00:00Z", cluster=None,
            )
        )  # fmt: skip
    return out


def decisions_ledger(into: Path) -> tuple[str, Path]:
    """A migrated ledger of `decisions_events()` and its caught-up read model."""
    into.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{into / 'ledger.db'}"
    upgrade(url)
    append_raw(url, decisions_events())
    catch_up(url, into / "analytics.duckdb")
    return url, into / "analytics.duckdb"
