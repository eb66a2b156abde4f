"""Builders of container and node sample events, and NodePool, subnet and node status events,
for the tests of the workloads and inventory projections and the reads over them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from store.contract import Event, batch_from_columns, samples_event, validate_event
from store.ledger import Ledger

SOURCE = "test/containers"
GIB = 2**30
MIB = 2**20
#: Canonical container metric → its short name in `Container.values`.
METRICS = {
    "cpu_usage": "container_cpu_usage_cores",
    "memory_usage": "container_memory_working_set_bytes",
    "cpu_request": "container_cpu_requests_cores",
    "memory_request": "container_memory_requests_bytes",
    "cpu_limit": "container_cpu_limits_cores",
    "memory_limit": "container_memory_limits_bytes",
}


def us(t: datetime) -> int:
    """UTC microseconds of an aware or naive-UTC datetime."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp()) * 1_000_000 + t.microsecond


def rfc(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def container_labels(
    namespace: str,
    pod: str,
    container: str,
    kind: str | None = "Deployment",
    workload: str | None = None,
    node: str | None = None,
) -> dict[str, str]:
    """The labels of a container series; None leaves a label out."""
    labels = {"namespace": namespace, "pod": pod, "container": container}
    if kind is not None:
        labels["workload_kind"] = kind
    if workload is not None:
        labels["workload"] = workload
    if node is not None:
        labels["node"] = node
    return labels


class Samples:
    """Samples of one event, added series by series, as canonical columns."""

    def __init__(self) -> None:
        self.series: list[tuple[str, dict[str, str]]] = []
        self.index: dict[str, int] = {}
        self.cols: tuple[list[int], list[int], list[float]] = ([], [], [])

    def add(self, name: str, labels: dict[str, str], t: datetime, value: float) -> Samples:
        key = name + repr(sorted(labels.items()))
        if key not in self.index:
            self.index[key] = len(self.series)
            self.series.append((name, labels))
        self.cols[0].append(self.index[key])
        self.cols[1].append(us(t))
        self.cols[2].append(float(value))
        return self

    def container(self, labels: dict[str, str], t: datetime, **values: float | None) -> Samples:
        """One sample per given metric (cpu_usage=…, memory_request=…) of a container at t."""
        for short, v in values.items():
            if v is not None:
                self.add(METRICS[short], labels, t, v)
        return self

    def node(
        self,
        node: str,
        t: datetime,
        cpu: float,
        memory: float,
        pool: str | None = None,
        zone: str | None = None,
        cpu_used: float | None = None,
    ) -> Samples:
        """A node's allocatable (and usage) with its nodepool and zone labels."""
        labels = {"node": node}
        if pool is not None:
            labels["nodepool"] = pool
        if zone is not None:
            labels["zone"] = zone
        self.add("node_cpu_allocatable_cores", labels, t, cpu)
        self.add("node_memory_allocatable_bytes", labels, t, memory)
        self.add("node_cpu_usage_cores", labels, t, cpu / 2 if cpu_used is None else cpu_used)
        self.add("node_memory_usage_bytes", labels, t, memory / 2)
        return self

    def event(self, event_id: str, cluster: str) -> Event:
        """The samples as one `opsledger.metric.samples` event (canonical order)."""
        sidx, ts, values = (np.asarray(c) for c in self.cols)
        order = np.lexsort((ts, sidx))
        batch = batch_from_columns(
            self.series, sidx[order], ts[order].astype(np.int64), values[order]
        )
        return samples_event(SOURCE, event_id, int(ts.min()), cluster, batch)

    def raw(self, event_id: str, cluster: str) -> dict[str, Any]:
        """The samples as a structured CloudEvent (JSON), in the order they were added."""
        samples = [
            {
                "name": self.series[i][0],
                "labels": self.series[i][1],
                "ts": rfc(datetime.fromtimestamp(t / 1e6, UTC)),
                "value": v,
            }
            for i, t, v in zip(*self.cols, strict=True)
        ]
        return cloudevent(
            "opsledger.metric.samples",
            {"samples": samples},
            event_id,
            datetime.fromtimestamp(min(self.cols[1]) / 1e6, UTC),
            cluster,
        )


def cloudevent(
    event_type: str, data: dict[str, Any], event_id: str, t: datetime, cluster: str | None
) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id,
        "source": SOURCE,
        "type": event_type,
        "time": rfc(t),
        "data": data,
    }
    if cluster is not None:
        ev["cluster"] = cluster
    return ev


def nodepool_status(
    event_id: str, t: datetime, cluster: str, nodepool: str, **data: Any
) -> dict[str, Any]:
    """An `opsledger.k8s.nodepool.status` event."""
    return cloudevent(
        "opsledger.k8s.nodepool.status", {"nodepool": nodepool, **data}, event_id, t, cluster
    )


def subnet_status(
    event_id: str, t: datetime, cluster: str, subnet_id: str, **data: Any
) -> dict[str, Any]:
    """An `opsledger.network.subnet.status` event."""
    return cloudevent(
        "opsledger.network.subnet.status", {"subnet_id": subnet_id, **data}, event_id, t, cluster
    )


def node_status(event_id: str, t: datetime, cluster: str, node: str, **data: Any) -> dict[str, Any]:
    """An `opsledger.k8s.node.status` event (ready, 4 cores, 16 GiB unless given)."""
    body = {
        "node": node,
        "ready": True,
        "allocatable": {"cpu_cores": 4.0, "memory_bytes": 16 * GIB, "pods": 58},
        **data,
    }
    return cloudevent("opsledger.k8s.node.status", body, event_id, t, cluster)


def append(ledger: Ledger, events: Sequence[Event | dict[str, Any]]) -> None:
    """Append events (built ones, or CloudEvents to validate) in one batch."""
    ledger.append([e if isinstance(e, Event) else validate_event(e) for e in events])
