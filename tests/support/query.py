"""Read-only SQL (`POST /v1/query`): the limits the tests run with, a small post-mortem's facts,
and the app over them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from support.beds import Bed, make_bed
from support.payloads import (
    cloudevent,
    cost_daily,
    incident_milestone,
    k8s_event,
    metric_samples,
    node_status,
    pod_status,
)

LIMITS = {
    "query_snapshot_seconds": 0,
    "query_timeout_seconds": 2,
    "query_memory_limit": "256MB",
    "query_max_rows": 50,
    "query_max_result_bytes": 256 * 1024,
}


def opened(incident_id: str, severity: str, at: str, namespace: str) -> dict[str, Any]:
    data = {
        "incident_id": incident_id,
        "title": f"{namespace} errors",
        "severity": severity,
        "namespace": namespace,
        "service": f"{namespace}-api",
    }
    return cloudevent("opsledger.incident.opened", data, id=f"{incident_id}-opened", time=at)


def demo_events() -> list[dict[str, Any]]:
    """A small post-mortem's worth of facts: three incidents and what happened around them."""

    def step(kind: str, incident_id: str, at: str) -> dict[str, Any]:
        return incident_milestone(kind, f"{incident_id}-{kind}", incident_id=incident_id, time=at)

    return [
        opened("INC-1", "P1", "2026-10-14T03:12:00Z", "payments"),
        step("acknowledged", "INC-1", "2026-10-14T03:20:00Z"),
        step("mitigated", "INC-1", "2026-10-14T03:50:00Z"),
        step("resolved", "INC-1", "2026-10-14T05:12:00Z"),
        opened("INC-2", "P2", "2026-10-15T10:00:00Z", "search"),
        step("acknowledged", "INC-2", "2026-10-15T16:00:00Z"),
        opened("INC-3", "P0", "2026-10-16T22:00:00Z", "payments"),
        node_status("node-notready", ready=False, time="2026-10-14T03:05:00Z"),
        pod_status("pod-restarts", restarts=7, time="2026-10-14T03:10:00Z"),
        k8s_event("k8s-backoff", time="2026-10-14T03:11:00Z"),
        metric_samples("prom-1", time="2026-10-14T04:00:00Z"),
        cost_daily("cost-1"),
    ]


@contextmanager
def demo_bed(home: Path) -> Iterator[Bed]:
    """The app (query limits LIMITS, read model `rm.duckdb`) over the demo events, caught up."""
    with make_bed(home, read_model_path=home / "rm.duckdb", **LIMITS) as b:
        assert b.post_events(demo_events()).status_code == 200
        r = b.client.post("/v1/projections/catch-up", headers=b.headers("admin"))
        assert r.status_code == 200, r.text
        yield b


def ask(bed: Bed, sql: str, limit: int | None = None, scope: str = "query") -> httpx.Response:
    body: dict[str, Any] = {"query": sql}
    if limit is not None:
        body["limit"] = limit
    return bed.client.post("/v1/query", json=body, headers=bed.headers(scope))


def assert_alive(bed: Bed) -> None:
    """The service answers the next query and its probes, and the read model is whole."""
    r = ask(bed, "SELECT count(*) AS n FROM incidents")
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == [[3]]
    assert bed.client.get("/healthz").status_code == 200
    r = bed.client.get("/v1/incidents", headers=bed.headers("read"))
    assert r.status_code == 200 and r.json()["total"] == 3, r.text
