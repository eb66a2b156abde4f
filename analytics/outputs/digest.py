"""The daily digest: the seed's morning health check, answered from the read model."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import duckdb

from analytics.capacity.hotspots import sustained
from analytics.incidents.metrics import breaches
from analytics.readmodel.runner import last_errors, poisoned_counts, poisoned_events
from analytics.storage.projection import LOOKBACK, forecasts
from analytics.thresholds import STORAGE_ALERT, STORAGE_EXPAND, SUSTAINED_MIN, SUSTAINED_UTILIZATION
from store.timefmt import NAIVE_EPOCH, naive_iso

#: The last, `projections`, only when a projection skipped events or is failing.
SECTIONS: Final = (
    "nodes", "pods", "storage", "findings", "incidents", "capacity", "projections",
)  # fmt: skip
#: The seed's `kubectl get pods --sort-by=…restartCount | tail -20`.
TOP_RESTARTS: Final = 20
#: Longest list a section prints; its counts still cover everything.
LIST_MAX: Final = 100
FINDING_SEVERITIES: Final = ("CRITICAL", "HIGH")
#: Severities whose open incidents need attention even before a target is missed.
URGENT_INCIDENTS: Final = ("P0", "P1")
_LATEST: Final = (
    "QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY ts DESC, position DESC) = 1"
)


#: How the runbook's sustained rule reads in the digest's text.
_HOT: Final = round(SUSTAINED_UTILIZATION * 100)
_RUN: Final = f"{SUSTAINED_MIN.total_seconds() / 3600:g} h"


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    cur = con.execute(sql, list(params))
    names = [d[0] for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else many or word + 's'}"


def _section(attention: bool, summary: str, **body: Any) -> dict[str, Any]:
    return {"status": "attention" if attention else "ok", "summary": summary, **body}


# -- nodes -------------------------------------------------------------------------------------

# Each node's latest readiness (ledger position breaks ties in time) and, when NotReady, the
# start of that streak: its first NotReady status after its last Ready one.
_NODES: Final = f"""
WITH s AS (
    SELECT * FROM node_status WHERE ts <= ? AND ready IS NOT NULL AND node IS NOT NULL
),
last AS (SELECT * FROM s {_LATEST.format(keys="cluster, node")}),
up AS (SELECT cluster, node, max(ts) AS last_ready FROM s WHERE ready GROUP BY ALL),
down AS (
    SELECT s.cluster, s.node, min(s.ts) AS since
    FROM s LEFT JOIN up ON s.cluster IS NOT DISTINCT FROM up.cluster AND s.node = up.node
    WHERE NOT s.ready AND (up.last_ready IS NULL OR s.ts > up.last_ready)
    GROUP BY ALL
)
SELECT last.cluster, last.node, last.reason, last.nodepool, last.zone, last.instance_type,
    last.ts, down.since
FROM last LEFT JOIN down ON last.cluster IS NOT DISTINCT FROM down.cluster
    AND last.node = down.node
WHERE NOT last.ready
ORDER BY down.since, last.cluster, last.node
"""


def _nodes(con: duckdb.DuckDBPyConnection, now: datetime, max_age: timedelta) -> dict[str, Any]:
    rows = _rows(con, _NODES, [now])
    fresh = [r for r in rows if r["ts"] >= now - max_age]
    stale = len(rows) - len(fresh)
    items = [
        {
            "cluster": r["cluster"],
            "node": r["node"],
            "nodepool": r["nodepool"],
            "zone": r["zone"],
            "instance_type": r["instance_type"],
            "reason": r["reason"],
            "not_ready_since": naive_iso(r["since"]),
            "not_ready_seconds": (now - r["since"]).total_seconds(),
        }
        for r in fresh
    ]
    summary = f"{_plural(len(items), 'node')} NotReady" if items else "every node Ready"
    if stale:
        summary += f" ({stale} last seen NotReady over {_hours(max_age)} ago left out)"
    return _section(bool(items), summary, not_ready=items[:LIST_MAX], stale=stale)


def _hours(span: timedelta) -> str:
    """A span as its largest two units: 45m, 9h23m, 3d, 2d4h."""
    minutes = round(span.total_seconds() / 60)
    if minutes < 1:
        return f"{round(span.total_seconds())}s"
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{mins:02d}m" if mins else f"{hours}h"
    return f"{mins}m"


# -- pods --------------------------------------------------------------------------------------

_PODS: Final = f"""
WITH s AS (SELECT * FROM pod_status WHERE ts <= ? AND pod IS NOT NULL),
last AS (SELECT * FROM s {_LATEST.format(keys="cluster, namespace, pod")}),
before AS (
    SELECT cluster, namespace, pod, restarts AS restarts_before FROM s WHERE ts < ?
    {_LATEST.format(keys="cluster, namespace, pod")}
)
SELECT last.*, before.restarts_before
FROM last LEFT JOIN before ON last.cluster IS NOT DISTINCT FROM before.cluster
    AND last.namespace IS NOT DISTINCT FROM before.namespace AND last.pod = before.pod
