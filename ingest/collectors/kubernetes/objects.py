"""Kubernetes objects (as the API returns them, in JSON) turned into contract events and samples."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

import orjson
from kubernetes.utils.quantity import parse_quantity

from store.contract import event_to_cloudevent
from store.event_types import EventType
from store.timefmt import rfc3339_us_or_none

#: Node labels naming the node pool, first match wins: EKS Auto Mode and Karpenter, managed
#: node groups, eksctl's own groups, then the compute type (`auto`, `fargate`, `hybrid`).
DEFAULT_NODEPOOL_LABELS: Final = (
    "karpenter.sh/nodepool",
    "eks.amazonaws.com/nodegroup",
    "alpha.eksctl.io/nodegroup-name",
    "eks.amazonaws.com/compute-type",
)
ZONE_LABELS: Final = ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone")
INSTANCE_TYPE_LABELS: Final = (
    "node.kubernetes.io/instance-type",
    "beta.kubernetes.io/instance-type",
)

#: Container waiting reasons of a normal start; any other waiting reason is worth reporting.
_STARTING: Final = frozenset({"ContainerCreating", "PodInitializing"})
#: Pod conditions whose flapping (readiness probes) is not a change of the reported status.
_READINESS: Final = frozenset({"Ready", "ContainersReady"})
PENDING_TOO_LONG: Final = "PendingTooLong"


def obj(value: Any) -> Mapping[str, Any]:
    """`value` if it is a JSON object, else an empty one (API fields are often absent)."""
    return value if isinstance(value, Mapping) else {}


def items(value: Any) -> list[Mapping[str, Any]]:
    """The objects of a JSON array, skipping anything else."""
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def text(value: Any) -> str | None:
    """A non-empty string, or None."""
    return value if isinstance(value, str) and value else None


def digest(value: Any) -> str:
    """A short, stable hex digest of a JSON value (keys sorted)."""
    raw = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(raw, digest_size=8).hexdigest()


# -- quantities ------------------------------------------------------------------------------


def quantity(value: Any) -> Decimal | None:
    """A Kubernetes quantity ("3920m", "15Gi", "16069100Ki", "245691866n") as a Decimal."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Decimal(str(value))
    if not isinstance(value, str):
        return None
    try:
        q = parse_quantity(value)
    except ValueError:
        return None
    return q if isinstance(q, Decimal) and q.is_finite() else None


def cores(value: Any) -> float | None:
    """CPU cores as a float."""
    q = quantity(value)
    return float(q) if q is not None else None


def whole(value: Any) -> int | None:
    """Bytes or a count as an integer, rounded up like the API server's `Value()`."""
    q = quantity(value)
    return math.ceil(q) if q is not None else None


# -- Kubernetes Events -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventsApi:
    """Which Events API a collector reads, and how its objects are named in the ledger."""

    api_version: str
    id_prefix: str


CORE_EVENTS: Final = EventsApi("v1", "event")
NEW_EVENTS: Final = EventsApi("events.k8s.io/v1", "events.k8s.io")


def event_time_us(ev: Mapping[str, Any]) -> int | None:
    """When an Event (either API) was last observed: the time of this update of it."""
    series = obj(ev.get("series"))
    for value in (
        series.get("lastObservedTime"),
        ev.get("lastTimestamp"),
        ev.get("deprecatedLastTimestamp"),
        ev.get("eventTime"),
        ev.get("firstTimestamp"),
        ev.get("deprecatedFirstTimestamp"),
        obj(ev.get("metadata")).get("creationTimestamp"),
    ):
        us = rfc3339_us_or_none(value)
        if us is not None:
            return us
    return None


def k8s_event(
    raw: Mapping[str, Any], api: EventsApi, *, source: str, cluster: str, now_us: int
) -> dict[str, Any] | None:
    """The CloudEvent of one update of an Event, None when it has no uid or resourceVersion.

    The id is `<prefix>/<uid>/<resourceVersion>`: every update of the object (count 1 → 5) has
    a new resourceVersion and so is its own ledger event, and the same version seen again (a
    re-list, a resumed watch) is a duplicate.
    """
    meta = obj(raw.get("metadata"))
    uid, rv = text(meta.get("uid")), text(meta.get("resourceVersion"))
    if uid is None or rv is None:
        return None
    # List items come without kind and apiVersion, watch objects with them: add them, so that
    # the same version is the same content whichever way it arrived.
    data = {"apiVersion": api.api_version, "kind": "Event", **raw}
    ref = obj(raw.get("involvedObject")) or obj(raw.get("regarding"))
    subject = None
    kind, name = text(ref.get("kind")), text(ref.get("name"))
    if kind and name:
        ns = text(ref.get("namespace"))
        subject = "/".join(p for p in (kind.lower(), ns, name) if p)
    return event_to_cloudevent(
        source=source,
        event_id=f"{api.id_prefix}/{uid}/{rv}",
        event_type=EventType.K8S_EVENT,
        time_us=event_time_us(raw) or now_us,
        cluster=cluster,
        subject=subject,
        data=data,
    )


