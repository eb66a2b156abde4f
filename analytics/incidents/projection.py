"""Incidents: lifecycle facts folded per incident, judged against the SLA policy in force."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import duckdb
import orjson

from analytics.incidents.sla import PolicyHistory, resolution_target, response_target
from store.event_types import INCIDENT_PREFIX, EventType
from store.incident_state import KINDS, Fact, IncidentState, fold
from store.ledger import RecordedEvent
from store.timefmt import us_to_naive

INCIDENT_TYPES: Final = tuple(f"{INCIDENT_PREFIX}{k}" for k in KINDS)

_DDL: Final = (
    """CREATE TABLE IF NOT EXISTS inc_events (
        incident_id VARCHAR, kind VARCHAR, t BIGINT, cluster VARCHAR, version INTEGER,
        position BIGINT, source VARCHAR, data VARCHAR)""",
    "CREATE TABLE IF NOT EXISTS sla_policies (t BIGINT, position BIGINT, doc VARCHAR)",
    # One row per incident whose opening is known; times are UTC, durations in seconds. No
    # primary key: _rejudge deletes and re-inserts a changed incident's row in one transaction.
    """CREATE TABLE IF NOT EXISTS incidents (
        incident_id VARCHAR, title VARCHAR, severity VARCHAR, severity_max VARCHAR,
        cluster VARCHAR, namespace VARCHAR, service VARCHAR, status VARCHAR,
        opened_at TIMESTAMP, acknowledged_at TIMESTAMP, mitigated_at TIMESTAMP,
        resolved_at TIMESTAMP, reopens INTEGER, postmortem_url VARCHAR,
        last_event_at TIMESTAMP, version INTEGER,
        mtta_s DOUBLE, mttm_s DOUBLE, mttr_s DOUBLE,
        response_severity VARCHAR, response_target VARCHAR, response_due_at TIMESTAMP,
        resolution_severity VARCHAR, resolution_target VARCHAR, resolution_due_at TIMESTAMP)""",
)
_COLUMNS: Final = 25


class IncidentProjection:
    """Incident lifecycle events and SLA policies → one judged row per incident."""

    name = "incidents"
    version = 1
    types: tuple[str, ...] = (*INCIDENT_TYPES, EventType.SLA_POLICY_SET)
    batch_events = 2000

    def create(self, con: duckdb.DuckDBPyConnection) -> None:
        """Create the incident tables."""
        for ddl in _DDL:
            con.execute(ddl)

    def drop(self, con: duckdb.DuckDBPyConnection) -> None:
        """Drop the incident tables."""
        for table in ("incidents", "sla_policies", "inc_events"):
            con.execute(f"DROP TABLE IF EXISTS {table}")

    def apply(self, con: duckdb.DuckDBPyConnection, events: Sequence[RecordedEvent]) -> None:
        """Record the facts, then re-judge every incident they touch."""
        facts, policies, touched = [], [], set()
        for ev in events:
            data = dict(ev.data or {})
            if ev.type == EventType.SLA_POLICY_SET:
                policies.append((ev.time_us, ev.position, orjson.dumps(data).decode()))
                continue
            kind = ev.type.removeprefix(INCIDENT_PREFIX)
            incident_id = str(data["incident_id"])
            touched.add(incident_id)
            facts.append(
                (
                    incident_id,
                    kind,
                    ev.time_us,
                    ev.cluster,
                    ev.stream_version,
                    ev.position,
                    ev.source,
                    orjson.dumps(data).decode(),
                )
            )
        if facts:
            con.executemany("INSERT INTO inc_events VALUES (?, ?, ?, ?, ?, ?, ?, ?)", facts)
        if policies:
            con.executemany("INSERT INTO sla_policies VALUES (?, ?, ?)", policies)
            # A policy may arrive after the incidents it governs: judge them all again.
            touched = {
                r[0] for r in con.execute("SELECT DISTINCT incident_id FROM inc_events").fetchall()
            }
        if touched:
            _rejudge(con, sorted(touched))


def _rejudge(con: duckdb.DuckDBPyConnection, ids: list[str]) -> None:
    history = PolicyHistory(
        [
            (int(t), int(p), orjson.loads(doc))
            for t, p, doc in con.execute("SELECT t, position, doc FROM sla_policies").fetchall()
        ]
    )
    con.execute("CREATE OR REPLACE TEMP TABLE _inc_ids (incident_id VARCHAR)")
    con.executemany("INSERT INTO _inc_ids VALUES (?)", [(i,) for i in ids])
    rows = con.execute(
        "SELECT incident_id, kind, t, cluster, version, data FROM inc_events "
        "WHERE incident_id IN (SELECT incident_id FROM _inc_ids)"
    ).fetchall()
    con.execute("DELETE FROM incidents WHERE incident_id IN (SELECT incident_id FROM _inc_ids)")
    con.execute("DROP TABLE _inc_ids")
    out = _judge(rows, history)
    if out:
        marks = ", ".join(["?"] * _COLUMNS)
        con.executemany(f"INSERT INTO incidents VALUES ({marks})", out)


def _judge(rows: Sequence[tuple[Any, ...]], history: PolicyHistory) -> list[tuple[Any, ...]]:
    """One incidents-table row per incident whose opening is among the inc_events rows."""
    by_id: dict[str, list[Fact]] = {}
    for incident_id, kind, t, cluster, version, data in rows:
        by_id.setdefault(incident_id, []).append(
            Fact(kind, int(t), orjson.loads(data), cluster, int(version or 0))
        )
    out = []
    for incident_id, facts in by_id.items():
        st = fold(incident_id, facts)
        if st.opened_us is not None:
            out.append(_row(st, history))
    return out


#: The incidents table's definition, for a copy judged as of a past instant.
INCIDENTS_DDL: Final = _DDL[2]


def judged_as_of(con: duckdb.DuckDBPyConnection, until_us: int) -> list[tuple[Any, ...]]:
    """Rows of the incidents table as the facts and policies timed before `until_us` judge them.

    The projection's table folds every fact recorded so far; this leaves out what happened at
    or after `until_us` (a later acknowledgement, resolution or policy), so a past period is
    judged as it stood when it ended. Rows are in incident id order.
    """
    history = PolicyHistory(
        [
            (int(t), int(p), orjson.loads(doc))
            for t, p, doc in con.execute(
                "SELECT t, position, doc FROM sla_policies WHERE t < ?", [until_us]
            ).fetchall()
        ]
    )
    rows = con.execute(
        "SELECT incident_id, kind, t, cluster, version, data FROM inc_events WHERE t < ? "
        "ORDER BY incident_id, position",
        [until_us],
    ).fetchall()
    return sorted(_judge(rows, history), key=lambda r: str(r[0]))


def _row(st: IncidentState, history: PolicyHistory) -> tuple[Any, ...]:
    assert st.opened_us is not None
    policy = history.at(st.opened_us)
    resp = response_target(st, policy)
    reso = resolution_target(st, policy)

    def since_open(t: int | None) -> float | None:
        return None if t is None or st.opened_us is None else (t - st.opened_us) / 1e6

    return (
        st.incident_id,
        st.title,
        st.severity,
        st.severity_max,
        st.cluster,
        st.namespace,
        st.service,
        st.status,
        _ts(st.opened_us),
        _ts(st.acknowledged_us),
        _ts(st.mitigated_us),
        _ts(st.resolved_us),
        st.reopens,
        st.postmortem_url,
        _ts(st.last_us),
        st.version,
        since_open(st.acknowledged_us),
        since_open(st.mitigated_us),
        since_open(st.resolved_us),
        resp.severity if resp else None,
        resp.target if resp else None,
        _ts(resp.due_us) if resp else None,
        reso.severity if reso else None,
        reso.target if reso else None,
        _ts(reso.due_us) if reso else None,
    )


def _ts(us: int | None) -> datetime | None:
    """Microseconds as a naive UTC datetime, which DuckDB stores as TIMESTAMP."""
    return None if us is None else us_to_naive(us)