"""


def _unhealthy(r: dict[str, Any]) -> bool:
    """Not Running (nor Succeeded), or with a reason: the collector sets one only for trouble."""
    return r["phase"] not in ("Running", "Succeeded") or r["reason"] is not None


def _pods(
    con: duckdb.DuckDBPyConnection, now: datetime, start: datetime, max_age: timedelta
) -> dict[str, Any]:
    rows = _rows(con, _PODS, [now, start])

    def item(r: dict[str, Any]) -> dict[str, Any]:
        # A pod first seen in the window brings its whole count; a recreated one restarts at 0.
        gained = max(0, (r["restarts"] or 0) - (r["restarts_before"] or 0))
        return {
            "cluster": r["cluster"],
            "namespace": r["namespace"],
            "pod": r["pod"],
            "phase": r["phase"],
            "reason": r["reason"],
            "restarts": r["restarts"],
            "restarts_in_window": gained,
            "node": r["node"],
            "owner": r["owner"],
            "status_at": naive_iso(r["ts"]),
        }

    bad = [r for r in rows if _unhealthy(r)]
    fresh = [r for r in bad if r["ts"] >= now - max_age]
    stale = len(bad) - len(fresh)
    fresh.sort(key=lambda r: (r["ts"], r["cluster"] or "", r["namespace"] or "", r["pod"]))
    not_running = [item(r) for r in reversed(fresh)]
    restarted = [item(r) for r in rows]
    restarted = [p for p in restarted if p["restarts_in_window"] > 0]
    restarted.sort(
        key=lambda p: (-p["restarts_in_window"], -(p["restarts"] or 0), p["namespace"], p["pod"])
    )
    gained = sum(p["restarts_in_window"] for p in restarted)
    reasons = Counter(p["reason"] or p["phase"] for p in not_running)
    parts = [
        f"{_plural(len(not_running), 'pod')} not running"
        + (f" ({', '.join(f'{n} {k}' for k, n in reasons.most_common())})" if reasons else ""),
        f"{_plural(len(restarted), 'pod')} restarted {_plural(gained, 'time')} in the window",
    ]
    if stale:
        parts.append(f"{stale} last seen unhealthy over {_hours(max_age)} ago left out")
    return _section(
        bool(not_running),
        "; ".join(parts),
        not_running=not_running[:LIST_MAX],
        not_running_total=len(not_running),
        top_restarts=restarted[:TOP_RESTARTS],
        restarts_in_window=gained,
        stale=stale,
    )


# -- storage -----------------------------------------------------------------------------------


# Each PVC's latest used bytes and capacity in the forecast's look-back: a cheap first cut, so
# that only the volumes near the threshold pay for a forecast (which is the authority).
_PVC_LEVELS: Final = """
SELECT cluster, namespace, pvc, max(ts) AS seen,
    arg_max(value, (ts, position)) FILTER (metric = 'pvc_used_bytes') AS used,
    arg_max(value, (ts, position)) FILTER (metric = 'pvc_capacity_bytes' AND value > 0) AS cap
