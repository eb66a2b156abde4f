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

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any, Final

import duckdb
from sqlalchemy import func, select

from analytics.cost.forecast import HISTORY_DAYS
from analytics.cost.prices import SETTLED_FIRST, SETTLED_LAST
from analytics.cost.projection import month_cost
from analytics.decisions.gather import Policy, policy_of, rightsized
from analytics.incidents.metrics import breaches, metrics
from analytics.incidents.projection import INCIDENTS_DDL, judged_as_of
from analytics.outputs.report_capacity import cluster_capacity
from analytics.outputs.report_decisions_data import (
    month_decisions,
    month_forecast,
    month_network,
    month_rightsizing,
    month_showback,
)
from analytics.outputs.report_model import (
    AmountOutOfRange,
    Breach,
    ClusterCapacity,
    Cost,
    DaySpend,
    Durations,
    Expansion,
    FindingCounts,
    Findings,
    HotReason,
    HotRun,
    IncidentFigures,
    IncidentPeriod,
    Incidents,
    Month,
    OpenFinding,
    Point,
    Postmortem,
    PvcDue,
    PvcFan,
    PvcForecast,
    Reason,
    Report,
    ServiceSpend,
    SeverityFindings,
    Storage,
    Summary,
    ThresholdReason,
    UnknownCluster,
    Unresolved,
)
from analytics.readmodel.model import insert_rows
from analytics.storage.projection import month_end_forecasts
from analytics.thresholds import STORAGE_EXPAND
from store.incident_state import SEVERITIES
from store.ledger import Ledger
from store.schema import events
from store.settings import Settings
from store.timefmt import naive_to_us, z_to_naive, z_to_naive_or_none

