"""Report benchmark: time to gather and render the monthly capacity report.

Two months, each appended to a fresh SQLite ledger and projected before timing:
- the demo's October 2026 (`opsledger demo`: 30-57 nodes, 60 PVCs, about 35 incidents);
- a synthetic October of 200 nodes in 5 node pools, 40 namespaces, 500 PVCs, 300 incidents,
  200 findings and a month of cost, sampled every 5 minutes like the demo.

Target: under 2 s for the synthetic month. Run from the repository root:
`.venv/bin/python benchmarks/bench_report.py [--repeat 3] [--skip-demo]`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from analytics.capacity.hotspots import sustained
from analytics.decisions.gather import policy_of
from analytics.outputs.report_data import gather
from analytics.outputs.report_model import Month, Report
from analytics.readmodel.model import ReadModel
from analytics.readmodel.registry import default_projections
from analytics.readmodel.runner import Runner
from analytics.storage.projection import forecasts, month_end_forecasts
from api.report.html import render
from ingest import demo
from store.contract import Event, batch_from_columns, samples_event, validate_event
from store.ledger import Ledger
from store.migrate import upgrade
from store.settings import get_settings
from store.timefmt import format_us, parse_rfc3339_us

TARGET_S = 2.0
MONTH = "2026-10"
START = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
DAYS = 31
STEP_S = 300
CLUSTER = "bench-eks-1"
SOURCE = "bench/report"
POOLS = ("general-purpose", "memory-optimized", "compute", "system", "gpu")
_US = 1_000_000


def _us(t: dt.datetime) -> int:
    return int(t.timestamp()) * _US


def _raw(kind: str, data: dict[str, Any], event_id: str, t_us: int, cluster: bool) -> Any:
    ev: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id,
        "source": SOURCE,
        "type": kind,
        "time": format_us(t_us),
        "data": data,
    }
    if cluster:
        ev["cluster"] = CLUSTER
    return ev


def sample_events(nodes: int, namespaces: int, pvcs: int, seed: int) -> Iterator[Event]:
    """One samples event per cluster-hour: node, namespace and PVC metrics every 5 minutes."""
    rng = np.random.default_rng(seed)
    node_labels = [
        {"node": f"ip-10-1-{i // 250}-{i % 250}", "nodepool": POOLS[i % len(POOLS)]}
        for i in range(nodes)
    ]
    ns_labels = [{"namespace": f"team-{i:02d}"} for i in range(namespaces)]
    pvc_labels = [
        {"namespace": f"team-{i % namespaces:02d}", "persistentvolumeclaim": f"data-{i:03d}"}
        for i in range(pvcs)
    ]
    series: list[tuple[str, dict[str, str]]] = []
    for n in node_labels:
        for m in ("node_cpu_allocatable_cores", "node_cpu_usage_cores"):
            series.append((m, n))
        for m in ("node_memory_allocatable_bytes", "node_memory_usage_bytes"):
            series.append((m, n))
    for ns in ns_labels:
        for m in (
            "namespace_cpu_usage_cores",
            "namespace_cpu_requests_cores",
            "namespace_memory_usage_bytes",
            "namespace_memory_requests_bytes",
            "namespace_pod_count",
        ):
            series.append((m, ns))
    for p in pvc_labels:
        series += [("pvc_capacity_bytes", p), ("pvc_used_bytes", p)]
    cpu = np.where(np.arange(nodes) % 5 == 4, 8.0, 16.0)
    mem = cpu * 4 * 2**30
    base = rng.uniform(0.35, 0.6, nodes)
    ns_share = rng.dirichlet(np.ones(namespaces)) * 0.75
    capacity = rng.choice([10, 50, 100, 200, 500], pvcs) * 2.0**30
    fill0 = rng.uniform(0.3, 0.8, pvcs)
    rate = rng.uniform(0.0005, 0.009, pvcs)  # share of capacity per day
    per_hour = 3600 // STEP_S
    start = _us(START)
    for h in range(DAYS * 24):
        t = start + h * 3600 * _US + np.arange(per_hour, dtype=np.int64) * STEP_S * _US
        day = (t - start) / (86400 * _US)
        swing = 0.15 * np.sin(2 * np.pi * (day % 1.0) - 1.2)
        hot = (h % (24 * 6)) in range(14, 17)  # the memory-optimized pool every 6th day
        rows = []
        for i in range(nodes):
            u = base[i] + swing + rng.normal(0, 0.02, per_hour)
            if hot and node_labels[i]["nodepool"] == "memory-optimized":
                u = u + 0.45
            u = np.clip(u, 0.02, 0.98)
            rows += [np.full(per_hour, cpu[i]), cpu[i] * u, np.full(per_hour, mem[i]), mem[i] * u]
        total_cpu, total_mem = float(cpu.sum()), float(mem.sum())
        for j in range(namespaces):
            rows += [
                total_cpu * ns_share[j] * (0.55 + swing),
                np.full(per_hour, total_cpu * ns_share[j]),
                total_mem * ns_share[j] * (0.6 + swing / 2),
                np.full(per_hour, total_mem * ns_share[j]),
                np.full(per_hour, float(5 + j % 20)),
            ]
        for k in range(pvcs):
            used = (fill0[k] + rate[k] * day + 0.004 * np.sin(2 * np.pi * day)) * capacity[k]
            rows += [np.full(per_hour, capacity[k]), np.round(np.minimum(used, capacity[k]))]
        values = np.concatenate(rows)
        sidx = np.repeat(np.arange(len(series), dtype=np.int64), per_hour)
        ts = np.tile(t, len(series))
        batch = batch_from_columns(series, sidx, ts, values)
        yield samples_event(SOURCE, f"samples/{h}", int(t[-1]), CLUSTER, batch)


def discrete_events(incidents: int, findings: int, seed: int) -> list[Event]:
    """Incidents with their lifecycle, findings, daily cost and the budget."""
    rng = np.random.default_rng(seed + 1)
    start = _us(START)
    month_us = DAYS * 86400 * _US
    raws = [
        _raw("opsledger.budget.set", {"month": MONTH, "amount": 900_000.0, "currency": "USD"},
             "budget", start, False),
    ]  # fmt: skip
    targets = {"P0": 900, "P1": 3600, "P2": 4 * 3600, "P3": 20 * 3600}
    for n in range(incidents):
        sev = str(rng.choice(["P0", "P1", "P2", "P3"], p=[0.05, 0.2, 0.35, 0.4]))
        opened = start + int(rng.uniform(0, month_us - 3 * 86400 * _US))
        inc = f"INC-B-{n:04d}"
        ack = opened + int(targets[sev] * rng.uniform(0.2, 1.4)) * _US
        done = ack + int(rng.uniform(0.5, 30) * 3600) * _US
        raws += [
            _raw("opsledger.incident.opened",
                 {"incident_id": inc, "title": f"bench incident {n}", "severity": sev},
                 f"{inc}/opened", opened, True),
            _raw("opsledger.incident.acknowledged", {"incident_id": inc, "by": "oncall"},
                 f"{inc}/ack", ack, False),
            _raw("opsledger.incident.resolved", {"incident_id": inc}, f"{inc}/resolved", done,
                 False),
        ]  # fmt: skip
    severities = ["CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL"]
    for n in range(findings):
        first = start + int(rng.uniform(0, month_us - 86400 * _US))
        data = {
            "provider": "securityhub",
            "finding_id": f"f-{n}",
            "title": f"control {n % 40} failed",
            "finding_type": "Software and Configuration Checks",
            "severity": severities[n % 5],
            "resource": f"arn:aws:eks:us-east-1:123456789012:cluster/{CLUSTER}",
            "status": "ACTIVE",
            "first_seen": format_us(first),
            "last_seen": format_us(first),
        }
        raws.append(_raw("opsledger.finding", data, f"f-{n}/1", first, True))
        if n % 3 == 0:
            closed = first + int(rng.uniform(1, 5) * 86400) * _US
            raws.append(
                _raw("opsledger.finding", {**data, "status": "RESOLVED",
                                           "last_seen": format_us(closed)},
                     f"f-{n}/2", closed, True)
            )  # fmt: skip
    for d in range(DAYS):
        day = (START + dt.timedelta(days=d)).date().isoformat()
        for s, amount in (("AmazonEC2", 21000.0), ("AmazonEKS", 2400.0), ("AmazonS3", 700.0)):
            raws.append(
                _raw("opsledger.cost.daily",
                     {"date": day, "service": s, "amount": amount * rng.uniform(0.9, 1.1),
                      "currency": "USD"},
                     f"cost/{day}/{s}", start + (d + 1) * 86400 * _US, False)
            )  # fmt: skip
    events = [validate_event(r, i) for i, r in enumerate(raws)]
    events.sort(key=lambda e: e.time_us)
    return events


def build(root: Path, fill: Callable[[Ledger], None]) -> tuple[Ledger, ReadModel, float]:
    """A migrated ledger filled by `fill` and a read model caught up while the month runs.

    The clock stands an hour before the month's end, so the storage projection keeps no
    month-end forecasts yet: a report now fits every PVC on request (the baseline).
    """
    url = f"sqlite:///{root / 'ledger.db'}"
    upgrade(url)
    ledger = Ledger.from_url(url)
    fill(ledger)
    model = ReadModel(root / "analytics.duckdb")
    in_month = Month.parse(MONTH).end - dt.timedelta(hours=1)
    started = time.perf_counter()
    Runner(ledger, model, default_projections(), clock=lambda: in_month).catch_up()
    return ledger, model, time.perf_counter() - started


def keep_month_end(ledger: Ledger, model: ReadModel) -> float:
    """Seconds the catch-up takes once the clock has passed the month's end (it keeps it)."""
    started = time.perf_counter()
    Runner(ledger, model, default_projections()).catch_up()
    return time.perf_counter() - started