# -- nodes -----------------------------------------------------------------------------------


def _label(labels: Mapping[str, Any], keys: Iterable[str]) -> str | None:
    for key in keys:
        value = text(labels.get(key))
        if value is not None:
            return value
    return None


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What the collector keeps of a Node: its status event data and series labels."""

    name: str
    status: dict[str, Any]
    time_us: int
    labels: dict[str, str]
    cpu_cores: float
    memory_bytes: int


def node_info(node: Mapping[str, Any], nodepool_labels: Sequence[str], now_us: int) -> NodeInfo:
    """A Node's readiness, pool, zone, instance type and allocatable resources."""
    meta, status = obj(node.get("metadata")), obj(node.get("status"))
    name = str(meta.get("name"))
    labels = obj(meta.get("labels"))
    ready_cond = next(
        (c for c in items(status.get("conditions")) if c.get("type") == "Ready"), None
    )
    ready = ready_cond is not None and ready_cond.get("status") == "True"
    alloc = obj(status.get("allocatable")) or obj(status.get("capacity"))
    cpu = cores(alloc.get("cpu")) or 0.0
    memory = whole(alloc.get("memory")) or 0
    data: dict[str, Any] = {"node": name, "ready": ready}
    if not ready:
        # A node without a Ready condition has not reported yet: say so rather than guess.
        data["reason"] = text(obj(ready_cond).get("reason")) or (
            "NoReadyCondition" if ready_cond is None else "NotReady"
        )
    pool = _label(labels, nodepool_labels)
    zone = _label(labels, ZONE_LABELS)
    instance_type = _label(labels, INSTANCE_TYPE_LABELS)
    for key, value in (("nodepool", pool), ("zone", zone), ("instance_type", instance_type)):
        if value is not None:
            data[key] = value
    data["allocatable"] = {
        "cpu_cores": max(cpu, 0.0),
        "memory_bytes": max(memory, 0),
        "pods": max(whole(alloc.get("pods")) or 0, 0),
    }
    # The fact reported is the node's readiness, true since the Ready condition last changed.
    time_us = (
        rfc3339_us_or_none(obj(ready_cond).get("lastTransitionTime"))
        or rfc3339_us_or_none(meta.get("creationTimestamp"))
        or now_us
    )
    series = {"node": name}
    if pool is not None:
        series["nodepool"] = pool
    if zone is not None:
        series["zone"] = zone
    return NodeInfo(name, data, time_us, series, max(cpu, 0.0), max(memory, 0))


def node_status_event(info: NodeInfo, *, source: str, cluster: str) -> dict[str, Any]:
    """The node status CloudEvent; its id is a digest of its content, so the same is a duplicate."""
    content = digest([info.time_us, info.status])
    return event_to_cloudevent(
        source=source,
        event_id=f"node/{info.name}/{content}",
        event_type=EventType.K8S_NODE_STATUS,
        time_us=info.time_us,
        cluster=cluster,
        subject=f"node/{info.name}",
        data=info.status,
    )


# -- pods ------------------------------------------------------------------------------------