FINDING_SEVERITIES: Final = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL")
#: PVC rows in the ranking table, and fan charts drawn (the soonest to reach 90 % first).
PVC_ROWS: Final = 25
PVC_FANS_MIN: Final = 6
PVC_FANS_MAX: Final = 12
#: The fan charts show this much history before the month's end, in buckets of this size.
PVC_HISTORY: Final = timedelta(days=30)
PVC_BUCKET: Final = timedelta(hours=2)
OPEN_FINDINGS_ROWS: Final = 15
FORECAST_HISTORY: Final = timedelta(days=HISTORY_DAYS)
#: The policy of a report made without one: every setting at its default, no price table.
DEFAULT_POLICY: Final = policy_of(Settings.model_construct())


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
    policy: Policy | None = None,
) -> Report:
    """Every figure of the report for `month` (and one cluster, or all), as of its end.

    `policy` shapes the decisions, rightsizing and prices (callers pass the settings', from
    `policy_of`); without one, the settings' defaults, read from no environment or file, so
    a test or a golden file does not depend on where it runs. With `timings`, the seconds each
    part took are added to it (benchmarks/bench_report.py).
    """
    policy = policy or DEFAULT_POLICY
    clock = _Clock(timings)
    with snapshot(con):
        clusters = _clusters(con, month, cluster)
        if cluster is not None and not clusters:
            raise UnknownCluster(f"the read model holds nothing about cluster {cluster!r}")
        capacity = tuple(cluster_capacity(con, month, c) for c in clusters)
        clock.lap("capacity")
        storage = _storage(con, month, cluster)
        clock.lap("storage")
        findings = _findings(con, month, cluster)
        incidents = Incidents(
            month=_incident_period(con, month.start, month.end, cluster, detail=True),
            previous=_incident_period(con, month.previous_start, month.start, cluster),
        )
        cost = _cost(con, month)
        position = _position(con, ledger, month)
        clock.lap("findings, incidents, cost")
        # Decisions reclaim what rightsizing finds: one computation serves both sections.
        sized = rightsized(con, month.end, policy, cluster)
        decided = month_decisions(con, month, policy, cluster, sized)
        clock.lap("decisions")
        rightsizing = month_rightsizing(sized, policy)
        network = month_network(con, month, cluster)
        showback = month_showback(con, month, policy, cluster)
        spend = month_forecast(con, month)
        clock.lap("rightsizing, network, showback")
    return Report(
        month=month,
        cluster=cluster,
        ledger_position=position,
        clusters=tuple(clusters),
        capacity=capacity,
        storage=storage,
        findings=findings,
        incidents=incidents,
        cost=cost,
        summary=Summary(_expand(capacity, month), _pvcs_due(storage, month)),
        decisions=decided,
        rightsizing=rightsizing,
        network=network,
        showback=showback,
        forecast=spend,
    )


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
    model has folded in, and of the cost days the report reads (the month's, the forecast's
    history, the instance-type days that price it) and the month's budget whenever they were
    recorded (a day's spend is reported after the day). Later-timed events do not move it.
    """
    folded = con.execute("SELECT min(position) FROM projection_checkpoints").fetchone()
    upto = int(folded[0]) if folded and folded[0] is not None else 0
    with ledger.engine.connect() as conn:
        timed = conn.execute(
            select(func.max(events.c.position)).where(
                events.c.time < naive_to_us(month.end), events.c.position <= upto
            )
        ).scalar()
    # The spend forecast may read the 56 days before the month; prices at the month's end read
    # the settled instance-type days before it (Cost Explorer restates days after the fact).
    cost = con.execute(
        "SELECT max(p) FROM (SELECT max(position) AS p FROM cost_daily WHERE day >= ? AND day < ? "
        "UNION ALL SELECT max(position) FROM budgets WHERE month = ? "
        "UNION ALL SELECT max(position) FROM cost_instance_daily WHERE day >= ? AND day <= ?)",
        [
            month.start.date() - FORECAST_HISTORY,
            month.end.date(),
            month.name,
            month.end.date() - SETTLED_FIRST,
            month.end.date() - SETTLED_LAST,
        ],
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
        + [naive_to_us(month.start), naive_to_us(month.end)]
        + [month.start, month.end],
    ).fetchall()
    names = [str(r[0]) for r in rows]
    return [c for c in names if c == cluster] if cluster is not None else names


# -- storage ------------------------------------------------------------------------------------


def _storage(con: duckdb.DuckDBPyConnection, month: Month, cluster: str | None) -> Storage:
    """Every PVC's forecast as of the month's end, ranked by days to 90 %, and fan histories."""
    # Kept by the storage projection once the month has ended (the same figures as a fit).
    items = [_forecast(i) for i in month_end_forecasts(con, month.end, cluster)]
    items.sort(
        key=lambda i: (i.days_to_90 is None, i.days_to_90 or 0.0, i.cluster, i.namespace, i.pvc)
    )
    fans = _fan_candidates(items, month)
    histories = _pvc_history(con, month, fans)
    return Storage(
        count=len(items),
        ranked=tuple(items[:PVC_ROWS]),
        fans=tuple(
            PvcFan(i, tuple(histories.get((i.cluster, i.namespace, i.pvc), ()))) for i in fans
        ),
        before_next_review=tuple(i for i in items if _before_review(i, month)),
    )


def _forecast(item: dict[str, Any]) -> PvcForecast:
    return PvcForecast(
        cluster=item["cluster"],
        namespace=item["namespace"],
        pvc=item["pvc"],
        used_bytes=item["used_bytes"],
        capacity_bytes=item["capacity_bytes"],
        used_ratio=item["used_ratio"],
        growth_bytes_per_day=item["growth_bytes_per_day"],
        days_to_85=item["days_to_85"],
        days_to_90=item["days_to_90"],
        days_to_full=item["days_to_full"],
        eta_90=z_to_naive_or_none(item["eta_90"]),
        eta_90_low=z_to_naive_or_none(item["eta_90_low"]),
        eta_90_high=z_to_naive_or_none(item["eta_90_high"]),
        method=item["method"],
        status=item["status"],
    )


def _before_review(item: PvcForecast, month: Month) -> bool:
    """At 90 % already, or its forecast (or the early end of its interval) before next review."""
    if item.used_ratio is not None and item.used_ratio >= STORAGE_EXPAND:
        return True
    return item.eta_90_low is not None and item.eta_90_low < month.next_end


def _fan_candidates(items: list[PvcForecast], month: Month) -> list[PvcForecast]:
    """The PVCs reaching 90 % before the next review, topped up with the next soonest."""
    chosen = [i for i in items if _before_review(i, month)][:PVC_FANS_MAX]
    taken = {id(i) for i in chosen}
    for i in items:
        if len(chosen) >= PVC_FANS_MIN:
            break
        if id(i) not in taken and i.days_to_90 is not None:
            chosen.append(i)
    return chosen


def _pvc_history(
    con: duckdb.DuckDBPyConnection, month: Month, items: Sequence[PvcForecast]
) -> dict[tuple[str, str, str], list[Point]]:
    """Per PVC: the highest used bytes in each 2-hour bucket of the last 30 days."""
    if not items:
        return {}
    keys = sorted({(i.cluster, i.namespace, i.pvc) for i in items})
    match = " OR ".join(["(cluster = ? AND namespace = ? AND pvc = ?)"] * len(keys))
    bucket_us = PVC_BUCKET // timedelta(microseconds=1)
    rows = con.execute(
        f"""
        WITH s AS (
            SELECT cluster, namespace, pvc, ts, arg_max(value, position) AS used
            FROM pvc_samples
            WHERE metric = 'pvc_used_bytes' AND ts >= ? AND ts < ? AND ({match})
            GROUP BY cluster, namespace, pvc, ts
        )
        SELECT cluster, namespace, pvc, make_timestamp(epoch_us(ts) // ? * ?) AS b, max(used)
        FROM s GROUP BY ALL ORDER BY cluster, namespace, pvc, b
        """,
        [month.end - PVC_HISTORY, month.end, *[v for k in keys for v in k], bucket_us, bucket_us],
    ).fetchall()
    out: dict[tuple[str, str, str], list[Point]] = {}
    for c, ns, pvc, bucket, used in rows:
        out.setdefault((str(c), str(ns), str(pvc)), []).append((bucket, float(used)))
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


def _findings(con: duckdb.DuckDBPyConnection, month: Month, cluster: str | None) -> Findings:
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
        if status in ("RESOLVED", "ARCHIVED") and before in (None, "ACTIVE"):
            c["resolved"] += 1
        if status == "ACTIVE":
            c["open"] += 1
            if sev in ("CRITICAL", "HIGH"):
                age = (
                    None if first_seen is None else (month.end - first_seen).total_seconds() / 86400
                )
                open_items.append(
                    OpenFinding(provider, fid, title, sev, resource, ns, first_seen, age)
                )
    rank = {s: i for i, s in enumerate(FINDING_SEVERITIES)}
    open_items.sort(
        key=lambda f: (
            rank[f.severity],
            # To the second, ties then by provider and id: the order the report has always had.
            f.first_seen is not None,
            f.first_seen.replace(microsecond=0) if f.first_seen else datetime.min,
            f.provider or "",
            f.finding_id or "",
        )
    )
    return Findings(
        by_severity=tuple(
            SeverityFindings(s, FindingCounts(**counts[s]))
            for s in sorted(counts, key=lambda s: (rank.get(s, 99), s))
        ),
        total=FindingCounts(
            **{k: sum(c[k] for c in counts.values()) for k in ("opened", "resolved", "open")}
        ),
        open_items=tuple(open_items[:OPEN_FINDINGS_ROWS]),
        open_critical_high=len(open_items),
    )


# -- incidents ----------------------------------------------------------------------------------


def _incident_period(
    con: duckdb.DuckDBPyConnection,
    start: datetime,
    end: datetime,
    cluster: str | None,
    *,
    detail: bool = False,
) -> IncidentPeriod:
    """Incidents opened in [start, end), judged as of `end`; with `detail`, the lists too."""
    rows = judged_as_of(con, naive_to_us(end))
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
                IncidentFigures(
                    severity=sev,
                    incidents=g["count"] if g else 0,
                    mtta=_durations(g["mtta"]) if g else None,
                    mttr=_durations(g["mttr"]) if g else None,
                    response_breaches=summary[sev]["response_breaches"],
                    resolution_breaches=summary[sev]["resolution_breaches"],
                    breach_rate=summary[sev]["breach_rate"],
                )
            )
        n = sum(r.incidents for r in table)
        resp = len({b["incident_id"] for b in judged["items"] if b["kind"] == "response"})
        period = IncidentPeriod(
            start=start,
            end=end,
            by_severity=tuple(table),
            total=IncidentFigures(
                severity=None,
                incidents=n,
                mtta=_durations(total[0]["mtta"]) if total else None,
                mttr=_durations(total[0]["mttr"]) if total else None,
                response_breaches=sum(r.response_breaches for r in table),
                resolution_breaches=sum(r.resolution_breaches for r in table),
                breach_rate=resp / n if n else None,
            ),
        )
        if not detail:
            return period
        info = {
            r[0]: r
            for r in mem.execute(
                "SELECT incident_id, title, cluster, status, postmortem_url, opened_at, "
                "severity_max FROM incidents WHERE opened_at >= ? AND opened_at < ? "
                "ORDER BY opened_at, incident_id",
                [start, end],
            ).fetchall()
        }
        return replace(
            period,
            breaches=tuple(_breach(b, info[b["incident_id"]]) for b in judged["items"]),
            unresolved=tuple(
                Unresolved(i, title=r[1], severity=r[6], status=r[3], opened_at=r[5])
                for i, r in info.items()
                if r[3] != "resolved"
            ),
            postmortems=tuple(
                Postmortem(i, title=r[1], url=r[4]) for i, r in info.items() if r[4] is not None
            ),
        )
    finally:
        mem.close()


def _durations(figure: dict[str, Any]) -> Durations:
    return Durations(figure["mean"], figure["median"], figure["p90"], figure["missing"])


def _breach(b: dict[str, Any], incident: tuple[Any, ...]) -> Breach:
    return Breach(
        incident_id=b["incident_id"],
        title=incident[1],
        cluster=incident[2],
        severity=b["severity"],
        kind=b["kind"],
        due_at=z_to_naive(b["due_at"]),
        met_at=z_to_naive_or_none(b["met_at"]),
        overrun_seconds=b["overrun_seconds"],
        open=b["open"],
    )


# -- cost ---------------------------------------------------------------------------------------


def _cost(con: duckdb.DuckDBPyConnection, month: Month) -> Cost:
    """The month's spend up to its last day, against its budget."""
    c = month_cost(con, month.name, (month.end - timedelta(days=1)).date())
    return Cost(
        currency=c["currency"],
        spend_to_date=c["spend_to_date"],
        days_elapsed=c["days_elapsed"],
        days_in_month=c["days_in_month"],
        projected=c["projected"],
        budget=c["budget"],
        projected_vs_budget=c["projected_vs_budget"],
        over_budget=c["over_budget"],
        daily=tuple(DaySpend(date.fromisoformat(d["date"]), d["amount"]) for d in c["daily"]),
        by_service=tuple(ServiceSpend(s["service"], s["amount"]) for s in c["by_service"]),
        amounts_out_of_range=tuple(
            AmountOutOfRange(date.fromisoformat(a["date"]), a["service"])
            for a in c["out_of_range"]["amounts"]
        ),
        budget_out_of_range=c["out_of_range"]["budget"],
    )


# -- the executive summary ----------------------------------------------------------------------


def _expand(capacity: Sequence[ClusterCapacity], month: Month) -> tuple[Expansion, ...]:
    """The node pools (and clusters) past 85 %, reaching it before the next review, or hot."""
    horizon = month.horizon_days
    expand = []
    for cap in capacity:
        pool_runs: dict[tuple[str | None, str], list[HotRun]] = {}
        for run in cap.sustained.runs:
            pool_runs.setdefault((run.nodepool, run.resource), []).append(run)
        for h in cap.headroom:
            reasons: list[Reason] = []
            d85, d85n1 = h.days_to_85, h.days_to_85_n_minus_1
            if d85 is not None and d85 <= horizon:
                reasons.append(ThresholdReason("now" if d85 == 0 else "reaches", d85))
            if d85n1 is not None and d85n1 <= horizon:
                reasons.append(ThresholdReason("n1_now" if d85n1 == 0 else "n1", d85n1))
            runs = pool_runs.get((h.nodepool, h.resource), [])
            if runs:
                reasons.append(HotReason(len(runs), max(r.duration_seconds for r in runs)))
            if not reasons:
                continue
            days = [r.days for r in reasons if isinstance(r, ThresholdReason)]
            by = min(days) if days else 0.0
            expand.append(
                Expansion(
                    cluster=h.cluster,
                    nodepool=h.nodepool,
                    resource=h.resource,
                    basis=h.basis,
                    level=h.commitment if h.basis == "requests" else h.utilization,
                    growth_per_day=h.growth_per_day / h.allocatable if h.allocatable else None,
                    reasons=tuple(reasons),
                    by_days=by,
                    by=month.end + timedelta(days=by),
                )
            )
    expand.sort(key=lambda x: (x.by_days, x.cluster, x.nodepool or "", x.resource))
    return tuple(expand)


def _pvcs_due(storage: Storage, month: Month) -> tuple[PvcDue, ...]:
    """The PVCs to expand (likely) or watch before the next review."""
    return tuple(
        PvcDue(i, likely=i.eta_90 is not None and i.eta_90 < month.next_end)
        for i in storage.before_next_review
    )
