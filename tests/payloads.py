"""Builders of valid v1 CloudEvents and a real API test bed (SQLite file, migrated, real keys)."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from store.keys import SCOPES, create_key
from store.ledger import Ledger
from store.migrate import upgrade
from store.schema import events
from store.settings import Settings

CLUSTER = "prod-eks-1"
SOURCE = "//opsledger.test/collector"
NODE = "ip-10-0-12-34.us-gov-west-1.compute.internal"


def cloudevent(
    event_type: str,
    data: Any,
    *,
    id: str,
    time: str = "2026-10-14T04:00:00Z",
    source: str = SOURCE,
    cluster: str | None = CLUSTER,
    **extra: Any,
) -> dict[str, Any]:
    """A structured-mode CloudEvent with the contract's required attributes."""
    ev: dict[str, Any] = {
        "specversion": "1.0",
        "id": id,
        "source": source,
        "type": event_type,
        "time": time,
        "data": data,
    }
    if cluster is not None:
        ev["cluster"] = cluster
    ev.update(extra)
    return ev


def incident_opened(
    id: str = "inc-1-opened", incident_id: str = "INC-1", severity: str = "P1", **kw: Any
) -> dict[str, Any]:
    """An `opsledger.incident.opened` event."""
    data = {"incident_id": incident_id, "title": "checkout 5xx above 2%", "severity": severity}
    return cloudevent("opsledger.incident.opened", data, id=id, **kw)


def incident_milestone(
    kind: str, id: str, incident_id: str = "INC-1", by: str | None = "alice", **kw: Any
) -> dict[str, Any]:
    """An incident `acknowledged` / `mitigated` / `resolved` / `reopened` event."""
    data: dict[str, Any] = {"incident_id": incident_id}
    if by is not None:
        data["by"] = by
    kw.setdefault("cluster", None)
    return cloudevent(f"opsledger.incident.{kind}", data, id=id, **kw)


def pod_status(id: str = "pod-1", restarts: Any = 3, **kw: Any) -> dict[str, Any]:
    """An `opsledger.k8s.pod.status` event."""
    data = {
        "namespace": "payments",
        "pod": "api-7d9f-abcde",
        "phase": "Running",
        "restarts": restarts,
        "node": NODE,
    }
    return cloudevent("opsledger.k8s.pod.status", data, id=id, **kw)


def node_status(
    id: str = "node-1", ready: Any = True, pods: Any = 110, **kw: Any
) -> dict[str, Any]:
    """An `opsledger.k8s.node.status` event."""
    data = {
        "node": NODE,
        "ready": ready,
        "nodepool": "general-purpose",
        "zone": "us-gov-west-1a",
        "allocatable": {"cpu_cores": 3.92, "memory_bytes": 15_944_000_000, "pods": pods},
    }
    return cloudevent("opsledger.k8s.node.status", data, id=id, **kw)


def k8s_event(id: str = "k8s-1", **kw: Any) -> dict[str, Any]:
    """An `opsledger.k8s.event` carrying a core/v1 Event as the API returns it."""
    data = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "api-7d9f-abcde.17f9a3", "namespace": "payments"},
        "involvedObject": {"kind": "Pod", "name": "api-7d9f-abcde", "namespace": "payments"},
        "reason": "BackOff",
        "message": "Back-off restarting failed container",
        "type": "Warning",
        "count": 4,
    }
    return cloudevent("opsledger.k8s.event", data, id=id, **kw)


def cost_daily(id: str = "cost-1", amount: Any = 123.45, **kw: Any) -> dict[str, Any]:
    """An `opsledger.cost.daily` event (not cluster-scoped)."""
    data = {"date": "2026-10-13", "service": "Amazon EKS", "amount": amount, "currency": "USD"}
    kw.setdefault("cluster", None)
    return cloudevent("opsledger.cost.daily", data, id=id, **kw)


def sample(name: str, labels: dict[str, str], ts: Any, value: Any) -> dict[str, Any]:
    """One metric sample."""
    return {"name": name, "labels": labels, "ts": ts, "value": value}