FROM pvc_samples WHERE ts > ? AND ts <= ? AND value IS NOT NULL AND NOT isnan(value)
GROUP BY ALL
"""
#: The first cut's margin below the threshold (the forecast judges the rest).
_NEAR: Final = 0.05


def _storage(con: duckdb.DuckDBPyConnection, now: datetime, max_age: timedelta) -> dict[str, Any]:
    levels = _rows(con, _PVC_LEVELS, [now - LOOKBACK, now])
    items, stale = [], 0
    for lv in levels:
        if lv["used"] is None or not lv["cap"] or lv["used"] / lv["cap"] < STORAGE_ALERT - _NEAR:
            continue
        (f,) = forecasts(con, now, cluster=lv["cluster"], namespace=lv["namespace"], pvc=lv["pvc"])
        if f["used_ratio"] is None or f["used_ratio"] < STORAGE_ALERT:
            continue
        if lv["seen"] < now - max_age:
            stale += 1  # a volume deleted while full leaves its last samples behind
            continue
        keys: tuple[str, ...] = ("cluster", "namespace", "pvc", "used_ratio", "used_bytes")
        keys += ("capacity_bytes", "status", "days_to_90", "days_to_full", "eta_90")
        items.append({k: f[k] for k in keys} | {"last_sample_at": naive_iso(lv["seen"])})
    items.sort(key=lambda i: (-i["used_ratio"], i["cluster"], i["namespace"], i["pvc"]))
    full = sum(1 for i in items if i["used_ratio"] >= STORAGE_EXPAND)
    alert, expand = round(STORAGE_ALERT * 100), round(STORAGE_EXPAND * 100)
    if items:
        summary = f"{_plural(len(items), 'PVC')} over {alert} % ({full} over {expand} %)"
    else:
        summary = f"no PVC over {alert} %"
    if stale:
        summary += f" ({stale} last sampled over {_hours(max_age)} ago left out)"
    return _section(bool(items), summary, pvcs=items[:LIST_MAX], stale=stale)


# -- findings ----------------------------------------------------------------------------------

# A finding is (provider, finding_id); it is new when its earliest first_seen falls in the
# window, and judged by its latest report (severity, status).
_FINDINGS: Final = f"""
WITH h AS (
    SELECT *, min(coalesce(first_seen, ts)) OVER (PARTITION BY provider, finding_id) AS born
    FROM findings WHERE ts <= ?
)
SELECT * FROM h WHERE born >= ? AND born < ?
{_LATEST.format(keys="provider, finding_id")}
"""


def _findings(con: duckdb.DuckDBPyConnection, now: datetime, start: datetime) -> dict[str, Any]:
    rows = [
        r for r in _rows(con, _FINDINGS, [now, start, now]) if r["severity"] in FINDING_SEVERITIES
    ]
    rows.sort(key=lambda r: (r["severity"] != "CRITICAL", now - r["born"], r["finding_id"]))
    items = [
        {
            "provider": r["provider"],
            "finding_id": r["finding_id"],
            "severity": r["severity"],
            "status": r["status"],
            "title": r["title"],
            "finding_type": r["finding_type"],
            "resource": r["resource"],
            "namespace": r["namespace"],
            "cluster": r["cluster"],
            "first_seen": naive_iso(r["born"]),
            "last_seen": naive_iso(r["last_seen"]),
        }
        for r in rows
    ]
    active = [i for i in items if i["status"] in ("ACTIVE", None)]
    by = Counter(i["severity"] for i in items)
    if items:
        summary = (
            f"{_plural(len(items), 'new CRITICAL/HIGH finding')} "
            f"({by['CRITICAL']} CRITICAL, {by['HIGH']} HIGH), {len(active)} active"
        )
    else:
        summary = "no new CRITICAL or HIGH finding"
    return _section(bool(active), summary, new=items[:LIST_MAX], active=len(active))


# -- incidents ---------------------------------------------------------------------------------

_OPEN: Final = """
SELECT incident_id, title, severity, severity_max, status, cluster, namespace, service,
    opened_at, acknowledged_at, response_due_at, resolution_due_at
