"""Post-mortem context: what a cluster did in a time window, in time order, and as Markdown."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import duckdb

from analytics.capacity.hotspots import sustained
from store.timefmt import (
    TimeFormatError,
    format_us,
    naive_iso,
    naive_to_us,
    parse_rfc3339_us,
    to_naive_utc,
)

KINDS: Final = (
    "k8s_warning",
    "node_not_ready",
    "node_ready",
    "pod_restart",
    "crash_loop",
    "oom_killed",
    "finding",
    "sustained",
)
#: Runs are looked for this far outside the window, so one that overlaps it is seen whole.
SUSTAINED_PAD: Final = timedelta(days=1)
#: An OOM kill event on a node and a pod's OOMKilled status this close are the same kill.
OOM_MATCH: Final = timedelta(minutes=5)
SUMMARY_MAX: Final = 240
_OOM_REASONS: Final = frozenset({"OOMKilling", "OOMKilled", "SystemOOM"})
_POD_KINDS: Final = {"CrashLoopBackOff": "crash_loop", "OOMKilled": "oom_killed"}


@dataclass
class _Entry:
    us: int
    kind: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "t": format_us(self.us),
            "kind": self.kind,
            "summary": self.summary,
            "details": self.details,
        }


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    cur = con.execute(sql, list(params))
    names = [d[0] for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def one_line(text: str, limit: int = SUMMARY_MAX) -> str:
    """Whitespace (newlines included) collapsed to single spaces, cut to `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{mins}m" if mins else ""]
    return "".join(parts) or f"{round(seconds)}s"


# -- Kubernetes Warning events -----------------------------------------------------------------

# One row per Event object (metadata.uid; else its namespace/name): its latest observation in
# the window, which carries the running count.
_WARNINGS: Final = """
SELECT * EXCLUDE (rn) FROM (
    SELECT *, row_number() OVER (
        PARTITION BY coalesce(event_uid, event_namespace || '/' || event_name,
                              CAST(position AS VARCHAR))
        ORDER BY ts DESC, position DESC) AS rn
    FROM k8s_events
    WHERE cluster = ? AND type = 'Warning' AND ts >= ? AND ts < ? {ns}
) WHERE rn = 1
"""


def _k8s_kind(reason: str | None, message: str | None) -> str:
    if reason in _OOM_REASONS:
        return "oom_killed"
    restarting = reason == "BackOff" and "restarting failed container" in (message or "").lower()
    if reason == "CrashLoopBackOff" or restarting:
        return "crash_loop"
    return "k8s_warning"


def _warnings(
    con: duckdb.DuckDBPyConnection, cluster: str, namespace: str | None, lo: datetime, hi: datetime
) -> list[_Entry]:
    params: list[Any] = [cluster, lo, hi]
    ns = ""
    if namespace is not None:
        # Events about cluster-scoped objects (nodes) carry no namespace and stay in.
        ns, params = "AND (namespace = ? OR namespace IS NULL)", [*params, namespace]
    out = []
    for r in _rows(con, _WARNINGS.format(ns=ns), params):
        obj = f"{r['kind'] or 'object'} {r['namespace'] + '/' if r['namespace'] else ''}"
        obj += r["name"] or "?"
        times = f" ×{r['count']}" if (r["count"] or 1) > 1 else ""
        text = f"{r['reason'] or 'Warning'} on {obj}{times}"
        if r["message"]:
            text += f": {r['message']}"
        details = {
            "source": "k8s_event",
            "namespace": r["namespace"],
            "object_kind": r["kind"],
            "object_name": r["name"],
            "reason": r["reason"],
            "message": r["message"],
            "count": r["count"],
            "first_timestamp": naive_iso(r["first_timestamp"]),
            "last_timestamp": naive_iso(r["last_timestamp"]),
            "event_time": naive_iso(r["event_time"]),
            "component": r["component"],
            "host": r["host"],
            "event_uid": r["event_uid"],
            "position": r["position"],
        }
        out.append(
            _Entry(
                naive_to_us(r["ts"]), _k8s_kind(r["reason"], r["message"]), one_line(text), details
            )
        )
    return out


# -- node readiness changes --------------------------------------------------------------------

# The previous status is the node's status just before in time (ledger position breaks ties),
# over its whole history, so a change is judged the same however the window is cut. A streak
# is a run of equal readiness; `previous_since` is when the streak a change ends began.
_NODES: Final = """
WITH a AS (
    SELECT *, lag(ready) OVER w AS previous_ready, lag(ts) OVER w AS previous_ts
    FROM node_status WHERE cluster = ? AND ts < ? AND ready IS NOT NULL
    WINDOW w AS (PARTITION BY node ORDER BY ts, position)
),
b AS (
    SELECT *, sum(CASE WHEN ready IS DISTINCT FROM previous_ready THEN 1 ELSE 0 END)
              OVER (PARTITION BY node ORDER BY ts, position) AS streak
    FROM a
),
c AS (SELECT *, min(ts) OVER (PARTITION BY node, streak) AS since FROM b),
d AS (
    SELECT *, lag(since) OVER (PARTITION BY node ORDER BY ts, position) AS previous_since
    FROM c
)
SELECT * FROM d
WHERE ts >= ? AND ((previous_ready IS NULL AND NOT ready)
                   OR (previous_ready IS NOT NULL AND ready <> previous_ready))
"""


def _nodes(
    con: duckdb.DuckDBPyConnection, cluster: str, lo: datetime, hi: datetime
) -> list[_Entry]:
    out = []
    for r in _rows(con, _NODES, [cluster, hi, lo]):
        where = ", ".join(x for x in (r["nodepool"], r["zone"]) if x)
        reason = f" ({r['reason']})" if r["reason"] else ""
        details = {
            "source": "node_status",
            "node": r["node"],
            "ready": r["ready"],
            "reason": r["reason"],
            "nodepool": r["nodepool"],
            "zone": r["zone"],
            "instance_type": r["instance_type"],
            "previous_ready": r["previous_ready"],
            "previous_at": naive_iso(r["previous_ts"]),
            "position": r["position"],
        }
        if r["ready"]:
            down = (r["ts"] - r["previous_since"]).total_seconds()
            details["not_ready_since"] = naive_iso(r["previous_since"])
            details["not_ready_seconds"] = down
            text = f"Node {r['node']} Ready again after {_duration(down)} NotReady{reason}"
            kind = "node_ready"
        else:
            text = f"Node {r['node']} NotReady{reason}"
            kind = "node_not_ready"
        if where:
            text += f" [{where}]"
        out.append(_Entry(naive_to_us(r["ts"]), kind, one_line(text), details))
    return out


# -- pod restarts, crash loops, OOM kills ------------------------------------------------------

_PODS: Final = """
WITH w AS (
    SELECT DISTINCT namespace, pod FROM pod_status
    WHERE cluster = ? AND ts >= ? AND ts < ? {ns}
),
h AS (
    SELECT p.*, lag(p.restarts) OVER v AS previous_restarts, lag(p.reason) OVER v AS previous_reason
    FROM pod_status p SEMI JOIN w ON p.namespace = w.namespace AND p.pod = w.pod
    WHERE p.cluster = ? AND p.ts < ?
    WINDOW v AS (PARTITION BY p.namespace, p.pod ORDER BY p.ts, p.position)
)
SELECT * FROM h
WHERE ts >= ? AND (restarts > coalesce(previous_restarts, 0)
                   OR (reason IN ('CrashLoopBackOff', 'OOMKilled')
                       AND reason IS DISTINCT FROM previous_reason))
"""


def _pods(
    con: duckdb.DuckDBPyConnection, cluster: str, namespace: str | None, lo: datetime, hi: datetime
) -> list[_Entry]:
    params: list[Any] = [cluster, lo, hi]
    ns = ""
    if namespace is not None:
        ns, params = "AND namespace = ?", [*params, namespace]
    out = []
    for r in _rows(con, _PODS.format(ns=ns), [*params, cluster, hi, lo]):
        kind = _POD_KINDS.get(r["reason"] or "", "pod_restart")
        before = r["previous_restarts"]
        label = "restarted" if kind == "pod_restart" else r["reason"]
        text = f"Pod {r['namespace']}/{r['pod']} {label}: restarts "
        # A pod's first status has no "before": its count is shown alone.
        grew = before is not None and (r["restarts"] or 0) > before
        text += f"{before} → {r['restarts']}" if grew else str(r["restarts"])
        if kind == "pod_restart" and r["reason"]:
            text += f" ({r['reason']})"
        if r["node"]:
            text += f" on {r['node']}"
        details = {
            "source": "pod_status",
            "namespace": r["namespace"],
            "pod": r["pod"],
            "phase": r["phase"],
            "reason": r["reason"],
            "restarts": r["restarts"],
            "previous_restarts": r["previous_restarts"],
            "node": r["node"],
            "owner": r["owner"],
            "position": r["position"],
        }
        out.append(_Entry(naive_to_us(r["ts"]), kind, one_line(text), details))
    return out


def _about(pod_fact: _Entry, event: Mapping[str, Any]) -> bool:
    """Whether a pod status entry concerns the pod, or sits on the node, a k8s event is about."""
    p = pod_fact.details
    if event["object_kind"] == "Pod":
        return (p["namespace"], p["pod"]) == (event["namespace"], event["object_name"])
    node = event["object_name"] if event["object_kind"] == "Node" else event["host"]
    return node is not None and p["node"] == node


def _fold_k8s_into_pods(entries: list[_Entry]) -> list[_Entry]:
    """Drop a k8s crash-loop or OOM event already told by a pod status; keep it in its details.

    A BackOff event joins the pod's first CrashLoopBackOff status in the window; an OOM event
    joins the nearest OOMKilled status of that pod (or on that node) within OOM_MATCH.
    Unmatched events stay entries of their own.
    """
    pod_facts = [e for e in entries if e.details.get("source") == "pod_status"]
    window = OOM_MATCH // timedelta(microseconds=1)
    kept = []
    for e in entries:
        d = e.details
        target: _Entry | None = None
        if d.get("source") == "k8s_event" and e.kind == "crash_loop" and d["object_kind"] == "Pod":
            same = [p for p in pod_facts if p.kind == "crash_loop" and _about(p, d)]
            target = min(same, key=lambda p: p.us, default=None)
        elif d.get("source") == "k8s_event" and e.kind == "oom_killed":
            near = [
                p
                for p in pod_facts
                if p.kind == "oom_killed" and _about(p, d) and abs(p.us - e.us) <= window
            ]
            target = min(near, key=lambda p: (abs(p.us - e.us), p.us), default=None)
        if target is None:
            kept.append(e)
            continue
        keys = ("reason", "message", "count", "first_timestamp", "last_timestamp")
        folded = {k: d[k] for k in (*keys, "object_kind", "object_name", "position")}
        target.details.setdefault("k8s_events", []).append(folded)
    return kept


# -- findings ----------------------------------------------------------------------------------

# A finding is (provider, finding_id). Its first sighting is its earliest first_seen, told with
# what its first report said; a status change is a report whose status differs from the one
# before it in time.
_FINDINGS: Final = """
WITH h AS (
    SELECT *,
        lag(status) OVER w AS previous_status,
        row_number() OVER w AS seq,
        min(first_seen) OVER (PARTITION BY provider, finding_id) AS first_seen_min
    FROM findings
    WHERE (cluster = ? OR cluster IS NULL) {ns}
    WINDOW w AS (PARTITION BY provider, finding_id ORDER BY ts, position)
)
SELECT 'new' AS change, first_seen_min AS t, * FROM h
WHERE seq = 1 AND first_seen_min >= ? AND first_seen_min < ?
UNION ALL BY NAME
SELECT 'status' AS change, ts AS t, * FROM h
WHERE previous_status IS NOT NULL AND status <> previous_status AND ts >= ? AND ts < ?
"""


def _findings(
    con: duckdb.DuckDBPyConnection, cluster: str, namespace: str | None, lo: datetime, hi: datetime
) -> list[_Entry]:
    params: list[Any] = [cluster]
    ns = ""
    if namespace is not None:
        # Findings without a namespace are about the cluster (or account) and stay in.
        ns, params = "AND (namespace = ? OR namespace IS NULL)", [*params, namespace]
    out = []
    for r in _rows(con, _FINDINGS.format(ns=ns), [*params, lo, hi, lo, hi]):
        where = f" [{r['namespace']}]" if r["namespace"] else ""
        if r["change"] == "new":
            status = "" if r["status"] == "ACTIVE" else f" ({r['status']})"
            text = f"New {r['severity']} {r['provider']} finding{status}: {r['title']}{where}"
        else:
            text = (
                f"{r['provider']} {r['severity']} finding {r['previous_status']} → "
                f"{r['status']}: {r['title']}{where}"
            )
        details = {
            "source": "finding",
            "change": r["change"],
            "provider": r["provider"],
            "finding_id": r["finding_id"],
            "title": r["title"],
            "finding_type": r["finding_type"],
            "severity": r["severity"],
            "resource": r["resource"],
            "namespace": r["namespace"],
            "status": r["status"],
            "previous_status": r["previous_status"],
            "first_seen": naive_iso(r["first_seen_min"]),
            "last_seen": naive_iso(r["last_seen"]),
            "cluster": r["cluster"],
            "position": r["position"],
        }
        out.append(_Entry(naive_to_us(r["t"]), "finding", one_line(text), details))
    return out


# -- sustained capacity runs -------------------------------------------------------------------

_SCOPES: Final = {"cluster": "Cluster", "nodepool": "Node pool", "node": "Node"}


def _sustained(
    con: duckdb.DuckDBPyConnection, cluster: str, lo: datetime, hi: datetime
) -> list[_Entry]:
    out = []
    for run in sustained(con, lo - SUSTAINED_PAD, hi + SUSTAINED_PAD, cluster):
        start = parse_rfc3339_us(run["start"])
        end = parse_rfc3339_us(run["end"])
        # A run overlaps [lo, hi) when it starts before hi and its last hot sample is >= lo.
        if start >= naive_to_us(hi) or end < naive_to_us(lo):
            continue
        member = {"cluster": run["cluster"], "nodepool": run["nodepool"], "node": run["node"]}
        label = f"{_SCOPES.get(run['scope'], run['scope'])} {member.get(run['scope']) or ''}"
        resource = "CPU" if run["resource"] == "cpu" else str(run["resource"])
        text = (
            f"{label.strip()} {resource} > 85 % for {_duration(run['duration_seconds'])}, "
            f"{run['start'][:16].replace('T', ' ')} to {run['end'][:16].replace('T', ' ')} "
            f"(avg {run['utilization_avg'] * 100:.0f} %, max {run['utilization_max'] * 100:.0f} %)"
        )
        details = {"source": "capacity", **run}
        out.append(_Entry(max(start, naive_to_us(lo)), "sustained", one_line(text), details))
    return out


def context(
    con: duckdb.DuckDBPyConnection,
    *,
    cluster: str,
    namespace: str | None,
    start: datetime,
    end: datetime,
) -> list[dict[str, Any]]:
    """The cluster's context entries in [start, end), ordered by time, kind and summary.

    Naive datetimes are UTC. With `namespace`, namespaced facts of other namespaces are left
    out; nodes, capacity runs and facts without a namespace stay in.
    """
    lo, hi = to_naive_utc(start), to_naive_utc(end)
    if hi <= lo:
        return []
    entries = [
        *_warnings(con, cluster, namespace, lo, hi),
        *_nodes(con, cluster, lo, hi),
        *_pods(con, cluster, namespace, lo, hi),
        *_findings(con, cluster, namespace, lo, hi),
        *_sustained(con, cluster, lo, hi),
    ]
    entries = _fold_k8s_into_pods(entries)
    entries.sort(key=lambda e: (e.us, e.kind, e.summary, e.details.get("position") or 0))
    return [e.as_dict() for e in entries]


# -- Markdown ----------------------------------------------------------------------------------

LABELS: Final = {
    "incident": "Incident",
    "k8s_warning": "Warning event",
    "node_not_ready": "Node NotReady",
    "node_ready": "Node Ready",
    "pod_restart": "Pod restart",
    "crash_loop": "CrashLoopBackOff",
    "oom_killed": "OOMKilled",
    "finding": "Finding",
    "sustained": "Sustained > 85 %",
}
# Backslash-escaping any ASCII punctuation is valid CommonMark; these are the characters that
# could end a table cell or start markup (emphasis, code, links, HTML) inside one.
_MARKDOWN_SPECIAL: Final = re.compile(r"[\\`*_\[\]<|~&]")
_NEWLINES: Final = re.compile(r"\r\n|\r|\n")