def metric_samples(id: str = "prom-1", samples: list[dict[str, Any]] | None = None, **kw: Any):
    """An `opsledger.metric.samples` event (two series, three samples by default)."""
    if samples is None:
        labels = {"node": NODE, "nodepool": "general-purpose", "zone": "us-gov-west-1a"}
        pvc = {"namespace": "payments", "persistentvolumeclaim": "data-postgres-0"}
        samples = [
            sample("node_cpu_usage_cores", labels, "2026-10-14T04:00:00Z", 5.42),
            sample("node_cpu_usage_cores", labels, "2026-10-14T04:01:00Z", 5.5),
            sample("pvc_used_bytes", pvc, 1760414400, 81604378624),
        ]
    return cloudevent("opsledger.metric.samples", {"samples": samples}, id=id, **kw)


def seed_events() -> list[dict[str, Any]]:
    """A few valid events of different types, to make 'the ledger is unchanged' meaningful."""
    return [
        incident_opened("seed-inc-opened", incident_id="INC-SEED", time="2026-10-01T00:00:00Z"),
        pod_status("seed-pod", time="2026-10-01T00:05:00Z"),
        metric_samples("seed-prom", time="2026-10-01T00:10:00Z"),
    ]


def deep(levels: int) -> Any:
    """A JSON value nested `levels` objects deep."""
    value: Any = "leaf"
    for _ in range(levels):
        value = {"a": value}
    return value


def clone(ev: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of an event, to edit freely."""
    return copy.deepcopy(ev)


def http_routes(app: FastAPI) -> list[Any]:
    """Every HTTP route of the app with `path`, `methods` and (API routes) `dependant`.

    FastAPI >= 0.13x keeps included routers unflattened in `app.routes`; walk them when so.
    """
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: app.routes is already flat
        routes: list[Any] = list(app.routes)
    else:
        routes = list(iter_route_contexts(app.routes))
    return [r for r in routes if getattr(r, "methods", None) and getattr(r, "path", None)]


@dataclass
class Bed:
    """A migrated SQLite ledger file, the app over it, a client and one key per scope."""

    app: FastAPI
    client: TestClient
    ledger: Ledger
    url: str
    db_path: Path
    tokens: dict[str, str]

    def headers(self, scope: str = "write", content_type: str | None = None) -> dict[str, str]:
        """Authorization (and optionally Content-Type) headers for a key of `scope`."""
        h = {"Authorization": f"Bearer {self.tokens[scope]}"}
        if content_type is not None:
            h["Content-Type"] = content_type
        return h

    def rows(self) -> int:
        """The number of rows of the events table."""
        with self.ledger.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(events)).scalar_one())

    def state(self) -> tuple[int, int]:
        """(head position, events row count): equal before/after means nothing was written."""
        return self.ledger.head(), self.rows()

    def post(self, body: Any, scope: str = "write", **kw: Any) -> Any:
        """POST a JSON body to /v1/events (application/json unless `headers` overrides)."""
        return self.client.post("/v1/events", json=body, headers=self.headers(scope), **kw)

    def get(self, scope: str = "read", **params: Any) -> Any:
        """GET /v1/events with query parameters."""
        return self.client.get("/v1/events", params=params, headers=self.headers(scope))


@contextmanager
def make_bed(tmp_path: Path, **settings: Any) -> Iterator[Bed]:
    """A real SQLite ledger in tmp_path, migrated to head, served by `create_app`."""
    from api.app import create_app

    db_path = tmp_path / "ledger.db"
    url = f"sqlite:///{db_path}"
    upgrade(url)
    # Its own home: the read model under the default home would be shared by every bed.
    settings.setdefault("home", tmp_path)
    app = create_app(Settings(database_url=url, **settings))
    ledger: Ledger = app.state.ledger
    tokens = {s: create_key(ledger.engine, f"test-{s}", s)[1] for s in SCOPES}
    # A crash must show up as the 500 a client would get, not as an exception in the test.
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Bed(app, client, ledger, url, db_path, tokens)


OPSLEDGER = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "opsledger"


def run_cli(
    args: list[str], home: Path, url: str | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real `opsledger` console script with OPSLEDGER_HOME (and the ledger URL) set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSLEDGER_")}
    env["OPSLEDGER_HOME"] = str(home)
    if url is not None:
        env["OPSLEDGER_DATABASE_URL"] = url
    exe = str(OPSLEDGER) if OPSLEDGER.exists() else shutil.which("opsledger") or "opsledger"
    proc = subprocess.run(
        [exe, *args], input=stdin, capture_output=True, env=env, timeout=60, check=False
    )
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )


def run_cli_many(
    calls: list[list[str]], home: Path, url: str | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """Run independent CLI invocations concurrently (each is a ~1 s interpreter start)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(lambda args: run_cli(args, home, url), calls))
