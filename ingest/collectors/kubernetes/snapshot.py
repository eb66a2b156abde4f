"""One scrape of a cluster: node and pod status events; node, namespace, container, PVC samples."""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ingest.collectors.kubernetes.api import Api, KubernetesError
from ingest.collectors.kubernetes.objects import (
    NodeInfo,
    PodInfo,
    cores,
    digest,
    items,
    node_info,
    node_status_event,
    obj,
    pod_info,
    pod_status_event,
    text,
    whole,
)
from ingest.collectors.kubernetes.workloads import container_rows, read_owners
from store.contract import METRIC_SAMPLES, event_to_cloudevent
from store.timefmt import format_us, rfc3339_us_or_none

log = logging.getLogger("opsledger.collectors.kubernetes")

_STATS_PATH = "/api/v1/nodes/{name}/proxy/stats/summary"


@dataclass(slots=True)
class Samples:
    """Gauge samples of one kind (nodes, namespaces and containers, pvcs) at one scrape time."""

    kind: str
    ts_us: int
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, name: str, labels: Mapping[str, str], value: float) -> None:
        """Add one sample at the scrape timestamp."""
        if math.isfinite(value):
            self.rows.append(
                {"name": name, "labels": dict(labels), "ts": self.ts_us, "value": value}
            )

    def event(self, *, source: str, cluster: str) -> dict[str, Any] | None:
        """The samples event, None when empty; the same samples of a scrape are a duplicate.

        The id is `samples/<kind>/<ts>/<digest>`: a re-run that sees the same scrape finds a
        duplicate; one that sees new values for the same timestamp (a pod created between two
        runs) adds an event, whose values win, rather than a conflict that would stall the run.
        """
        if not self.rows:
            return None
        ts = format_us(self.ts_us)
        rows = sorted(
            ({**r, "ts": ts} for r in self.rows),
            key=lambda r: (r["name"], sorted(r["labels"].items())),
        )
        return event_to_cloudevent(
            source=source,
            event_id=f"samples/{self.kind}/{ts}/{digest(rows)}",
            event_type=METRIC_SAMPLES,
            time_us=self.ts_us,
            cluster=cluster,
            subject=None,
            data={"samples": rows},
        )


@dataclass(slots=True)
class Snapshot:
    """Status events keyed by object (`node/<name>`, `pod/<uid>`) and the samples events."""

    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)


def _optional(what: str, call: Any) -> Any:
    """The result of an optional read, None (with a warning) when it fails for good."""
    try:
        return call()
    except KubernetesError as exc:
        log.warning("skipped %s: %s", what, exc)
        return None


def scrape_time_us(node_metrics: Sequence[dict[str, Any]] | None, now_us: int) -> int:
    """The one timestamp of a scrape's samples: metrics-server's latest node timestamp.

    Scopes sum their members at equal timestamps and ratios are taken per timestamp, so every
    sample of a run shares it; taking it from metrics-server makes a re-run within the same
    metrics window produce the same samples (a duplicate). Without metrics: the whole second.
    """
    stamps = [rfc3339_us_or_none(m.get("timestamp")) for m in node_metrics or ()]
    known = [s for s in stamps if s is not None]
    return max(known) if known else now_us - now_us % 1_000_000


def take_snapshot(
    api: Api,
    *,
    cluster: str,
    source: str,
    now_us: int,
    pending_after_us: int,
    nodepool_labels: Sequence[str],
    usage: bool,
    pvc_usage: bool,
    workloads: bool,
) -> Snapshot:
    """Read the cluster's nodes, pods, PVCs and usage; build the events of this scrape."""
    core = api.core
    nodes = [
        node_info(n, nodepool_labels, now_us)
        for n in api.list_all("list nodes", core.list_node)
        if text(obj(n.get("metadata")).get("name"))
    ]
    raw_pods = [
        p
        for p in api.list_all("list pods", core.list_pod_for_all_namespaces)
        if text(obj(p.get("metadata")).get("name"))
    ]
    pods = [pod_info(p, pending_after_us=pending_after_us, now_us=now_us) for p in raw_pods]
    pvcs = api.list_all(
        "list persistentvolumeclaims", core.list_persistent_volume_claim_for_all_namespaces
    )
    node_metrics = _optional("node usage", lambda: api.metrics("nodes")) if usage else None
    pod_metrics = _optional("pod usage", lambda: api.metrics("pods")) if usage else None
    scrape_us = scrape_time_us(node_metrics, now_us)

    snap = Snapshot()
    for node in nodes:
        snap.statuses[f"node/{node.name}"] = node_status_event(node, source=source, cluster=cluster)
    for pod in pods:
        snap.statuses[f"pod/{pod.uid}"] = pod_status_event(pod, source=source, cluster=cluster)
    stats = _volume_stats(api, nodes, pods) if pvc_usage else {}
    pod_samples = _namespace_samples(pods, pod_metrics, scrape_us)
    if workloads:
        # Containers ride in the namespaces' event: same pods, same scrape, one commit.
        for name, labels, value in container_rows(
            raw_pods, pod_metrics, read_owners(api, raw_pods)
        ):
            pod_samples.add(name, labels, value)
    for samples in (
        _node_samples(nodes, node_metrics, scrape_us),
        pod_samples,
        _pvc_samples(pvcs, stats, scrape_us),
    ):
        event = samples.event(source=source, cluster=cluster)
        if event is not None:
            snap.samples.append(event)
    return snap


