"""Kubernetes facts: Warning events, node and pod status (launches, flaps, hot pools, crashes)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ingest.demo.catalogue import ACCOUNT, APP_NAMESPACES, HOT_POOL, NS_BY_NAME, REGION
from ingest.demo.draws import T_CRASH, T_FLAP, T_HOT, T_WARN, k8s_suffix, keyed_rng, stable_uuid
from ingest.demo.facts import DayPlan, Trigger, cloudevent
from ingest.demo.units import DAY, HOUR, MIN, SEC, format_seconds
from ingest.demo.world import ROTATE_H, Node, World
from store.event_types import EventType
from store.timefmt import format_us


def _kube_event(
    seed: int,
    *,
    reason: str,
    message: str,
    kind: str,
    name: str,
    namespace: str | None,
    component: str,
    host: str | None,
    first_us: int,
    last_us: int,
    count: int,
    field_path: str | None = None,
) -> dict[str, Any]:
    """A Warning core/v1 Event, shaped as the API server returns it, as a ledger event."""
    first_us -= first_us % SEC
    last_us -= last_us % SEC
    involved: dict[str, Any] = {
        "kind": kind,
        "name": name,
        "uid": stable_uuid(seed, kind, namespace, name),
        "apiVersion": "v1",
    }
    if namespace is not None:
        involved["namespace"] = namespace
    if field_path is not None:
        involved["fieldPath"] = field_path
    source: dict[str, Any] = {"component": component}
    if host is not None:
        source["host"] = host
    uid = stable_uuid(seed, "event", kind, name, reason, first_us)
    obj = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{name}.{first_us * 1000:x}",
            "namespace": namespace or "default",
            "uid": uid,
            "resourceVersion": str(last_us // SEC % 1_000_000_000),
            "creationTimestamp": format_seconds(first_us),
        },
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "source": source,
        "firstTimestamp": format_seconds(first_us),
        "lastTimestamp": format_seconds(last_us),
        "count": count,
        "type": "Warning",
        "eventTime": None,
        "reportingComponent": component,
        "reportingInstance": host or "",
    }
    return cloudevent("k8s", f"event/{uid}", EventType.K8S_EVENT, last_us, obj)


def _pod_status(
    t_us: int,
    ns: str,
    pod: str,
    phase: str,
    reason: str | None,
    restarts: int,
    node: str | None,
    owner: str,
) -> dict[str, Any]:
    """An `opsledger.k8s.pod.status` event."""
    t_us -= t_us % SEC
    data: dict[str, Any] = {"namespace": ns, "pod": pod, "phase": phase, "restarts": restarts}
    if reason is not None:
        data["reason"] = reason
    if node is not None:
        data["node"] = node
    data["owner"] = owner
    event_id = f"pod/{ns}/{pod}/{format_us(t_us)}"
    return cloudevent("k8s", event_id, EventType.K8S_POD_STATUS, t_us, data)


def node_status(node: Node, t_us: int, ready: bool, reason: str, event_id: str) -> dict[str, Any]:
    """An `opsledger.k8s.node.status` event."""
    it = node.itype
    data = {
        "node": node.name,
        "ready": ready,
        "reason": reason,
        "nodepool": node.pool,
        "zone": node.zone,
        "instance_type": it.name,
        "allocatable": {
            "cpu_cores": it.cpu_alloc,
            "memory_bytes": it.mem_alloc,
            "pods": it.max_pods,
        },
    }
    return cloudevent("k8s", event_id, EventType.K8S_NODE_STATUS, t_us, data)


def deployment_pod(seed: int, ns: str, workload: str, t_us: int, *extra: object) -> tuple[str, str]:
    """(pod name, owner) of a Deployment's pod; ReplicaSets change with weekly rollouts."""
    rs = f"{workload}-{k8s_suffix(10, seed, ns, workload, t_us // (7 * DAY))}"
    return f"{rs}-{k8s_suffix(5, seed, ns, rs, *extra)}", f"ReplicaSet/{rs}"


