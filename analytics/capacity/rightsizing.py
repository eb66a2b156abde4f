"""Rightsizing: each container's requests against what it used over a look-back.

Robusta KRR's simple strategy (docs/metrics.md, "Rightsizing"): CPU is recommended at a
percentile of every usage sample of the container's pods, memory at the peak working set plus
a buffer, each above a minimum; what a request holds beyond that, times the pods, can be
reclaimed. Money is added by analytics.cost.savings.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final

import duckdb

from analytics.readmodel.model import snapshot

#: Over-requested when a request exceeds the recommendation by more than this share of it.
OVER_MARGIN: Final = 0.10
#: Fewer hours of usage samples than this say nothing about a weekly or daily cycle.
MIN_SPAN: Final = timedelta(hours=24)
GIB: Final = 2**30
MIB: Final = 2**20

# Means as fsum ÷ count: a running sum of a constant request drifts below it, and a request
# equal to its recommendation would read as under-requested.
_GROUPS: Final = """
SELECT cluster, namespace, workload_kind, workload, container,
    quantile_cont(cpu_usage, $q) AS cpu_p,
    max(memory_usage) AS memory_max,
    count(cpu_usage) AS cpu_rows,
    count(DISTINCT ts) FILTER (cpu_usage IS NOT NULL) AS cpu_ts,
    fsum(cpu_request) / count(cpu_request) AS cpu_request,
    fsum(memory_request) / count(memory_request) AS memory_request,
    fsum(cpu_limit) / count(cpu_limit) AS cpu_limit,
    fsum(memory_limit) / count(memory_limit) AS memory_limit,
    min(ts) FILTER (cpu_usage IS NOT NULL OR memory_usage IS NOT NULL) AS first,
    max(ts) FILTER (cpu_usage IS NOT NULL OR memory_usage IS NOT NULL) AS last
FROM wl_values
WHERE ts >= $lo AND ts < $hi
  AND ($cluster::VARCHAR IS NULL OR cluster = $cluster)
  AND ($namespace::VARCHAR IS NULL OR namespace = $namespace)
  AND ($workload::VARCHAR IS NULL OR workload = $workload)
GROUP BY cluster, namespace, workload_kind, workload, container
ORDER BY cluster, namespace, workload, container, workload_kind
"""


def rightsizing(
    con: duckdb.DuckDBPyConnection,
    as_of: datetime,
    lookback: timedelta,
    *,
    percentile: float = 95.0,
    memory_buffer: float = 0.15,
    min_cpu_cores: float = 0.01,
    min_memory_bytes: float = 100 * MIB,
    cluster: str | None = None,
    namespace: str | None = None,
    workload: str | None = None,
) -> list[dict[str, Any]]:
    """Per (cluster, namespace, workload kind, workload, container) over [as_of − lookback,
    as_of): usage, requests, the recommendation, what could be reclaimed, and a status.

    Sorted by cluster, namespace, workload, container; no money (monthly_savings, currency).
    """
    params = {
        "q": percentile / 100.0,
        "lo": as_of - lookback,
        "hi": as_of,
        "cluster": cluster,
        "namespace": namespace,
        "workload": workload,
    }
    with snapshot(con):
        rows = con.execute(_GROUPS, params).fetchall()
    out = []
    for c, ns, kind, name, container, cpu_p, mem_max, cpu_rows, cpu_ts, *rest in rows:
        cpu_req, mem_req, cpu_lim, mem_lim, first, last = rest
        pods = cpu_rows / cpu_ts if cpu_ts else None
        cpu_rec = None if cpu_p is None else max(float(cpu_p), min_cpu_cores)
        mem_rec = (
            None if mem_max is None else max(mem_max * (1 + memory_buffer), float(min_memory_bytes))
        )
        item: dict[str, Any] = {
            "cluster": c,
            "namespace": ns,
            "workload_kind": kind,
            "workload": name,
            "container": container,
            "pods_avg": pods,
            "cpu_request_cores": cpu_req,
            "cpu_usage_p95_cores": None if cpu_p is None else float(cpu_p),
            "cpu_recommended_cores": cpu_rec,
            "cpu_limit_cores": cpu_lim,
            "memory_request_bytes": mem_req,
            "memory_usage_max_bytes": mem_max,
            "memory_recommended_bytes": mem_rec,
            "memory_limit_bytes": mem_lim,
            "cpu_reclaim_cores": _reclaim(cpu_req, cpu_rec, pods),
            "memory_reclaim_bytes": _reclaim(mem_req, mem_rec, pods),
        }
        span = None if first is None else last - first
        item["status"], item["reason"] = _status(item, span, lookback)
        out.append(item)
    return out


def _reclaim(request: float | None, recommended: float | None, pods: float | None) -> Any:
    if request is None or recommended is None or pods is None:
        return None
    return (request - recommended) * pods


def _cores(v: float) -> str:
    return f"{v:.3g} core{'' if v == 1 else 's'}"


def _mib(v: float) -> str:
    return f"{v / MIB:.4g} MiB"


def _hours(t: timedelta) -> str:
    h = t.total_seconds() / 3600
    return f"{h:.3g} h" if h < 48 else f"{h / 24:.3g} d"


def _status(item: dict[str, Any], span: timedelta | None, lookback: timedelta) -> tuple[str, str]:
    """The status and, in words, the rule that gave it (docs/metrics.md, "Rightsizing")."""
    if span is None:
        return "insufficient_data", f"no usage samples in the {_hours(lookback)} look-back"
    if span < MIN_SPAN:
        return (
            "insufficient_data",
            f"usage samples span {_hours(span)} of the {_hours(lookback)} look-back; "
            "at least 24 h are needed",
        )
    cpu_req, mem_req = item["cpu_request_cores"], item["memory_request_bytes"]
    cpu_rec, mem_rec = item["cpu_recommended_cores"], item["memory_recommended_bytes"]
    missing = [n for n, v in (("CPU", cpu_req), ("memory", mem_req)) if v is None]
    if missing:
        return "no_requests", (
            f"the container sets no {' or '.join(missing)} request: nothing to reclaim on it; "
            "set one at the recommendation"
        )
    under = []
    if cpu_rec is not None and cpu_rec > cpu_req:
        under.append(f"CPU recommendation {_cores(cpu_rec)} > request {_cores(cpu_req)}")
    if mem_rec is not None and mem_rec > mem_req:
        under.append(f"memory recommendation {_mib(mem_rec)} > request {_mib(mem_req)}")
    if under:
        return "under", "under-requested: " + "; ".join(under)
    over = []
    if cpu_rec is not None and cpu_req - cpu_rec > OVER_MARGIN * cpu_req:
        over.append(
            f"CPU request {_cores(cpu_req)} is {(cpu_req - cpu_rec) / cpu_req:.0%} above "
            f"the recommended {_cores(cpu_rec)}"
        )
    if mem_rec is not None and mem_req - mem_rec > OVER_MARGIN * mem_req:
        over.append(
            f"memory request {_mib(mem_req)} is {(mem_req - mem_rec) / mem_req:.0%} above "
            f"the recommended {_mib(mem_rec)}"
        )
    if over:
        return "over", "over-requested (more than 10 % above the recommendation): " + "; ".join(
            over
        )
    return "ok", "requests are within 10 % above the recommendation"
