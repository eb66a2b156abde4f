"""The monthly capacity-planning report's figures, as of the month's end: pure data, no HTML.

"As of" (docs/report.md): a report for month M counts the facts the read model holds about M
and the months before it, each by its own time (a sample by its `ts`, an incident or finding
event by its `time`, a cost day by its date, a budget by its month), up to the instant M ends
(00:00 UTC on the 1st of the next month, exclusive). Everything is judged at that instant:
storage forecasts, open SLA breaches, findings still open, node pool headroom. All queries
read one snapshot of the read model (one DuckDB transaction), so a catch-up running meanwhile
cannot mix two states into one report.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import duckdb
from sqlalchemy import func, select

from analytics.capacity.hotspots import SUSTAINED_THRESHOLD, headroom, sustained
from analytics.capacity.trends import Resource, trends
from analytics.cost.projection import month_cost
from analytics.incidents.metrics import breaches, metrics
from analytics.incidents.projection import INCIDENTS_DDL, judged_as_of
from analytics.readmodel.model import insert_rows
from analytics.storage.projection import month_end_forecasts
from store.incident_state import SEVERITIES
from store.ledger import Ledger
from store.schema import events
from store.timefmt import MAX_YEAR, MIN_YEAR

MONTH_RE: Final = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
#: The seed's thresholds: nodes run hot above 85 %, volumes are expanded at 90 %.
HOT: Final = SUSTAINED_THRESHOLD
EXPAND: Final = 0.90
FINDING_SEVERITIES: Final = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL")
#: Namespaces drawn one by one in the stacked charts; the rest are summed as "other".
TOP_NAMESPACES: Final = 7
#: PVC rows in the ranking table, and fan charts drawn (the soonest to reach 90 % first).
PVC_ROWS: Final = 25
PVC_FANS_MIN: Final = 6
PVC_FANS_MAX: Final = 12
#: The fan charts show this much history before the month's end, in buckets of this size.
PVC_HISTORY: Final = timedelta(days=30)
PVC_BUCKET_S: Final = 2 * 3600
OPEN_FINDINGS_ROWS: Final = 15
_RESOURCES: Final[tuple[Resource, ...]] = ("cpu", "memory")
_EPOCH: Final = datetime(1970, 1, 1)


class ReportError(ValueError):
    """A report that cannot be made: a malformed or unfinished month, an unknown cluster."""


class UnknownCluster(ReportError):
    """The read model holds nothing about the cluster asked for."""


@dataclass(frozen=True, slots=True)
class Month:
    """A calendar month in UTC, the one before it, and the next review's as-of instant."""

    name: str
    start: datetime
    end: datetime
    previous_start: datetime
    next_end: datetime

    @classmethod
    def parse(cls, text: str) -> Month:
        """A month from YYYY-MM (ReportError otherwise)."""
        m = MONTH_RE.match(text)
        if m is None:
            raise ReportError(f"month must be YYYY-MM, got {text[:40]!r}")
        if not MIN_YEAR <= int(m.group(1)) <= MAX_YEAR:
            raise ReportError(f"month {text} is out of range {MIN_YEAR}-01 .. {MAX_YEAR}-12")
        try:
            start = datetime(int(m.group(1)), int(m.group(2)), 1)
            end = _next_month(start)
            return cls(text, start, end, _previous_month(start), _next_month(end))
        except (ValueError, OverflowError):  # year 0, or no month after 9999-12
            raise ReportError(f"month {text} is out of range") from None

    @property
    def horizon_days(self) -> float:
        """Days from this month's end to the next review's (the end of the next month)."""
        return (self.next_end - self.end).total_seconds() / 86400

    def check_ended(self, now: datetime) -> None:
        """Refuse a month that has not ended by `now` (naive UTC): its figures would move."""
        if self.end > now:
            raise ReportError(
                f"month {self.name} has not ended yet; a report covers a whole month "
                f"(available from {iso(self.end)})"
            )


def _next_month(d: datetime) -> datetime:
    return (d.replace(day=1) + timedelta(days=32)).replace(day=1)