def time_report(ledger: Ledger, model: ReadModel, repeat: int) -> dict[str, Any]:
    """Medians of gather (and its parts), render and the whole; forecasts and runs alone."""
    month = Month.parse(MONTH)
    con = model.cursor()
    policy = policy_of(get_settings())
    runs: list[dict[str, float]] = []
    report: Report | None = None
    size = 0
    for _ in range(repeat):
        parts: dict[str, float] = {}
        t0 = time.perf_counter()
        report = gather(con, ledger, month, timings=parts, policy=policy)
        t1 = time.perf_counter()
        html = render(report)
        t2 = time.perf_counter()
        size = len(html.encode())
        runs.append({"gather": t1 - t0, "render": t2 - t1, "total": t2 - t0, **parts})
    t0 = time.perf_counter()
    forecasts(con, month.end - dt.timedelta(microseconds=1))
    t1 = time.perf_counter()
    sustained(con, month.start, month.end)
    t2 = time.perf_counter()
    month_end_forecasts(con, month.end)
    t3 = time.perf_counter()
    assert report is not None, "repeat must be at least 1"
    figures: dict[str, Any] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    figures |= {
        "forecasts alone": t1 - t0,
        "sustained alone": t2 - t1,
        "month-end forecasts alone": t3 - t2,
        "bytes": size,
        "pvcs": report.storage.count,
        "incidents": report.incidents.month.total.incidents,
    }
    return figures


