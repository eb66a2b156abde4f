"""The report's capacity figures of one cluster: trends, namespace shares, hot runs, headroom."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import duckdb

from analytics.capacity.headroom import NO_ZONE, headroom
from analytics.capacity.hotspots import sustained
from analytics.capacity.trends import Resource, trends
from analytics.outputs.report_model import (
    ClusterCapacity,
    Counts,
    Headroom,
    HotRun,
    Month,
    MonthStats,
    NamespaceLayer,
    NamespaceMeans,
    NamespaceStacks,
    NodePoolLimit,
    NodeRuns,
    Point,
    PoolCount,
    PoolUtilization,
    ResourceTrends,
    Sustained,
    ZoneLoss,
)
from analytics.thresholds import SUSTAINED_UTILIZATION
from store.timefmt import z_to_naive, z_to_naive_or_none

#: Namespaces drawn one by one in the stacked charts; the rest are summed as "other".
TOP_NAMESPACES: Final = 7
RESOURCES: Final[tuple[Resource, ...]] = ("cpu", "memory")


def cluster_capacity(con: duckdb.DuckDBPyConnection, month: Month, cluster: str) -> ClusterCapacity:
    """Trends, sustained runs and headroom of one cluster over the month."""
    s, e = month.start, month.end
    days = tuple(s + timedelta(days=i) for i in range((e - s).days))
    resources = []
    ns_means: dict[str, dict[str, float | None]] = {}
    for res in RESOURCES:
        whole = _one(trends(con, res, "cluster", "1h", s, e, cluster))
        pools = trends(con, res, "nodepool", "1h", s, e, cluster)
        ns = trends(con, res, "namespace", "1d", s, e, cluster)
        for series in ns:
            row = ns_means.setdefault(str(series["key"]["namespace"]), {})
            for fig in ("utilization_avg", "commitment_avg"):
                values = [v for _, v in _points(series, fig)]
                row[f"{res}_{fig[:-4]}"] = sum(values) / len(values) if values else None
        utilization = _points(whole, "utilization_avg")
        commitment = _points(whole, "commitment_avg")
        resources.append(
            ResourceTrends(
                resource=res,
                utilization=utilization,
                commitment=commitment,
                utilization_month=_month_stats(utilization),
                commitment_month=_month_stats(commitment),
                pools=tuple(
                    PoolUtilization(p["key"]["nodepool"], pts, _month_stats(pts))
                    for p in pools
                    for pts in [_points(p, "utilization_avg")]
                ),
                namespaces=NamespaceStacks(
                    days,
                    _stack(ns, "utilization_avg", days),
                    _stack(ns, "commitment_avg", days),
                ),
            )
        )
    nodes = trends(con, "nodes", "nodepool", "1h", s, e, cluster)
    counts = Counts(
        nodes_by_pool=tuple(
            PoolCount(p["key"]["nodepool"], _points(p, "usage_avg")) for p in nodes
        ),
        nodes=_points(_one(trends(con, "nodes", "cluster", "1h", s, e, cluster)), "usage_avg"),
        pods=_points(_one(trends(con, "pods", "cluster", "1h", s, e, cluster)), "usage_avg"),
    )
    order = sorted(ns_means, key=lambda n: (-(ns_means[n].get("cpu_commitment") or 0.0), n))
    return ClusterCapacity(
        cluster=cluster,
        resources=tuple(resources),
        namespace_means=tuple(
            NamespaceMeans(
                namespace=n,
                cpu_commitment=ns_means[n].get("cpu_commitment"),
                cpu_utilization=ns_means[n].get("cpu_utilization"),
                memory_commitment=ns_means[n].get("memory_commitment"),
                memory_utilization=ns_means[n].get("memory_utilization"),
            )
            for n in order
        ),
        counts=counts,
        sustained=_sustained(sustained(con, s, e, cluster)),
        headroom=tuple(_headroom(h) for h in headroom(con, e, cluster=cluster)),
    )


def _points(series: dict[str, Any], fig: str) -> tuple[Point, ...]:
    """(instant, value) pairs of one field of a trends() series; nulls left out."""
    return tuple(
        (z_to_naive(p["t"]), float(p[fig])) for p in series["points"] if p[fig] is not None
    )


def _one(series: list[dict[str, Any]]) -> dict[str, Any]:
    return series[0] if series else {"points": []}


def _month_stats(points: tuple[Point, ...]) -> MonthStats:
    """Mean and peak of hourly averages, and the hours whose average is above 85 %."""
    values = [v for _, v in points]
    if not values:
        return MonthStats(None, None, None, 0)
    peak_index = max(range(len(values)), key=lambda i: (values[i], -i))
    return MonthStats(
        mean=sum(values) / len(values),
        peak=values[peak_index],
        peak_at=points[peak_index][0],
        hours_above=sum(1 for v in values if v > SUSTAINED_UTILIZATION),
    )


def _stack(
    series: list[dict[str, Any]], fig: str, days: tuple[datetime, ...]
) -> tuple[NamespaceLayer, ...]:
    """Daily values per namespace, the biggest TOP_NAMESPACES first, the rest summed as other."""
    by_ns: dict[str, dict[datetime, float]] = {}
    for s in series:
        by_ns[str(s["key"]["namespace"])] = dict(_points(s, fig))
    mean = {ns: sum(v.values()) / len(days) for ns, v in by_ns.items() if v}
    ranked = sorted(mean, key=lambda ns: (-mean[ns], ns))
    layers = [(ns, 0, [by_ns[ns].get(d, 0.0) for d in days]) for ns in ranked[:TOP_NAMESPACES]]
    rest = ranked[TOP_NAMESPACES:]
    if rest:
        values = [sum(by_ns[ns].get(d, 0.0) for ns in rest) for d in days]
        layers.append((f"{len(rest)} other namespaces", len(rest), values))
    return tuple(
        NamespaceLayer(name, other, tuple(values), sum(values) / len(days) if days else 0.0)
        for name, other, values in layers
    )


def _run(r: dict[str, Any]) -> HotRun:
    return HotRun(
        cluster=r["cluster"],
        scope=r["scope"],
        nodepool=r["nodepool"],
        node=r["node"],
        resource=r["resource"],
        start=z_to_naive(r["start"]),
        end=z_to_naive(r["end"]),
        duration_seconds=r["duration_seconds"],
        utilization_avg=r["utilization_avg"],
        utilization_max=r["utilization_max"],
        samples=r["samples"],
    )


@dataclass
class _NodeRunsSum:
    """NodeRuns while they are being summed."""

    runs: int = 0
    nodes: set[str | None] = field(default_factory=set)
    seconds: float = 0.0
    longest_seconds: float = 0.0
    peak: float = 0.0
    intervals: list[tuple[datetime, datetime]] = field(default_factory=list)


def _sustained(found: list[dict[str, Any]]) -> Sustained:
    """Cluster and node pool runs in full; node runs summed per node pool and resource."""
    runs = [_run(r) for r in found]
    sums: dict[tuple[str, str], _NodeRunsSum] = {}
    for r in runs:
        if r.scope != "node":
            continue
        agg = sums.setdefault((str(r.nodepool), str(r.resource)), _NodeRunsSum())
        agg.runs += 1
        agg.nodes.add(r.node)
        agg.seconds += r.duration_seconds
        agg.longest_seconds = max(agg.longest_seconds, r.duration_seconds)
        agg.peak = max(agg.peak, r.utilization_max)
        agg.intervals.append((r.start, r.end))
    node_runs = []
    for pool, res in sorted(sums):
        agg = sums[pool, res]
        node_runs.append(
            NodeRuns(
                nodepool=pool,
                resource=res,
                runs=agg.runs,
                nodes=len(agg.nodes),
                seconds=agg.seconds,
                longest_seconds=agg.longest_seconds,
                peak=agg.peak,
                intervals=_merge(agg.intervals),
            )
        )
    return Sustained(
        runs=tuple(r for r in runs if r.scope in ("cluster", "nodepool")),
        node_runs=tuple(node_runs),
    )


def _merge(intervals: list[tuple[datetime, datetime]]) -> tuple[tuple[datetime, datetime], ...]:
    """Overlapping (start, end) intervals merged."""
    out: list[tuple[datetime, datetime]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return tuple(out)


def _headroom(h: dict[str, Any]) -> Headroom:
    return Headroom(
        cluster=h["cluster"],
        nodepool=h["nodepool"],
        resource=h["resource"],
        basis=h["basis"],
        commitment=h["commitment"],
        utilization=h["utilization"],
        level=h["level"],
        allocatable=h["allocatable"],
        largest_node_allocatable=h["largest_node_allocatable"],
        growth_per_day=h["growth_per_day"],
        days_to_85=h["days_to_85"],
        eta_85=z_to_naive_or_none(h["eta_85"]),
        days_to_85_n_minus_1=h["days_to_85_n_minus_1"],
        eta_85_n_minus_1=z_to_naive_or_none(h["eta_85_n_minus_1"]),
        requests=h["requests"],
        commitment_by_requests=h["commitment_by_requests"],
        requests_growth_per_day=h["requests_growth_per_day"],
        days_to_85_by_requests=h["days_to_85_by_requests"],
        days_to_85_by_requests_n_minus_1=h["days_to_85_by_requests_n_minus_1"],
        zone_loss=_zone_loss(h["zone_loss"]),
        nodepool_limit=_limit(h["nodepool_limit"]),
    )


def _zone_loss(z: dict[str, Any] | None) -> ZoneLoss | None:
    if z is None:
        return None
    return ZoneLoss(
        # headroom names the group of nodes without a zone NO_ZONE: None here, as in the model.
        zones=tuple((None if k == NO_ZONE else k, float(a)) for k, a in z["zones"].items()),
        largest_zone=z["largest_zone"],
        largest_zone_allocatable=z["largest_zone_allocatable"],
        allocatable_without_largest_zone=z["allocatable_without_largest_zone"],
        commitment_without_largest_zone=z["commitment_without_largest_zone"],
        survives=z["survives"],
    )


def _limit(lim: dict[str, Any] | None) -> NodePoolLimit | None:
    if lim is None:
        return None
    return NodePoolLimit(
        limit=lim["limit"],
        days_to_limit=lim["days_to_limit"],
        eta_limit=z_to_naive_or_none(lim["eta_limit"]),
    )