FROM incidents WHERE status <> 'resolved' AND opened_at <= ?
ORDER BY severity, opened_at, incident_id
"""


def _incidents(con: duckdb.DuckDBPyConnection, now: datetime, start: datetime) -> dict[str, Any]:
    items = [
        r
        | {
            k: naive_iso(r[k])
            for k in ("opened_at", "acknowledged_at", "response_due_at", "resolution_due_at")
        }
        | {"open_seconds": (now - r["opened_at"]).total_seconds()}
        for r in _rows(con, _OPEN, [now])
    ]
    opened = con.execute(
        "SELECT count(*) FROM incidents WHERE opened_at >= ? AND opened_at < ?", [start, now]
    ).fetchone()
    # Every incident ever opened: an open breach can belong to one opened long ago.
    judged = breaches(con, NAIVE_EPOCH, now + timedelta(microseconds=1), now)
    open_breaches = [b for b in judged["items"] if b["open"]]
    by = Counter(i["severity"] for i in items)
    urgent = sum(by[s] for s in URGENT_INCIDENTS)
    if items:
        counts = ", ".join(f"{n} {sev}" for sev, n in sorted(by.items()))
        summary = f"{_plural(len(items), 'open incident')} ({counts})"
    else:
        summary = "no open incident"
    summary += f", {opened[0] if opened else 0} opened in the window; "
    summary += f"{_plural(len(open_breaches), 'open SLA breach', 'open SLA breaches')}"
    return _section(
        bool(open_breaches) or urgent > 0,
        summary,
        open=items[:LIST_MAX],
        open_total=len(items),
        opened_in_window=opened[0] if opened else 0,
        open_breaches=open_breaches[:LIST_MAX],
    )


# -- capacity ----------------------------------------------------------------------------------


def _capacity(con: duckdb.DuckDBPyConnection, now: datetime, start: datetime) -> dict[str, Any]:
    runs = sustained(con, start, now)
    members = {(r["cluster"], r["scope"], r["nodepool"], r["node"], r["resource"]) for r in runs}
    if runs:
        summary = (
            f"{_plural(len(runs), 'run')} above {_HOT} % CPU or memory for {_RUN} or more "
            f"({_plural(len(members), 'member')}: "
            + ", ".join(sorted({_member(r) for r in runs}))
            + ")"
        )
    else:
        summary = f"no CPU or memory above {_HOT} % for {_RUN} or more"
    return _section(bool(runs), summary, sustained=runs[:LIST_MAX])


def _member(run: dict[str, Any]) -> str:
    name = run["node"] or run["nodepool"] or run["cluster"]
    return f"{run['scope']} {name} {run['resource']}"


# -- projections -------------------------------------------------------------------------------


def _projections(con: duckdb.DuckDBPyConnection, start: datetime) -> dict[str, Any] | None:
    """The read model's health; None (no section) while every event applied and none fails."""
    counts = poisoned_counts(con)
    # Only events skipped in the window need attention: one skipped long ago, and looked at
    # since, would otherwise keep every later digest at `attention` until a rebuild.
    recent = [
        {"projection": name, **ev.as_dict()}
        for name, events in sorted(poisoned_events(con, since=start).items())
        for ev in events
    ]
    failing = [
        {"projection": name, **err.as_dict()} for name, err in sorted(last_errors(con).items())
    ]
    total = sum(counts.values())
    if not total and not failing:
        return None
    if recent:
        by = Counter(i["projection"] for i in recent)
        summary = (
            f"{_plural(len(recent), 'event')} skipped as poisoned in the window ("
            + ", ".join(f"{name} {n}" for name, n in sorted(by.items()))
            + f"), {total} in all"
        )
    elif total:
        summary = f"no event skipped in the window ({total} skipped before)"
    else:
        summary = "every event applied"
    if failing:
        summary += "; failing: " + ", ".join(
            f"{f['projection']} ({f['stage']}: {f['error_type']})" for f in failing
        )
    return _section(
        bool(recent or failing),
        summary,
        poisoned=recent[:LIST_MAX],
        poisoned_in_window=len(recent),
        poisoned_total=total,
        failing=failing,
    )


def digest(
    con: duckdb.DuckDBPyConnection, now: datetime, since: timedelta, max_status_age: timedelta
) -> dict[str, Any]:
    """Every section as of `now` (naive UTC), with `since` as the window of what is new."""
    start = now - since
    sections = {
        "nodes": _nodes(con, now, max_status_age),
        "pods": _pods(con, now, start, max_status_age),
        "storage": _storage(con, now, max_status_age),
        "findings": _findings(con, now, start),
        "incidents": _incidents(con, now, start),
        "capacity": _capacity(con, now, start),
    }
    health = _projections(con, start)
    if health is not None:
        sections["projections"] = health
    attention = [name for name, s in sections.items() if s["status"] == "attention"]
    return {
        "as_of": naive_iso(now),
        "since": naive_iso(start),
        "window_seconds": since.total_seconds(),
        "status": "attention" if attention else "ok",
        "summary": f"attention: {', '.join(attention)}"
        if attention
        else "ok: nothing needs attention",
        "sections": sections,
    }


# -- Markdown ----------------------------------------------------------------------------------

TITLES: Final = {
    "nodes": "Nodes",
    "pods": "Pods",
    "storage": "Storage",
    "findings": "Security findings",
    "incidents": "Incidents and SLA",
    "capacity": "CPU and memory",
    "projections": "Read model",
}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    return " ".join(str(value).split()).replace("|", "\\|")


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return [*out, ""]