def measure(
    name: str, root: Path, fill: Callable[[Ledger], None], repeat: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build a month; time its report before and after the month end is kept; print both."""
    ledger, model, project_s = build(root, fill)
    try:
        baseline = time_report(ledger, model, 1)
        keep_s = keep_month_end(ledger, model)
        f = time_report(ledger, model, repeat)
    finally:
        model.close()
        ledger.engine.dispose()
    print(f"{name}: projected in {project_s:.1f} s, then {keep_s:.1f} s keeping the month-end "
          f"forecasts; {f['pvcs']} PVCs, {f['incidents']} incidents; "
          f"report {f['bytes'] / 1024:.0f} KiB")  # fmt: skip
    _print(f, "report")
    _print(baseline, "baseline: the same report before the month end was kept, once")
    print(f"  report / baseline = {f['total'] / baseline['total']:.3f}")
    return f, baseline


def _print(f: dict[str, Any], title: str) -> None:
    print(f"  {title}:")
    print(f"    gather {f['gather']:.3f} s + render {f['render']:.3f} s = {f['total']:.3f} s")
    for part in (
        "capacity",
        "storage",
        "findings, incidents, cost",
        "decisions",
        "rightsizing, network, showback",
    ):
        print(f"      gather, {part}: {f[part]:.3f} s")
    print(f"      (alone: month_end_forecasts() {f['month-end forecasts alone']:.3f} s, "
          f"forecasts() fitting every PVC {f['forecasts alone']:.3f} s, "
          f"sustained() {f['sustained alone']:.3f} s)")  # fmt: skip


def main() -> int:
    """Build both months, time their reports, print the figures and the verdict."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--namespaces", type=int, default=40)
    parser.add_argument("--pvcs", type=int, default=500)
    parser.add_argument("--incidents", type=int, default=300)
    parser.add_argument("--findings", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-demo", action="store_true", help="only the synthetic month")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="opsledger-report-bench-") as tmp:
        if not args.skip_demo:
            end = parse_rfc3339_us("2026-11-01T00:00:00Z")

            def load_demo(led: Ledger) -> None:
                demo.load(led, dt.date(2026, 10, 1), end)

            (Path(tmp) / "demo").mkdir()
            measure("demo month", Path(tmp) / "demo", load_demo, args.repeat)

        def fill(led: Ledger) -> None:
            for ev in sample_events(args.nodes, args.namespaces, args.pvcs, args.seed):
                led.append([ev])
            led.append(discrete_events(args.incidents, args.findings, args.seed))

        name = (f"synthetic month ({args.nodes} nodes, {args.pvcs} PVCs, "
                f"{args.incidents} incidents)")  # fmt: skip
        (Path(tmp) / "synthetic").mkdir()
        f, baseline = measure(name, Path(tmp) / "synthetic", fill, args.repeat)
        ratio = f["total"] / TARGET_S
        verdict = "PASS" if f["total"] < TARGET_S else "MISS"
        print(f"target: < {TARGET_S:.1f} s; measured {f['total']:.3f} s = {ratio:.2f} x the "
              f"target: {verdict} (baseline {baseline['total']:.3f} s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