def launches(w: World, day: int, plan: DayPlan) -> None:
    """A node reports Ready when Auto Mode launches it."""
    for node in w.nodes:
        # Earlier starts may be cut off by the world's first hour; none of those is needed.
        if node.first_h // 24 == day and node.first_h >= w.h0 + ROTATE_H:
            event_id = f"node/{node.name}/launched"
            plan.raws.append(node_status(node, node.first_h * HOUR, True, "KubeletReady", event_id))


def flap_facts(w: World, day: int, plan: DayPlan) -> None:
    """NotReady and back, NodeNotReady warnings for its pods, and sometimes an incident."""
    rng = keyed_rng(w.seed, day, T_FLAP, 1)
    for k, flap in enumerate(w.flaps.get(day, [])):
        for i in flap.nodes:
            node = w.nodes[i]
            plan.raws.append(
                node_status(
                    node,
                    flap.start_us,
                    False,
                    flap.reason,
                    f"node/{node.name}/notready/{format_us(flap.start_us)}",
                )
            )
            plan.raws.append(
                node_status(
                    node,
                    flap.end_us,
                    True,
                    "KubeletReady",
                    f"node/{node.name}/ready/{format_us(flap.end_us)}",
                )
            )
            for j in range(2):
                ns = APP_NAMESPACES[int(rng.integers(0, len(APP_NAMESPACES)))]
                workload = NS_BY_NAME[ns].workloads[j % len(NS_BY_NAME[ns].workloads)]
                pod, _ = deployment_pod(w.seed, ns, workload, flap.start_us, node.name)
                t = flap.start_us + int(rng.integers(40, 60)) * SEC
                plan.raws.append(
                    _kube_event(
                        w.seed,
                        reason="NodeNotReady",
                        message="Node is not ready",
                        kind="Pod",
                        name=pod,
                        namespace=ns,
                        component="node-controller",
                        host=None,
                        first_us=t,
                        last_us=t,
                        count=1,
                    )
                )
        names = ", ".join(w.nodes[i].name for i in flap.nodes)
        zone = w.nodes[flap.nodes[0]].zone
        note = f"{names}: {flap.reason} ({flap.message})"
        if len(flap.nodes) > 1:
            title = f"Multiple nodes NotReady in {zone}"
            plan.triggers.append(Trigger(flap.start_us, "P0", title, "az-flap", k, note=note))
        elif rng.random() < 0.6:
            title = f"Node {names} NotReady ({zone})"
            plan.triggers.append(Trigger(flap.start_us, "P1", title, "node-flap", k, note=note))


