"""Per-container samples: usage from PodMetrics, requests and limits from the pod specs.

Each series names its pod's workload by the owner rule of docs/collectors.md ("Container
samples"): the pod's controller; a ReplicaSet's Deployment, a Job's CronJob; `Pod` without one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ingest.collectors.kubernetes.api import Api, KubernetesError
from ingest.collectors.kubernetes.objects import cores, items, obj, text, whole

log = logging.getLogger("opsledger.collectors.kubernetes")

#: A pod's controller kind → the kind of its own controller that names the workload.
PARENTS: Final = {"ReplicaSet": "Deployment", "Job": "CronJob"}
#: Spec figures: (metric, resources field, resource, parser).
SPEC_METRICS: Final = (
    ("container_cpu_requests_cores", "requests", "cpu", cores),
    ("container_memory_requests_bytes", "requests", "memory", whole),
    ("container_cpu_limits_cores", "limits", "cpu", cores),
    ("container_memory_limits_bytes", "limits", "memory", whole),
)
USAGE_METRICS: Final = (
    ("container_cpu_usage_cores", "cpu", cores),
    ("container_memory_working_set_bytes", "memory", whole),
)

Ref = tuple[str, str]
#: (namespace, name) of a ReplicaSet or Job → its own controller reference, if any.
OwnerIndex = dict[Ref, Ref | None]
Row = tuple[str, dict[str, str], float]


def controller(meta: Mapping[str, Any]) -> Ref | None:
    """The (kind, name) of an object's controller ownerReference, None without one."""
    for ref in items(meta.get("ownerReferences")):
        kind, name = text(ref.get("kind")), text(ref.get("name"))
        if ref.get("controller") is True and kind and name:
            return kind, name
    return None


@dataclass(frozen=True, slots=True)
class Owners:
    """The ReplicaSets' and Jobs' controllers; an index is None when it could not be read."""

    indexes: Mapping[str, OwnerIndex | None]

    def workload(self, namespace: str, pod: str, meta: Mapping[str, Any]) -> Ref | None:
        """(workload_kind, workload) of a pod; None when its ReplicaSet or Job is unknown."""
        ref = controller(meta)
        if ref is None:
            return "Pod", pod
        kind, name = ref
        parent_kind = PARENTS.get(kind)
        if parent_kind is None:  # StatefulSet, DaemonSet, a custom resource: itself
            return ref
        index = self.indexes.get(kind)
        if index is None or (namespace, name) not in index:
            return None  # deleted since the pod list, or unreadable: no guessing
        parent = index[(namespace, name)]
        return parent if parent is not None and parent[0] == parent_kind else ref


def _index(objects: Sequence[Mapping[str, Any]]) -> OwnerIndex:
    out: OwnerIndex = {}
    for o in objects:
        meta = obj(o.get("metadata"))
        name = text(meta.get("name"))
        if name is not None:
            out[(text(meta.get("namespace")) or "default", name)] = controller(meta)
    return out


def read_owners(api: Api, pods: Sequence[Mapping[str, Any]]) -> Owners:
    """List the ReplicaSets and Jobs, each only when a pod is controlled by one."""
    needed = {ref[0] for p in pods if (ref := controller(obj(p.get("metadata")))) is not None}
    calls = {
        "ReplicaSet": ("list replicasets", api.apps.list_replica_set_for_all_namespaces),
        "Job": ("list jobs", api.batch.list_job_for_all_namespaces),
    }
    indexes: dict[str, OwnerIndex | None] = {}
    for kind, (what, fn) in calls.items():
        if kind not in needed:
            continue
        try:
            indexes[kind] = _index(api.list_all(what, fn))
        except KubernetesError as exc:
            # Their pods' samples are left out rather than sent under the wrong workload.
            log.warning("skipped the container samples of pods of a %s: %s", kind, exc)
            indexes[kind] = None
    return Owners(indexes)


def container_rows(
    pods: Sequence[Mapping[str, Any]],
    metrics: Sequence[Mapping[str, Any]] | None,
    owners: Owners,
) -> list[Row]:
    """(metric, labels, value) of every container: spec figures and metrics-server usage."""
    rows: dict[tuple[str, str, str, str], Row] = {}
    known: dict[Ref, dict[str, str]] = {}
    for pod in pods:
        meta, spec = obj(pod.get("metadata")), obj(pod.get("spec"))
        namespace, name = text(meta.get("namespace")) or "default", text(meta.get("name"))
        if name is None:
            continue
        workload = owners.workload(namespace, name, meta)
        if workload is None:
            continue
        base = {"namespace": namespace, "pod": name}
        base.update(workload_kind=workload[0], workload=workload[1])
        node = text(spec.get("nodeName"))
        if node is not None:
            base["node"] = node
        known[(namespace, name)] = base
        phase = text(obj(pod.get("status")).get("phase")) or "Pending"
        if phase not in ("Pending", "Running"):  # finished pods hold no resources
            continue
        for c in items(spec.get("containers")):
            container = text(c.get("name"))
            if container is None:
                continue
            resources = obj(c.get("resources"))
            for metric, part, resource, parse in SPEC_METRICS:
                value = parse(obj(resources.get(part)).get(resource))
                if value is not None:
                    labels = {**base, "container": container}
                    rows[(metric, namespace, name, container)] = (metric, labels, float(value))
    for m in metrics or ():
        meta = obj(m.get("metadata"))
        ref = (text(meta.get("namespace")) or "default", text(meta.get("name")) or "")
        pod_labels = known.get(ref)
        if pod_labels is None:  # the pod is gone since the pod list: no owner, no node
            continue
        for c in items(m.get("containers")):
            container = text(c.get("name"))
            used = obj(c.get("usage"))
            for metric, resource, parse in USAGE_METRICS:
                value = parse(used.get(resource))
                if container is not None and value is not None:
                    labels = {**pod_labels, "container": container}
                    rows[(metric, *ref, container)] = (metric, labels, float(value))
    return list(rows.values())