def escape_cell(text: str) -> str:
    """Text safe inside a Markdown table cell: markup escaped, line breaks as <br>."""
    return _NEWLINES.sub("<br>", _MARKDOWN_SPECIAL.sub(r"\\\g<0>", text))


def _time_cell(value: Any) -> str:
    """A timestamp as `YYYY-MM-DD HH:MM:SS` in UTC; anything else escaped as text."""
    if isinstance(value, datetime):
        ts = value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
        return ts.strftime("%Y-%m-%d %H:%M:%S")
    try:
        return format_us(parse_rfc3339_us(str(value)))[:19].replace("T", " ")
    except TimeFormatError:
        return escape_cell(str(value))


def _incident_line(incident: Mapping[str, Any]) -> str:
    head = f"Incident **{escape_cell(str(incident.get('incident_id', '?')))}**"
    if incident.get("title"):
        head += f": {escape_cell(str(incident['title']))}"
    facts = [
        f"{name} {_time_cell(value) + ' UTC' if key.endswith('_at') else escape_cell(str(value))}"
        for key, name in (
            ("severity", "severity"),
            ("status", "status"),
            ("cluster", "cluster"),
            ("namespace", "namespace"),
            ("service", "service"),
            ("opened_at", "opened at"),
            ("resolved_at", "resolved at"),
        )
        if (value := incident.get(key)) is not None
    ]
    return head + (" — " + ", ".join(facts) if facts else "")


def render_markdown(incident: Mapping[str, Any], entries: Iterable[Mapping[str, Any]]) -> str:
    """A "## Timeline" section for a post-mortem: the incident, then one table row per entry."""
    lines = ["## Timeline", "", _incident_line(incident), ""]
    rows = [
        f"| {_time_cell(e.get('t', ''))} | "
        f"{escape_cell(LABELS.get(str(e.get('kind')), str(e.get('kind', '')).replace('_', ' ')))}"
        f" | {escape_cell(str(e.get('summary', '')))} |"
        for e in entries
    ]
    if rows:
        lines += ["| time (UTC) | what | details |", "|---|---|---|", *rows]
    else:
        lines.append("_Nothing recorded in this window._")
    return "\n".join(lines) + "\n"
