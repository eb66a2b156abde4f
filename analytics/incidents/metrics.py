"""MTTA / MTTM / MTTR per group, and SLA breaches, over incidents opened in a window."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import duckdb

from store.incident_state import SEVERITIES
from store.timefmt import naive_iso

#: Grouping keys and the column each reads; severity is the most severe level ever held.
GROUPS: Final = {
    "severity": "severity_max",
    "month": "strftime(opened_at, '%Y-%m')",
    "cluster": "cluster",
    "namespace": "namespace",
    "service": "service",
}
_FIGURES: Final = (("mtta", "mtta_s"), ("mttm", "mttm_s"), ("mttr", "mttr_s"))


def metrics(
    con: duckdb.DuckDBPyConnection, start: datetime, end: datetime, group_by: Sequence[str]
) -> list[dict[str, Any]]:
    """Count, and mean / median / p90 / missing of each figure, per group (seconds)."""
    keys = [GROUPS[g] for g in group_by]
    aggs = []
    for _, col in _FIGURES:
        aggs += [
            f"avg({col})",
            f"quantile_cont({col}, 0.5)",
            f"quantile_cont({col}, 0.9)",
            f"count(*) - count({col})",
        ]
    select = ", ".join([*keys, "count(*)", *aggs])
    group = f"GROUP BY {', '.join(keys)} ORDER BY {', '.join(f'{k} NULLS LAST' for k in keys)}"
    rows = con.execute(
        f"SELECT {select} FROM incidents WHERE opened_at >= ? AND opened_at < ? "
        + (group if keys else ""),
        [start, end],
    ).fetchall()
    out = []
    for r in rows:
        n = len(keys)
        if not keys and r[0] == 0:
            continue  # no incidents at all: no group rather than a group of zero
        group_out: dict[str, Any] = {
            "key": dict(zip(group_by, r[:n], strict=True)),
            "count": r[n],
        }
        for i, (figure, _) in enumerate(_FIGURES):
            mean, median, p90, missing = r[n + 1 + 4 * i : n + 5 + 4 * i]
            group_out[figure] = {"mean": mean, "median": median, "p90": p90, "missing": missing}
        out.append(group_out)
    return out


_BREACHES: Final = """
SELECT incident_id, '{kind}' AS kind, {kind}_severity, {kind}_due_at, {met} AS met_at
FROM incidents
WHERE opened_at >= ? AND opened_at < ? {severity}
  AND {kind}_due_at IS NOT NULL
  AND ({met} > {kind}_due_at OR ({met} IS NULL AND {kind}_due_at < ?))
"""


def breaches(
    con: duckdb.DuckDBPyConnection,
    start: datetime,
    end: datetime,
    now: datetime,
    severity: str | None = None,
) -> dict[str, Any]:
    """Per-severity summary and every response / resolution breach, judged as of `now`."""
    clause = "AND severity_max = ?" if severity else ""
    params: list[Any] = [start, end, *([severity] if severity else []), now]
    items = []
    for kind, met in (("response", "acknowledged_at"), ("resolution", "resolved_at")):
        sql = _BREACHES.format(kind=kind, met=met, severity=clause)
        for incident_id, k, sev, due, met_at in con.execute(sql, params).fetchall():
            overrun = ((met_at or now) - due).total_seconds()
            items.append(
                {
                    "incident_id": incident_id,
                    "severity": sev,
                    "kind": k,
                    "due_at": naive_iso(due),
                    "met_at": naive_iso(met_at),
                    "overrun_seconds": overrun,
                    "open": met_at is None,
                }
            )
    items.sort(key=lambda b: (b["due_at"], b["incident_id"], b["kind"]))
    sev_of = dict(
        con.execute(
            f"SELECT incident_id, severity_max FROM incidents "
            f"WHERE opened_at >= ? AND opened_at < ? {clause}",
            params[:-1],
        ).fetchall()
    )
    counts = Counter(sev_of.values())
    breached = {
        kind: Counter(sev_of[i] for i in {b["incident_id"] for b in items if b["kind"] == kind})
        for kind in ("response", "resolution")
    }
    summary = []
    for sev in [severity] if severity else SEVERITIES:
        n = counts[sev]
        resp = breached["response"][sev]
        reso = breached["resolution"][sev]
        summary.append(
            {
                "severity": sev,
                "incidents": n,
                "response_breaches": resp,
                "resolution_breaches": reso,
                "breach_rate": resp / n if n else None,
            }
        )
    return {"as_of": naive_iso(now), "summary": summary, "items": items}