def _container_statuses(status: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return items(status.get("initContainerStatuses")) + items(status.get("containerStatuses"))


def _pod_reason(
    status: Mapping[str, Any], phase: str, pending_since_us: int, pending_after_us: int, now_us: int
) -> str | None:
    """Why a pod is not healthy now, or OOMKilled when a container of it was restarted after one."""
    pod_reason = text(status.get("reason"))  # Evicted, NodeLost, Shutdown, DeadlineExceeded
    if pod_reason is not None:
        return pod_reason
    containers = _container_statuses(status)
    for c in containers:
        waiting = text(obj(obj(c.get("state")).get("waiting")).get("reason"))
        if waiting is not None and waiting not in _STARTING:
            return waiting  # CrashLoopBackOff, ImagePullBackOff, CreateContainerConfigError, …
    if phase == "Pending" and now_us - pending_since_us >= pending_after_us:
        return PENDING_TOO_LONG
    if phase == "Pending":
        scheduled = next(
            (c for c in items(status.get("conditions")) if c.get("type") == "PodScheduled"), None
        )
        if scheduled is not None and scheduled.get("status") == "False":
            return text(scheduled.get("reason"))  # Unschedulable
    for c in containers:
        reason = text(obj(obj(c.get("state")).get("terminated")).get("reason"))
        if reason is not None and reason != "Completed":
            return reason  # stopped now: OOMKilled, Error, ContainerCannotRun, …
    for c in containers:
        # Restarted since: only an OOM kill is worth carrying (restarts count the rest).
        if obj(obj(c.get("lastState")).get("terminated")).get("reason") == "OOMKilled":
            return "OOMKilled"
    return None


def _status_times(status: Mapping[str, Any]) -> Iterable[Any]:
    yield status.get("startTime")
    for cond in items(status.get("conditions")):
        if cond.get("type") not in _READINESS:
            yield cond.get("lastTransitionTime")
    for c in _container_statuses(status):
        for key in ("state", "lastState"):
            state = obj(c.get(key))
            yield obj(state.get("running")).get("startedAt")
            terminated = obj(state.get("terminated"))
            yield terminated.get("startedAt")
            yield terminated.get("finishedAt")


@dataclass(frozen=True, slots=True)
class PodInfo:
    """What the collector keeps of a Pod: its status event data and what it asks and mounts."""

    uid: str
    namespace: str
    name: str
    status: dict[str, Any]
    time_us: int
    phase: str
    node: str | None
    cpu_requests: float
    memory_requests: int
    claims: tuple[str, ...] = field(default=())


_PHASES: Final = frozenset({"Pending", "Running", "Succeeded", "Failed", "Unknown"})


def pod_info(pod: Mapping[str, Any], *, pending_after_us: int, now_us: int) -> PodInfo:
    """A Pod's phase, reason, restarts (summed over all its containers), node and owner."""
    meta, spec, status = obj(pod.get("metadata")), obj(pod.get("spec")), obj(pod.get("status"))
    namespace, name = str(meta.get("namespace") or "default"), str(meta.get("name"))
    uid = text(meta.get("uid")) or f"{namespace}/{name}"
    phase = text(status.get("phase")) or "Pending"
    if phase not in _PHASES:
        phase = "Unknown"
    created = rfc3339_us_or_none(meta.get("creationTimestamp")) or now_us
    reason = _pod_reason(status, phase, created, pending_after_us, now_us)
    restarts = sum(
        max(c.get("restartCount", 0), 0)
        for c in _container_statuses(status)
        if isinstance(c.get("restartCount"), int)
    )
    node = text(spec.get("nodeName"))
    owner = next(
        (
            f"{r.get('kind')}/{r.get('name')}"
            for r in items(meta.get("ownerReferences"))
            if r.get("controller") is True and text(r.get("kind")) and text(r.get("name"))
        ),
        None,
    )
    data: dict[str, Any] = {"namespace": namespace, "pod": name, "phase": phase}
    if reason is not None:
        data["reason"] = reason[:4096]
    data["restarts"] = restarts
    if node is not None:
        data["node"] = node
    if owner is not None and len(owner) <= 253:
        data["owner"] = owner
    # When the reported state came about: the latest change in the pod's status (readiness
    # flaps aside), or the moment a pending pod became "too long" pending.
    stamps = [us for us in map(rfc3339_us_or_none, _status_times(status)) if us is not None]
    time_us = max([created, *stamps])
    if reason == PENDING_TOO_LONG:
        time_us = max(time_us, created + pending_after_us)
    cpu, memory = 0.0, 0
    for container in items(spec.get("containers")):
        requests = obj(obj(container.get("resources")).get("requests"))
        cpu += cores(requests.get("cpu")) or 0.0
        memory += whole(requests.get("memory")) or 0
    claims = tuple(
        str(obj(v.get("persistentVolumeClaim")).get("claimName"))
        for v in items(spec.get("volumes"))
        if text(obj(v.get("persistentVolumeClaim")).get("claimName"))
    )
    return PodInfo(uid, namespace, name, data, time_us, phase, node, cpu, memory, claims)


def pod_status_event(info: PodInfo, *, source: str, cluster: str) -> dict[str, Any]:
    """The pod status CloudEvent; its id is a digest of its content, so the same is a duplicate."""
    content = digest([info.time_us, info.status])
    return event_to_cloudevent(
        source=source,
        event_id=f"pod/{info.uid}/{content}",
        event_type=EventType.K8S_POD_STATUS,
        time_us=info.time_us,
        cluster=cluster,
        subject=f"pod/{info.namespace}/{info.name}",
        data=info.status,
    )