def _previous_month(d: datetime) -> datetime:
    return (d.replace(day=1) - timedelta(days=1)).replace(day=1)


def last_complete_month(now: datetime) -> str:
    """YYYY-MM of the last month that ended by `now` (naive UTC)."""
    return _previous_month(now).strftime("%Y-%m")


def iso(t: datetime | None) -> str | None:
    """An instant as RFC 3339 UTC with whole seconds."""
    return None if t is None else t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(t: datetime) -> int:
    return int((t - _EPOCH).total_seconds())


def _us(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)


def _parse_iso(text: str) -> datetime:
    """An instant as iso() writes it, naive UTC."""
    # fromisoformat is some 40 times faster than strptime: a month's trends hold 27,000.
    if len(text) != 20 or text[-1] != "Z":
        raise ValueError(f"not an RFC 3339 UTC instant with whole seconds: {text!r}")
    return datetime.fromisoformat(text[:-1])


@contextmanager
def snapshot(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """One read-only transaction: every query inside sees the same state of the read model."""
    con.begin()
    try:
        yield con
    finally:
        con.rollback()


def gather(
    con: duckdb.DuckDBPyConnection,
    ledger: Ledger,
    month: Month,
    cluster: str | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Every figure of the report for `month` (and one cluster, or all), as of its end.

    With `timings`, the seconds each part took are added to it (benchmarks/bench_report.py).
    """
    clock = _Clock(timings)
    with snapshot(con):
        clusters = _clusters(con, month, cluster)
        if cluster is not None and not clusters:
            raise UnknownCluster(f"the read model holds nothing about cluster {cluster!r}")
        capacity = [_cluster_capacity(con, month, c) for c in clusters]
        clock.lap("capacity")
        storage = _storage(con, month, cluster)
        clock.lap("storage")
        findings = _findings(con, month, cluster)
        incidents = _incidents(con, month, cluster)
        cost = month_cost(con, month.name, (month.end - timedelta(days=1)).date())
        position = _position(con, ledger, month)
        clock.lap("findings, incidents, cost")
    data: dict[str, Any] = {
        "month": month.name,
        "cluster": cluster,
        "start": iso(month.start),
        "as_of": iso(month.end),
        "previous_month": month.previous_start.strftime("%Y-%m"),
        "next_review": iso(month.next_end),
        "horizon_days": month.horizon_days,
        "ledger_position": position,
        "clusters": clusters,
        "capacity": capacity,
        "storage": storage,
        "findings": findings,
        "incidents": incidents,
        "cost": cost,
    }
    data["summary"] = _summary(data, month)
    return data


class _Clock:
    """Adds the seconds since the previous lap to `timings[name]` (when there are timings)."""

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        if self.timings is not None:
            self.timings[name] = self.timings.get(name, 0.0) + now - self.last
        self.last = now


# -- what the report reflects -----------------------------------------------------------------


def _position(con: duckdb.DuckDBPyConnection, ledger: Ledger, month: Month) -> int:
    """The newest ledger position among the facts about the month or before it.

    That is the highest position of the events timed before the month's end that the read
    model has folded in, and of the month's cost days and budget whenever they were recorded
    (a day's spend is reported after the day). Later-timed events do not move it.
    """
    folded = con.execute("SELECT min(position) FROM projection_checkpoints").fetchone()
    upto = int(folded[0]) if folded and folded[0] is not None else 0
    with ledger.engine.connect() as conn:
        timed = conn.execute(
            select(func.max(events.c.position)).where(
                events.c.time < _us(month.end), events.c.position <= upto
            )
        ).scalar()
    cost = con.execute(
        "SELECT max(p) FROM (SELECT max(position) AS p FROM cost_daily WHERE day >= ? AND day < ? "
        "UNION ALL SELECT max(position) FROM budgets WHERE month = ?)",
        [month.start.date(), month.end.date(), month.name],
    ).fetchone()
    return max(int(timed or 0), int(cost[0]) if cost and cost[0] is not None else 0)


def _clusters(con: duckdb.DuckDBPyConnection, month: Month, cluster: str | None) -> list[str]:
    """The clusters with capacity, storage, incident or finding facts in the month."""
    rows = con.execute(
        """
        SELECT DISTINCT cluster FROM (
            SELECT cluster FROM cap_rollup WHERE step = '1d' AND t >= ? AND t < ?
            UNION ALL SELECT cluster FROM pvc_samples WHERE ts >= ? AND ts < ?
            UNION ALL SELECT cluster FROM inc_events WHERE t >= ? AND t < ?
            UNION ALL SELECT cluster FROM findings WHERE ts >= ? AND ts < ?
        ) WHERE cluster IS NOT NULL ORDER BY cluster
        """,
        [month.start, month.end] * 2
        + [_us(month.start), _us(month.end)]
        + [month.start, month.end],
    ).fetchall()
    names = [str(r[0]) for r in rows]
    return [c for c in names if c == cluster] if cluster is not None else names


# -- capacity -----------------------------------------------------------------------------------


def _points(series: dict[str, Any], field: str) -> list[list[float]]:
    """[epoch seconds, value] pairs of one field of a trends() series; nulls left out."""
    return [
        [_epoch(_parse_iso(p["t"])), float(p[field])]
        for p in series["points"]
        if p[field] is not None
    ]


def _one(series: list[dict[str, Any]]) -> dict[str, Any]:
    return series[0] if series else {"points": []}


def _month_stats(points: list[list[float]]) -> dict[str, Any]:
    """Mean and peak of hourly averages, and the hours whose average is above 85 %."""
    values = [v for _, v in points]
    if not values:
        return {"mean": None, "peak": None, "peak_at": None, "hours_above": 0}
    peak_index = max(range(len(values)), key=lambda i: (values[i], -i))
    return {
        "mean": sum(values) / len(values),
        "peak": values[peak_index],
        "peak_at": iso(_EPOCH + timedelta(seconds=points[peak_index][0])),
        "hours_above": sum(1 for v in values if v > HOT),
    }


def _stack(series: list[dict[str, Any]], field: str, days: list[int]) -> list[dict[str, Any]]:
    """Daily values per namespace, the biggest TOP_NAMESPACES first, the rest summed as other."""
    by_ns: dict[str, dict[int, float]] = {}
    for s in series:
        by_ns[str(s["key"]["namespace"])] = {int(t): v for t, v in _points(s, field)}
    mean = {ns: sum(v.values()) / len(days) for ns, v in by_ns.items() if v}
    ranked = sorted(mean, key=lambda ns: (-mean[ns], ns))
    layers: list[dict[str, Any]] = [
        {"name": ns, "other": 0, "values": [by_ns[ns].get(d, 0.0) for d in days]}
        for ns in ranked[:TOP_NAMESPACES]
    ]
    rest = ranked[TOP_NAMESPACES:]
    if rest:
        layers.append(
            {
                "name": f"{len(rest)} other namespaces",
                "other": len(rest),
                "values": [sum(by_ns[ns].get(d, 0.0) for ns in rest) for d in days],
            }
        )
    for layer in layers:
        layer["mean"] = sum(layer["values"]) / len(days) if days else 0.0
    return layers


def _cluster_capacity(con: duckdb.DuckDBPyConnection, month: Month, cluster: str) -> dict[str, Any]:
    """Trends, sustained runs and headroom of one cluster over the month."""
    s, e = month.start, month.end
    days = [_epoch(s + timedelta(days=i)) for i in range((e - s).days)]
    resources: dict[str, Any] = {}
    ns_means: dict[str, dict[str, float | None]] = {}
    for res in _RESOURCES:
        whole = _one(trends(con, res, "cluster", "1h", s, e, cluster))
        pools = trends(con, res, "nodepool", "1h", s, e, cluster)
        ns = trends(con, res, "namespace", "1d", s, e, cluster)
        for series in ns:
            row = ns_means.setdefault(str(series["key"]["namespace"]), {})
            for field in ("utilization_avg", "commitment_avg"):
                values = [v for _, v in _points(series, field)]
                row[f"{res}_{field[:-4]}"] = sum(values) / len(values) if values else None
        utilization = _points(whole, "utilization_avg")
        commitment = _points(whole, "commitment_avg")
        resources[res] = {
            "utilization": utilization,
            "commitment": commitment,
            "utilization_month": _month_stats(utilization),
            "commitment_month": _month_stats(commitment),
            "pools": [
                {
                    "nodepool": p["key"]["nodepool"],
                    "utilization": (pts := _points(p, "utilization_avg")),
                    "month": _month_stats(pts),
                }
                for p in pools
            ],
            "namespaces": {
                "days": days,
                "utilization": _stack(ns, "utilization_avg", days),
                "commitment": _stack(ns, "commitment_avg", days),
            },
        }
    nodes = trends(con, "nodes", "nodepool", "1h", s, e, cluster)
    counts = {
        "nodes_by_pool": [
            {"nodepool": p["key"]["nodepool"], "points": _points(p, "usage_avg")} for p in nodes
        ],
        "nodes": _points(_one(trends(con, "nodes", "cluster", "1h", s, e, cluster)), "usage_avg"),
        "pods": _points(_one(trends(con, "pods", "cluster", "1h", s, e, cluster)), "usage_avg"),
    }
    runs = sustained(con, s, e, cluster)
    order = sorted(ns_means, key=lambda n: (-(ns_means[n].get("cpu_commitment") or 0.0), n))
    return {
        "cluster": cluster,
        "resources": resources,
        "namespace_means": [{"namespace": n, **ns_means[n]} for n in order],
        "counts": counts,
        "sustained": _sustained(runs),
        "headroom": [h for h in headroom(con, e) if h["cluster"] == cluster],
    }


def _sustained(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Cluster and node pool runs in full; node runs summed per node pool and resource."""
    scoped = [r for r in runs if r["scope"] in ("cluster", "nodepool")]
    nodes: dict[tuple[str, str], dict[str, Any]] = {}
    for r in runs:
        if r["scope"] != "node":
            continue
        key = (str(r["nodepool"]), str(r["resource"]))
        agg = nodes.setdefault(
            key,
            {
                "nodepool": key[0],
                "resource": key[1],
                "runs": 0,
                "nodes": set(),
                "seconds": 0.0,
                "longest_seconds": 0.0,
                "peak": 0.0,
                "intervals": [],
            },
        )
        agg["runs"] += 1
        agg["nodes"].add(r["node"])
        agg["seconds"] += r["duration_seconds"]
        agg["longest_seconds"] = max(agg["longest_seconds"], r["duration_seconds"])
        agg["peak"] = max(agg["peak"], r["utilization_max"])
        agg["intervals"].append([r["start"], r["end"]])
    node_runs = []
    for key in sorted(nodes):
        agg = nodes[key]
        agg["nodes"] = len(agg["nodes"])
        agg["intervals"] = _merge(agg["intervals"])
        node_runs.append(agg)
    return {"runs": scoped, "node_runs": node_runs}


def _merge(intervals: list[list[str]]) -> list[list[str]]:
    """Overlapping [start, end] ISO intervals merged (ISO strings of one format sort as time)."""
    out: list[list[str]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


# -- storage ------------------------------------------------------------------------------------


def _storage(con: duckdb.DuckDBPyConnection, month: Month, cluster: str | None) -> dict[str, Any]:
    """Every PVC's forecast as of the month's end, ranked by days to 90 %, and fan histories."""
    # Kept by the storage projection once the month has ended (the same figures as a fit).
    items = month_end_forecasts(con, month.end, cluster)
    items.sort(
        key=lambda i: (
            i["days_to_90"] is None,
            i["days_to_90"] or 0.0,
            i["cluster"],
            i["namespace"],
            i["pvc"],
        )
    )
    fans = _fan_candidates(items, month)
    histories = _pvc_history(con, month, fans)
    for it in fans:
        it["history"] = histories.get((it["cluster"], it["namespace"], it["pvc"]), [])
    return {
        "count": len(items),
        "ranked": items[:PVC_ROWS],
        "fans": fans,
        "before_next_review": [i for i in items if _before_review(i, month)],
    }


def _before_review(item: dict[str, Any], month: Month) -> bool:
    """At 90 % already, or its forecast (or the early end of its interval) before next review."""
    if item["used_ratio"] is not None and item["used_ratio"] >= EXPAND:
        return True
    low = item["eta_90_low"]
    return low is not None and _parse_iso(low) < month.next_end


def _fan_candidates(items: list[dict[str, Any]], month: Month) -> list[dict[str, Any]]:
    """The PVCs reaching 90 % before the next review, topped up with the next soonest."""
    chosen = [i for i in items if _before_review(i, month)][:PVC_FANS_MAX]
    taken = {id(i) for i in chosen}
    for i in items:
        if len(chosen) >= PVC_FANS_MIN:
            break
        if id(i) not in taken and i["days_to_90"] is not None:
            chosen.append(i)
    return [dict(i) for i in chosen]


def _pvc_history(
    con: duckdb.DuckDBPyConnection, month: Month, items: Sequence[dict[str, Any]]
) -> dict[tuple[str, str, str], list[list[float]]]:
    """Per PVC: the highest used bytes in each 2-hour bucket of the last 30 days."""
    if not items:
        return {}
    keys = sorted({(i["cluster"], i["namespace"], i["pvc"]) for i in items})
    match = " OR ".join(["(cluster = ? AND namespace = ? AND pvc = ?)"] * len(keys))
    rows = con.execute(
        f"""
        WITH s AS (
            SELECT cluster, namespace, pvc, ts, arg_max(value, position) AS used
            FROM pvc_samples
            WHERE metric = 'pvc_used_bytes' AND ts >= ? AND ts < ? AND ({match})
            GROUP BY cluster, namespace, pvc, ts
        )
        SELECT cluster, namespace, pvc, epoch_us(ts) // ? AS b, max(used)
        FROM s GROUP BY ALL ORDER BY cluster, namespace, pvc, b
        """,
        [month.end - PVC_HISTORY, month.end, *[v for k in keys for v in k], PVC_BUCKET_S * 10**6],
    ).fetchall()
    out: dict[tuple[str, str, str], list[list[float]]] = {}
    for c, ns, pvc, bucket, used in rows:
        out.setdefault((str(c), str(ns), str(pvc)), []).append(
            [int(bucket) * PVC_BUCKET_S, float(used)]
        )
    return out


# -- findings -----------------------------------------------------------------------------------

_FINDINGS: Final = """
WITH f AS (
    SELECT provider, finding_id, title, severity, status, resource, namespace, cluster,
        coalesce(first_seen, ts) AS first_seen, ts, position
    FROM findings WHERE ts < ? {cluster}
),
ranked AS (
    SELECT *,
        row_number() OVER (PARTITION BY provider, finding_id ORDER BY ts DESC, position DESC) AS n,
        min(first_seen) OVER (PARTITION BY provider, finding_id) AS first_seen_min
    FROM f
),
before AS (
    SELECT provider, finding_id, status AS status_before FROM (
        SELECT provider, finding_id, status, row_number() OVER (
            PARTITION BY provider, finding_id ORDER BY ts DESC, position DESC) AS n
        FROM f WHERE ts < ?
    ) WHERE n = 1
)
SELECT r.provider, r.finding_id, r.title, r.severity, r.status, r.resource, r.namespace,
    r.first_seen_min, b.status_before
FROM ranked r LEFT JOIN before b USING (provider, finding_id)
WHERE r.n = 1
ORDER BY r.provider, r.finding_id
"""


def _findings(con: duckdb.DuckDBPyConnection, month: Month, cluster: str | None) -> dict[str, Any]:
    """Per severity: findings first seen in the month, resolved in it, and open at its end."""
    clause = ""
    params: list[Any] = [month.end]
    if cluster is not None:
        clause = "AND cluster = ?"
        params.append(cluster)
    rows = con.execute(_FINDINGS.format(cluster=clause), [*params, month.start]).fetchall()
    counts = {s: {"opened": 0, "resolved": 0, "open": 0} for s in FINDING_SEVERITIES}
    open_items = []
    for provider, fid, title, sev, status, resource, ns, first_seen, before in rows:
        c = counts.setdefault(str(sev), {"opened": 0, "resolved": 0, "open": 0})
        if first_seen is not None and month.start <= first_seen < month.end:
            c["opened"] += 1
        closed = status in ("RESOLVED", "ARCHIVED")
        if closed and before in (None, "ACTIVE"):
            c["resolved"] += 1
        if status == "ACTIVE":
            c["open"] += 1
            open_items.append(
                {
                    "provider": provider,
                    "finding_id": fid,
                    "title": title,
                    "severity": sev,
                    "resource": resource,
                    "namespace": ns,
                    "first_seen": iso(first_seen),
                    "age_days": None
                    if first_seen is None
                    else (month.end - first_seen).total_seconds() / 86400,
                }
            )
    rank = {s: i for i, s in enumerate(FINDING_SEVERITIES)}
    open_items.sort(
        key=lambda f: (
            rank.get(f["severity"], 99),
            f["first_seen"] or "",
            f["provider"] or "",
            f["finding_id"] or "",
        )
    )
    by_severity = [
        {"severity": s, **counts[s]} for s in sorted(counts, key=lambda s: (rank.get(s, 99), s))
    ]
    return {
        "by_severity": by_severity,
        "total": {k: sum(c[k] for c in counts.values()) for k in ("opened", "resolved", "open")},
        "open_items": [f for f in open_items if f["severity"] in ("CRITICAL", "HIGH")][
            :OPEN_FINDINGS_ROWS
        ],
        "open_critical_high": sum(1 for f in open_items if f["severity"] in ("CRITICAL", "HIGH")),
    }


# -- incidents ----------------------------------------------------------------------------------


def _incidents(con: duckdb.DuckDBPyConnection, month: Month, cluster: str | None) -> dict[str, Any]:
    """This month and the previous one, each judged as of its own end."""
    return {
        "month": _incident_period(con, month.start, month.end, cluster, detail=True),
        "previous": _incident_period(con, month.previous_start, month.start, cluster, detail=False),
    }


def _incident_period(
    con: duckdb.DuckDBPyConnection,
    start: datetime,
    end: datetime,
    cluster: str | None,
    *,
    detail: bool,
) -> dict[str, Any]:
    rows = judged_as_of(con, _us(end))
    if cluster is not None:
        rows = [r for r in rows if r[4] == cluster]
    mem = duckdb.connect(":memory:")
    try:
        mem.execute(INCIDENTS_DDL)
        insert_rows(mem, "incidents", rows)
        by_sev = {g["key"]["severity"]: g for g in metrics(mem, start, end, ["severity"])}
        total = metrics(mem, start, end, [])
        judged = breaches(mem, start, end, end)
        summary = {s["severity"]: s for s in judged["summary"]}
        table = []
        for sev in SEVERITIES:
            g = by_sev.get(sev)
            table.append(
                {
                    "severity": sev,
                    "incidents": g["count"] if g else 0,
                    "mtta": g["mtta"] if g else None,
                    "mttr": g["mttr"] if g else None,
                    "response_breaches": summary[sev]["response_breaches"],
                    "resolution_breaches": summary[sev]["resolution_breaches"],
                    "breach_rate": summary[sev]["breach_rate"],
                }
            )
        n = sum(r["incidents"] for r in table)
        resp = len({b["incident_id"] for b in judged["items"] if b["kind"] == "response"})
        out: dict[str, Any] = {
            "start": iso(start),
            "end": iso(end),
            "by_severity": table,
            "total": {
                "incidents": n,
                "mtta": total[0]["mtta"] if total else None,
                "mttr": total[0]["mttr"] if total else None,
                "response_breaches": sum(r["response_breaches"] for r in table),
                "resolution_breaches": sum(r["resolution_breaches"] for r in table),
                "breach_rate": resp / n if n else None,
            },
        }
        if detail:
            info = {
                r[0]: r
                for r in mem.execute(
                    "SELECT incident_id, title, cluster, status, postmortem_url, opened_at, "
                    "severity_max FROM incidents WHERE opened_at >= ? AND opened_at < ? "
                    "ORDER BY opened_at, incident_id",
                    [start, end],
                ).fetchall()
            }
            out["breaches"] = [
                {**b, "title": info[b["incident_id"]][1], "cluster": info[b["incident_id"]][2]}
                for b in judged["items"]
            ]
            out["unresolved"] = [
                {
                    "incident_id": i,
                    "title": r[1],
                    "severity": r[6],
                    "status": r[3],
                    "opened_at": iso(r[5]),
                }
                for i, r in info.items()
                if r[3] != "resolved"
            ]
            out["postmortems"] = [
                {"incident_id": i, "title": r[1], "url": r[4]}
                for i, r in info.items()
                if r[4] is not None
            ]
        return out
    finally:
        mem.close()


# -- the executive summary ----------------------------------------------------------------------


def _summary(data: dict[str, Any], month: Month) -> dict[str, Any]:
    """What to expand and by when, and the month against the previous one and the budget."""
    horizon = month.horizon_days
    expand = []
    for cap in data["capacity"]:
        pool_runs: dict[tuple[str | None, str], list[dict[str, Any]]] = {}
        for r in cap["sustained"]["runs"]:
            pool_runs.setdefault((r["nodepool"], r["resource"]), []).append(r)
        for h in cap["headroom"]:
            reasons = []
            level = h["commitment"] if h["basis"] == "requests" else h["utilization"]
            d85, d85n1 = h["days_to_85"], h["days_to_85_n_minus_1"]
            if d85 is not None and d85 <= horizon:
                reasons.append({"kind": "now" if d85 == 0 else "reaches", "days": d85})
            if d85n1 is not None and d85n1 <= horizon:
                reasons.append({"kind": "n1_now" if d85n1 == 0 else "n1", "days": d85n1})
            runs = pool_runs.get((h["nodepool"], h["resource"]), [])
            if runs:
                reasons.append(
                    {
                        "kind": "sustained",
                        "runs": len(runs),
                        "longest_seconds": max(r["duration_seconds"] for r in runs),
                    }
                )
            if not reasons:
                continue
            days = [r["days"] for r in reasons if "days" in r]
            by = min(days) if days else 0.0
            expand.append(
                {
                    "cluster": h["cluster"],
                    "nodepool": h["nodepool"],
                    "resource": h["resource"],
                    "basis": h["basis"],
                    "level": level,
                    "growth_per_day": h["growth_per_day"] / h["allocatable"]
                    if h["allocatable"]
                    else None,
                    "reasons": reasons,
                    "by_days": by,
                    "by": iso(month.end + timedelta(days=by)),
                }
            )
    expand.sort(key=lambda x: (x["by_days"], x["cluster"], x["nodepool"] or "", x["resource"]))
    inc, prev = data["incidents"]["month"]["total"], data["incidents"]["previous"]["total"]
    cost = data["cost"]
    return {
        "expand": expand,
        "pvcs": [
            {
                "cluster": i["cluster"],
                "namespace": i["namespace"],
                "pvc": i["pvc"],
                "used_ratio": i["used_ratio"],
                "eta_90": i["eta_90"],
                "eta_90_low": i["eta_90_low"],
                "eta_90_high": i["eta_90_high"],
                "likely": i["eta_90"] is not None and _parse_iso(i["eta_90"]) < month.next_end,
            }
            for i in data["storage"]["before_next_review"]
        ],
        "incidents": {"month": inc, "previous": prev},
        "findings": {
            **data["findings"]["total"],
            "open_critical_high": data["findings"]["open_critical_high"],
        },
        "cost": {
            k: cost[k]
            for k in (
                "currency",
                "spend_to_date",
                "projected",
                "budget",
                "projected_vs_budget",
                "over_budget",
                "days_elapsed",
                "days_in_month",
                "out_of_range",
            )
        },
    }