def _node_samples(
    nodes: Sequence[NodeInfo], metrics: Sequence[dict[str, Any]] | None, ts: int
) -> Samples:
    out = Samples("nodes", ts)
    labels = {n.name: n.labels for n in nodes}
    for n in nodes:
        out.add("node_cpu_allocatable_cores", n.labels, n.cpu_cores)
        out.add("node_memory_allocatable_bytes", n.labels, float(n.memory_bytes))
    for m in metrics or ():
        name = text(obj(m.get("metadata")).get("name"))
        used = obj(m.get("usage"))
        cpu, memory = cores(used.get("cpu")), whole(used.get("memory"))
        if name is None or name not in labels:  # a node gone since the node list
            continue
        if cpu is not None:
            out.add("node_cpu_usage_cores", labels[name], cpu)
        if memory is not None:
            out.add("node_memory_usage_bytes", labels[name], float(memory))
    return out


def _namespace_samples(
    pods: Sequence[PodInfo], metrics: Sequence[dict[str, Any]] | None, ts: int
) -> Samples:
    count: dict[str, int] = defaultdict(int)
    cpu_req: dict[str, float] = defaultdict(float)
    mem_req: dict[str, int] = defaultdict(int)
    for p in pods:
        count[p.namespace] += 1
        if p.phase in ("Pending", "Running"):  # what kube-state-metrics' requests join keeps
            cpu_req[p.namespace] += p.cpu_requests
            mem_req[p.namespace] += p.memory_requests
    cpu_use: dict[str, float] = defaultdict(float)
    mem_use: dict[str, int] = defaultdict(int)
    for m in metrics or ():
        ns = text(obj(m.get("metadata")).get("namespace"))
        if ns is None:
            continue
        for c in items(m.get("containers")):
            used = obj(c.get("usage"))
            cpu_use[ns] += cores(used.get("cpu")) or 0.0
            mem_use[ns] += whole(used.get("memory")) or 0
    out = Samples("namespaces", ts)
    namespaces = set(count) | (set(cpu_use) if metrics is not None else set())
    for ns in sorted(namespaces):
        labels = {"namespace": ns}
        out.add("namespace_pod_count", labels, float(count.get(ns, 0)))
        out.add("namespace_cpu_requests_cores", labels, cpu_req.get(ns, 0.0))
        out.add("namespace_memory_requests_bytes", labels, float(mem_req.get(ns, 0)))
        if metrics is not None:  # a namespace of finished pods uses nothing
            out.add("namespace_cpu_usage_cores", labels, cpu_use.get(ns, 0.0))
            out.add("namespace_memory_usage_bytes", labels, float(mem_use.get(ns, 0)))
    return out


def _volume_stats(
    api: Api, nodes: Sequence[NodeInfo], pods: Sequence[PodInfo]
) -> dict[tuple[str, str], int]:
    """Used bytes per (namespace, claim) from the kubelets running pods that mount claims."""
    ready = {n.name for n in nodes if n.status["ready"]}
    wanted = sorted({p.node for p in pods if p.claims and p.node in ready and p.node})
    used: dict[tuple[str, str], int] = {}
    for node in wanted:
        summary = _optional(
            f"volume stats of node {node}",
            lambda node=node: api.get_path(f"stats of node {node}", _STATS_PATH, name=node),
        )
        for pod in items(obj(summary).get("pods")):
            for volume in items(pod.get("volume")):
                ref = obj(volume.get("pvcRef"))
                ns, claim = text(ref.get("namespace")), text(ref.get("name"))
                value = volume.get("usedBytes")
                if ns and claim and isinstance(value, int) and not isinstance(value, bool):
                    # A claim mounted on several nodes (RWX) is reported by each: keep the max.
                    used[(ns, claim)] = max(used.get((ns, claim), 0), value)
    return used


def _pvc_samples(
    pvcs: Sequence[dict[str, Any]], used: dict[tuple[str, str], int], ts: int
) -> Samples:
    out = Samples("pvcs", ts)
    for pvc in pvcs:
        meta = obj(pvc.get("metadata"))
        ns, claim = text(meta.get("namespace")), text(meta.get("name"))
        capacity = whole(obj(obj(pvc.get("status")).get("capacity")).get("storage"))
        if ns and claim and capacity is not None:
            labels = {"namespace": ns, "persistentvolumeclaim": claim}
            out.add("pvc_capacity_bytes", labels, float(capacity))
    for (ns, claim), value in sorted(used.items()):
        out.add("pvc_used_bytes", {"namespace": ns, "persistentvolumeclaim": claim}, float(value))
    return out