def hot_facts(w: World, day: int, plan: DayPlan) -> None:
    """A hot window: pending batch pods, OOM kills on the pool, and often an incident."""
    window = w.hot.get(day)
    if window is None:
        return
    s, e = window
    rng = keyed_rng(w.seed, day, T_HOT, 1)
    total = len(w.alive_all(s // HOUR))
    full = len(w.alive(HOT_POOL, s // HOUR))
    pod, owner = deployment_pod(w.seed, "data-pipeline", "spark-executor", s, "pending")
    t = s + int(rng.integers(3, 15)) * MIN
    msg = (
        f"0/{total} nodes are available: {full} Insufficient memory, {total - full} node(s) "
        f"didn't match Pod's node affinity/selector. preemption: 0/{total} nodes are available: "
        f"{full} No preemption victims found for incoming pod, {total - full} Preemption is not "
        "helpful for scheduling."
    )
    plan.raws.append(
        _pod_status(t, "data-pipeline", pod, "Pending", "Unschedulable", 0, None, owner)
    )
    plan.raws.append(
        _kube_event(
            w.seed,
            reason="FailedScheduling",
            message=msg,
            kind="Pod",
            name=pod,
            namespace="data-pipeline",
            component="default-scheduler",
            host=None,
            first_us=t,
            last_us=t + int(rng.integers(20, 50)) * MIN,
            count=int(rng.integers(6, 40)),
        )
    )
    nodes = w.alive(HOT_POOL, s // HOUR)
    for j in range(int(rng.integers(1, 4))):
        node = w.nodes[nodes[int(rng.integers(0, len(nodes)))]]
        t = s + int(rng.integers(20 * 60, (e - s) // SEC - 60)) * SEC
        victim, vowner = deployment_pod(w.seed, "data-pipeline", "spark-executor", s, "oom", j)
        pid = int(rng.integers(2000, 60000))
        msg = (
            f"Memory cgroup out of memory: Killed process {pid} (java) total-vm:18874368kB, "
            f"anon-rss:{int(rng.integers(14, 16)) * 1048576}kB, file-rss:0kB, shmem-rss:0kB, "
            "UID:185 pgtables:34520kB oom_score_adj:936"
        )
        plan.raws.append(
            _kube_event(
                w.seed,
                reason="OOMKilling",
                message=msg,
                kind="Node",
                name=node.name,
                namespace=None,
                component="kernel-monitor",
                host=node.name,
                first_us=t,
                last_us=t,
                count=1,
            )
        )
        restarts = int(rng.integers(1, 4))
        plan.raws.append(
            _pod_status(
                t + 2 * SEC,
                "data-pipeline",
                victim,
                "Running",
                "OOMKilled",
                restarts,
                node.name,
                vowner,
            )
        )
    if rng.random() < 0.65:
        title = f"{HOT_POOL} node pool CPU and memory > 85% sustained"
        note = f"NodePool {HOT_POOL} at its limit ({full} nodes); spark batch backlog."
        plan.triggers.append(
            Trigger(
                s + 65 * MIN, "P2", title, "hot-pool", 0, "data-pipeline", "spark-executor", note
            )
        )


def crash_facts(w: World, day: int, plan: DayPlan) -> None:
    """CrashLoopBackOff episodes in application namespaces."""
    rng = keyed_rng(w.seed, day, T_CRASH)
    for j in range(int(rng.poisson(0.25))):
        ns = APP_NAMESPACES[int(rng.integers(0, len(APP_NAMESPACES)))]
        workload = NS_BY_NAME[ns].workloads[int(rng.integers(0, len(NS_BY_NAME[ns].workloads)))]
        t0 = day * DAY + int(rng.integers(30 * 60, 23 * 3600)) * SEC
        nodes = w.alive("general-purpose", t0 // HOUR)
        node = w.nodes[nodes[int(rng.integers(0, len(nodes)))]].name
        pod, owner = deployment_pod(w.seed, ns, workload, t0, "crash", day, j)
        restarts = int(rng.integers(5, 15))
        t1 = t0 + int(rng.integers(15, 110)) * MIN
        t2 = t1 + int(rng.integers(2, 10)) * MIN
        plan.raws.append(
            _pod_status(t0 + 90 * SEC, ns, pod, "Running", "CrashLoopBackOff", 3, node, owner)
        )
        plan.raws.append(
            _pod_status(t1, ns, pod, "Running", "CrashLoopBackOff", restarts, node, owner)
        )
        plan.raws.append(_pod_status(t2, ns, pod, "Running", None, restarts, node, owner))
        pod_uid = stable_uuid(w.seed, "Pod", ns, pod)
        msg = f"Back-off restarting failed container {workload} in pod {pod}_{ns}({pod_uid})"
        plan.raws.append(
            _kube_event(
                w.seed,
                reason="BackOff",
                message=msg,
                kind="Pod",
                name=pod,
                namespace=ns,
                component="kubelet",
                host=node,
                first_us=t0 + 40 * SEC,
                last_us=t1,
                count=restarts * 3,
                field_path=f"spec.containers{{{workload}}}",
            )
        )
        prod = ns in ("payments", "checkout")
        if rng.random() < (0.8 if prod else 0.45):
            note = "Secret rotated in Secrets Manager; ExternalSecret had not synced. Forced sync."
            plan.triggers.append(
                Trigger(
                    t0 + 4 * MIN,
                    "P1" if prod else "P2",
                    f"{workload} CrashLoopBackOff in {ns}",
                    "crashloop",
                    j,
                    ns,
                    workload,
                    note,
                )
            )


def noise_facts(w: World, day: int, plan: DayPlan) -> None:
    """Everyday warnings that open no incident: scale-up pending pods, restarts, image pulls."""
    rng = keyed_rng(w.seed, day, T_WARN)
    weekday = (day + 3) % 7 < 5
    if weekday and rng.random() < 0.6:
        t = day * DAY + int(rng.integers(12 * 3600 + 1800, 14 * 3600)) * SEC
        total = len(w.alive_all(t // HOUR))
        for j in range(int(rng.integers(1, 4))):
            ns = APP_NAMESPACES[int(rng.integers(0, len(APP_NAMESPACES)))]
            workload = NS_BY_NAME[ns].workloads[0]
            pod, _ = deployment_pod(w.seed, ns, workload, t, "scale", j)
            msg = (
                f"0/{total} nodes are available: {total - 3} Insufficient cpu, 3 node(s) had "
                "untolerated taint {CriticalAddonsOnly: }. preemption: 0/"
                f"{total} nodes are available: {total} No preemption victims found for "
                "incoming pod."
            )
            plan.raws.append(
                _kube_event(
                    w.seed,
                    reason="FailedScheduling",
                    message=msg,
                    kind="Pod",
                    name=pod,
                    namespace=ns,
                    component="default-scheduler",
                    host=None,
                    first_us=t + j * 7 * SEC,
                    last_us=t + int(rng.integers(40, 90)) * SEC,
                    count=int(rng.integers(1, 5)),
                )
            )
    for j in range(int(rng.poisson(0.9))):
        ns = APP_NAMESPACES[int(rng.integers(0, len(APP_NAMESPACES)))]
        workload = NS_BY_NAME[ns].workloads[int(rng.integers(0, len(NS_BY_NAME[ns].workloads)))]
        t = day * DAY + int(rng.integers(0, 86_340)) * SEC
        nodes = w.alive("general-purpose", t // HOUR)
        node = w.nodes[nodes[int(rng.integers(0, len(nodes)))]].name
        pod, owner = deployment_pod(w.seed, ns, workload, t, "restart", day, j)
        plan.raws.append(
            _pod_status(t, ns, pod, "Running", "Error", int(rng.integers(1, 3)), node, owner)
        )
    if rng.random() < 0.15:
        ns = APP_NAMESPACES[int(rng.integers(0, len(APP_NAMESPACES)))]
        workload = NS_BY_NAME[ns].workloads[0]
        t = day * DAY + int(rng.integers(0, 86_000)) * SEC
        pod, _ = deployment_pod(w.seed, ns, workload, t, "pull")
        image = (
            f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{workload}:v2.{int(rng.integers(3, 40))}.0"
        )
        plan.raws.append(
            _kube_event(
                w.seed,
                reason="BackOff",
                message=f'Back-off pulling image "{image}"',
                kind="Pod",
                name=pod,
                namespace=ns,
                component="kubelet",
                host=None,
                first_us=t,
                last_us=t + 6 * MIN,
                count=int(rng.integers(3, 12)),
                field_path=f"spec.containers{{{workload}}}",
            )
        )


def observed_nodes(w: World, since: dt.date, start_us: int) -> list[dict[str, Any]]:
    """Nodes already running when the collector starts, as its initial sync reports them."""
    tag = since.isoformat()
    out: list[dict[str, Any]] = []
    for i in w.alive_all(start_us // HOUR):
        node = w.nodes[i]
        if node.first_h * HOUR < start_us:
            out.append(
                node_status(
                    node, start_us, True, "KubeletReady", f"node/{node.name}/observed/{tag}"
                )
            )
    return out
