"""Builders of valid v1 CloudEvents (the contract's types, Kubernetes Events of both API shapes)
and the real webhook payloads Alertmanager and PagerDuty send."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson

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


# -- the cluster around an incident (tests/test_cluster_events.py, test_timeline.py) -----------


def core_event(id: str, **over: Any) -> dict[str, Any]:
    """A core/v1 Warning Event as the API returns it."""
    data: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "api-1.17f9a3", "namespace": "payments", "uid": "uid-core"},
        "involvedObject": {"kind": "Pod", "name": "api-1", "namespace": "payments"},
        "reason": "BackOff",
        "message": "Back-off restarting failed container api in pod api-1",
        "source": {"component": "kubelet", "host": "node-a"},
        "firstTimestamp": "2026-10-14T03:50:00Z",
        "lastTimestamp": "2026-10-14T04:00:00Z",
        "count": 4,
        "type": "Warning",
        "eventTime": None,
    }
    data.update(over.pop("data", {}))
    return cloudevent("opsledger.k8s.event", data, id=id, **over)


def new_event(id: str, **over: Any) -> dict[str, Any]:
    """An events.k8s.io/v1 Event: regarding, note, series, eventTime, reportingController."""
    data: dict[str, Any] = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": "node-a.18a", "namespace": "default", "uid": "uid-new"},
        "regarding": {"kind": "Node", "name": "node-a"},
        "reason": "OOMKilling",
        "note": "Memory cgroup out of memory: Killed process 4242 (java)",
        "type": "Warning",
        "eventTime": "2026-10-14T04:01:00.250000Z",
        "series": {"count": 3, "lastObservedTime": "2026-10-14T04:05:00.500000Z"},
        "reportingController": "kernel-monitor",
        "reportingInstance": "node-a",
        "deprecatedCount": 0,
    }
    data.update(over.pop("data", {}))
    return cloudevent("opsledger.k8s.event", data, id=id, **over)


def node(id: str, name: str, ready: bool, time: str, **data: Any) -> dict[str, Any]:
    """An `opsledger.k8s.node.status` event."""
    body = {
        "node": name,
        "ready": ready,
        "allocatable": {"cpu_cores": 3.92, "memory_bytes": 15_944_000_000, "pods": 110},
        **data,
    }
    return cloudevent("opsledger.k8s.node.status", body, id=id, time=time)


def pod(id: str, name: str, restarts: int, time: str, **data: Any) -> dict[str, Any]:
    """An `opsledger.k8s.pod.status` event."""
    cluster = data.pop("cluster", "prod-eks-1")
    body = {"namespace": "payments", "pod": name, "phase": "Running", "restarts": restarts, **data}
    return cloudevent("opsledger.k8s.pod.status", body, id=id, time=time, cluster=cluster)


def finding(id: str, fid: str, status: str, last: str, **kw: Any) -> dict[str, Any]:
    """An `opsledger.finding` event (no cluster unless given)."""
    data = {
        "provider": "guardduty",
        "finding_id": fid,
        "title": "Impact:Runtime/CryptoMinerExecuted observed",
        "finding_type": "Impact:Runtime/CryptoMinerExecuted",
        "severity": "HIGH",
        "status": status,
        "first_seen": "2026-10-14T03:00:00Z",
        "last_seen": last,
        **kw.pop("data", {}),
    }
    kw.setdefault("cluster", None)
    return cloudevent("opsledger.finding", data, id=id, time=last, **kw)


# -- webhook deliveries -------------------------------------------------------------------------

#: Real Alertmanager and PagerDuty (v3) payloads, as their senders deliver them.
WEBHOOK_FIXTURES = Path("/work/shared/data/fixtures")


def webhook_fixture(name: str) -> dict[str, Any]:
    """A real payload, read as it is; tests edit only their in-memory copy."""
    doc: dict[str, Any] = orjson.loads((WEBHOOK_FIXTURES / name).read_bytes())
    return doc
