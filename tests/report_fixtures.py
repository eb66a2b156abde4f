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
    "summary",
    "utilisation",
    "namespaces",
    "sustained",
    "counts",
    "headroom",
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