def _pct(ratio: float | None) -> str:
    return "" if ratio is None else f"{ratio * 100:.1f} %"


#: (section, list, heading, {column: item key}) of the tables after the summary.
TABLES: Final = (
    (
        "nodes",
        "not_ready",
        "NotReady nodes",
        {
            "cluster": "cluster",
            "node": "node",
            "node pool": "nodepool",
            "NotReady since": "not_ready_since",
            "reason": "reason",
        },
    ),
    (
        "pods",
        "not_running",
        "Pods not running",
        {
            "cluster": "cluster",
            "namespace": "namespace",
            "pod": "pod",
            "phase": "phase",
            "reason": "reason",
            "restarts": "restarts",
            "since": "status_at",
        },
    ),
    (
        "pods",
        "top_restarts",
        "Most restarts in the window",
        {
            "cluster": "cluster",
            "namespace": "namespace",
            "pod": "pod",
            "in window": "restarts_in_window",
            "total": "restarts",
            "reason": "reason",
        },
    ),
    (
        "storage",
        "pvcs",
        f"PVCs over {round(STORAGE_ALERT * 100)} %",
        {
            "cluster": "cluster",
            "namespace": "namespace",
            "PVC": "pvc",
            "used": "used_ratio",
            "status": "status",
            "90 % on": "eta_90",
        },
    ),
    (
        "findings",
        "new",
        "New CRITICAL and HIGH findings",
        {
            "severity": "severity",
            "status": "status",
            "provider": "provider",
            "title": "title",
            "resource": "resource",
            "first seen": "first_seen",
        },
    ),
    (
        "incidents",
        "open",
        "Open incidents",
        {
            "incident": "incident_id",
            "severity": "severity",
            "status": "status",
            "cluster": "cluster",
            "opened": "opened_at",
            "title": "title",
        },
    ),
    (
        "incidents",
        "open_breaches",
        "Open SLA breaches",
        {
            "incident": "incident_id",
            "severity": "severity",
            "kind": "kind",
            "due": "due_at",
            "overrun": "overrun_seconds",
        },
    ),
    (
        "capacity",
        "sustained",
        f"Above {_HOT} % for an hour or more",
        {
            "cluster": "cluster",
            "scope": "scope",
            "member": "member",
            "resource": "resource",
            "from": "start",
            "to": "end",
            "avg": "utilization_avg",
            "max": "utilization_max",
        },
    ),
)
#: The projections section's tables: after the others, and only when it is there.
PROJECTION_TABLES: Final = (
    (
        "projections",
        "poisoned",
        "Events skipped as poisoned",
        {
            "projection": "projection",
            "position": "position",
            "type": "type",
            "id": "id",
            "error type": "error_type",
            "error": "error",
        },
    ),
    (
        "projections",
        "failing",
        "Failing projections",
        {
            "projection": "projection",
            "stage": "stage",
            "last failed": "at",
            "error type": "error_type",
            "error": "error",
        },
    ),
)
_RATIOS: Final = frozenset({"used_ratio", "utilization_avg", "utilization_max"})


def column_value(item: dict[str, Any], key: str) -> Any:
    """An item's value for a column of TABLES, formatted where a raw number would mislead."""
    if key == "member":
        return item["node"] or item["nodepool"] or item["cluster"]
    if key in _RATIOS:
        return _pct(item[key])
    if key == "overrun_seconds":
        return _hours(timedelta(seconds=item[key]))
    return item[key]


def render_markdown(body: dict[str, Any]) -> str:
    """The digest as Markdown: the summary table, then a table per non-empty list."""
    sections = body["sections"]
    window = _hours(timedelta(seconds=body["window_seconds"]))
    lines = [
        f"# opsledger digest: {body['status']}",
        "",
        f"As of {body['as_of']}; new since {body['since']} ({window}).",
        "",
        *_table(
            ["section", "status", "summary"],
            [(TITLES[k], v["status"], v["summary"]) for k, v in sections.items()],
        ),
    ]
    for section, key, heading, columns in (*TABLES, *PROJECTION_TABLES):
        items = sections.get(section, {}).get(key)
        if items:
            lines += [f"## {heading}", ""]
            lines += _table(
                list(columns), [[column_value(i, k) for k in columns.values()] for i in items]
            )
    return "\n".join(lines).rstrip() + "\n"
