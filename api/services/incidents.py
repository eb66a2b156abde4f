"""Incident reads the API and the CLI share: an incident's state, and its post-mortem timeline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from analytics.incidents import reads as incident_reads
from analytics.incidents import timeline
from ingest.incidents import IncidentNotFound
from store.incident_state import IncidentState
from store.timefmt import (
    datetime_to_us,
    duration_seconds,
    format_us,
    parse_rfc3339_us,
    us_to_naive,
)

#: The most context a timeline takes on either side.
SPAN_MAX = timedelta(days=7)


def state_body(st: IncidentState) -> dict[str, Any]:
    """An incident's folded state as the API shows it."""

    def t(us: int | None) -> str | None:
        return None if us is None else format_us(us)

    return {
        "incident_id": st.incident_id,
        "title": st.title,
        "severity": st.severity,
        "severity_max": st.severity_max,
        "cluster": st.cluster,
        "namespace": st.namespace,
        "service": st.service,
        "status": st.status,
        "opened_at": t(st.opened_us),
        "acknowledged_at": t(st.acknowledged_us),
        "mitigated_at": t(st.mitigated_us),
        "resolved_at": t(st.resolved_us),
        "reopens": st.reopens,
        "postmortem_url": st.postmortem_url,
        "version": st.version,
    }


def parse_span(value: str) -> timedelta:
    """A timeline's context like 30m, 2h or 1d, at most 7d (ValueError saying why)."""
    try:
        span = timedelta(seconds=duration_seconds(value, "smhd", digits=7))
    except ValueError:
        raise ValueError("must be a duration like 30m, 2h or 1d") from None
    if span > SPAN_MAX:
        raise ValueError("must be at most 7d")
    return span


def build_timeline(
    con: duckdb.DuckDBPyConnection, incident_id: str, before: timedelta, after: timedelta
) -> dict[str, Any]:
    """The incident and its merged, time-ordered timeline entries."""
    found = incident_reads.get_incident(con, incident_id)
    if found is None:
        raise IncidentNotFound(f"no incident {incident_id!r} in the read model")
    found.pop("events")
    closed_us = (
        parse_rfc3339_us(found["resolved_at"])
        if found["resolved_at"]
        else datetime_to_us(datetime.now(UTC))
    )
    start_us = parse_rfc3339_us(found["opened_at"]) - int(before.total_seconds() * 1e6)
    end_us = closed_us + int(after.total_seconds() * 1e6)
    entries = incident_reads.lifecycle_entries(con, incident_id)
    entries += timeline.context(
        con,
        cluster=found["cluster"],
        namespace=found["namespace"],
        start=us_to_naive(start_us),
        end=us_to_naive(end_us),
    )
    entries.sort(
        key=lambda e: (parse_rfc3339_us(e["t"]), e["kind"] != "incident", e["kind"], e["summary"])
    )
    return {
        "incident": found,
        "from": format_us(start_us),
        "to": format_us(end_us),
        "entries": entries,
    }
