"""Reading incidents from the read model: lists, one incident, its lifecycle entries."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import duckdb
import orjson

from store.timefmt import format_us, naive_iso

#: Columns of `incidents` as the API shows them, in order.
FIELDS: Final = (
    "incident_id",
    "title",
    "severity",
    "severity_max",
    "cluster",
    "namespace",
    "service",
    "status",
    "opened_at",
    "acknowledged_at",
    "mitigated_at",
    "resolved_at",
    "reopens",
    "postmortem_url",
    "last_event_at",
    "version",
    "response_severity",
    "response_target",
    "response_due_at",
    "resolution_severity",
    "resolution_target",
    "resolution_due_at",
)


def _record(row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(FIELDS, row, strict=True))
    for k, v in out.items():
        if isinstance(v, datetime):
            out[k] = naive_iso(v)
    return out


def list_incidents(
    con: duckdb.DuckDBPyConnection,
    *,
    status: str | None = None,
    severity: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    cluster: str | None = None,
    namespace: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """Incidents opened in [start, end), newest first, and how many match in all."""
    where, params = _filters(status, severity, start, end, cluster, namespace)
    total = con.execute(f"SELECT count(*) FROM incidents {where}", params).fetchone()
    rows = con.execute(
        f"SELECT {', '.join(FIELDS)} FROM incidents {where} "
        "ORDER BY opened_at DESC, incident_id LIMIT ? OFFSET ?",
        [*params, limit, offset],
    ).fetchall()
    return [_record(r) for r in rows], int(total[0]) if total else 0


def _filters(
    status: str | None,
    severity: str | None,
    start: datetime | None,
    end: datetime | None,
    cluster: str | None,
    namespace: str | None,
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for clause, value in (
        ("status = ?", status),
        ("severity = ?", severity),
        ("opened_at >= ?", start),
        ("opened_at < ?", end),
        ("cluster = ?", cluster),
        ("namespace = ?", namespace),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def get_incident(con: duckdb.DuckDBPyConnection, incident_id: str) -> dict[str, Any] | None:
    """One incident with its lifecycle events, or None when its opening is unknown."""
    row = con.execute(
        f"SELECT {', '.join(FIELDS)} FROM incidents WHERE incident_id = ?", [incident_id]
    ).fetchone()
    if row is None:
        return None
    out = _record(row)
    out["events"] = lifecycle(con, incident_id)
    return out


def lifecycle(con: duckdb.DuckDBPyConnection, incident_id: str) -> list[dict[str, Any]]:
    """The incident's recorded facts in time order."""
    rows = con.execute(
        "SELECT kind, t, source, version, position, data FROM inc_events "
        "WHERE incident_id = ? ORDER BY t, position",
        [incident_id],
    ).fetchall()
    out = []
    for kind, t, source, version, position, data in rows:
        payload = orjson.loads(data)
        payload.pop("incident_id", None)
        out.append(
            {
                "t": format_us(int(t)),
                "kind": kind,
                "source": source,
                "version": version,
                "position": position,
                "data": payload,
            }
        )
    return out


def lifecycle_entries(con: duckdb.DuckDBPyConnection, incident_id: str) -> list[dict[str, Any]]:
    """The incident's facts as timeline entries (kind `incident`)."""
    out = []
    for ev in lifecycle(con, incident_id):
        d = ev["data"]
        what = ev["kind"].replace("_", " ")
        if ev["kind"] == "opened":
            summary = f"opened {d.get('severity')}: {d.get('title')}"
        elif ev["kind"] == "severity_changed":
            summary = f"severity changed to {d.get('severity')}"
        elif ev["kind"] == "annotated":
            summary = f"note: {d.get('note')}"
        elif ev["kind"] == "postmortem_linked":
            summary = f"post-mortem linked: {d.get('url')}"
        else:
            summary = what + (f" by {d['by']}" if d.get("by") else "")
        out.append({"t": ev["t"], "kind": "incident", "summary": summary, "details": ev})
    return out


def policy_in_force(
    con: duckdb.DuckDBPyConnection, at_us: int
) -> tuple[dict[str, Any], int | None, int | None]:
    """The SLA policy document in force at `at_us` with its start and position ({} = defaults)."""
    row = con.execute(
        "SELECT doc, t, position FROM sla_policies WHERE t <= ? ORDER BY t DESC, position DESC "
        "LIMIT 1",
        [at_us],
    ).fetchone()
    if row is None:
        return {}, None, None
    return orjson.loads(row[0]), int(row[1]), int(row[2])
