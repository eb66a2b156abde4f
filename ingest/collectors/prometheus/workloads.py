"""The default PromQL of the six per-container workload metrics (docs/collectors.md).

Each query yields one series per (namespace, pod, container), joined to one series per pod
from kube-state-metrics carrying `node` (when scheduled), `workload_kind` and `workload`:
the pod's controller, a ReplicaSet resolved to its Deployment and a Job to its CronJob, or
`Pod` + the pod's name when it has no controller.
"""

from __future__ import annotations

from typing import Final

CONTAINER_LABELS: Final = ("namespace", "pod", "container", "workload_kind", "workload", "node")
#: A container series without these is not a container: it is dropped.
CONTAINER_REQUIRED: Final = ("namespace", "pod", "container")

# cAdvisor: container!="" drops the pod and node cgroup aggregates, "POD" the pause
# containers of older runtimes.
_CADVISOR_FILTER: Final = 'container!="", container!="POD"'


def _named(expr: str, kind_label: str, name_label: str) -> str:
    """`expr` with `workload_kind` and `workload` copied from two of its labels."""
    return (
        f'label_replace(label_replace({expr}, "workload_kind", "$1", "{kind_label}", "(.+)"), '
        f'"workload", "$1", "{name_label}", "(.+)")'
    )


def _via_parent(child_kind: str, join_label: str, parent_metric: str, parent_kind: str) -> str:
    """Pods whose controller (`child_kind`) is itself controlled by a `parent_kind`."""
    parent = _named(
        f'{parent_metric}{{owner_kind="{parent_kind}", owner_is_controller="true"}}',
        "owner_kind",
        "owner_name",
    )
    # topk keeps the join one-to-one when two kube-state-metrics replicas report the parent.
    parents = (
        f"topk by (namespace, {join_label}) (1, "
        f"group by (namespace, {join_label}, workload_kind, workload) ({parent}))"
    )
    pods = (
        "label_replace(kube_pod_owner"
        f'{{owner_kind="{child_kind}", owner_is_controller="true"}}, '
        f'"{join_label}", "$1", "owner_name", "(.+)")'
    )
    return (
        "group by (namespace, pod, workload_kind, workload) ("
        f"{pods} * on (namespace, {join_label}) group_left (workload_kind, workload) {parents})"
    )


# The pod's controller, resolved: the first alternative that knows the pod wins (`or`).
_DEPLOYMENT_PODS: Final = _via_parent(
    "ReplicaSet", "replicaset", "kube_replicaset_owner", "Deployment"
)
_CRONJOB_PODS: Final = _via_parent("Job", "job_name", "kube_job_owner", "CronJob")
# StatefulSet, DaemonSet, a ReplicaSet without a Deployment, a Job without a CronJob, and any
# custom controller: its own kind and name. `<none>` is how kube-state-metrics says "no owner".
_CONTROLLED_PODS: Final = (
    "group by (namespace, pod, workload_kind, workload) ("
    + _named(
        'kube_pod_owner{owner_is_controller="true", owner_kind!="<none>"}',
        "owner_kind",
        "owner_name",
    )
    + ")"
)
CONTROLLERS: Final = (
    f"topk by (namespace, pod) (1, {_DEPLOYMENT_PODS} or on (namespace, pod) {_CRONJOB_PODS} "
    f"or on (namespace, pod) {_CONTROLLED_PODS})"
)
# One series per pod kube-state-metrics reports, with `node` once it is scheduled (a pod
# being scheduled briefly has both kube_pod_info series: the one with a node wins).
PODS: Final = (
    'topk by (namespace, pod) (1, group by (namespace, pod, node) (kube_pod_info{node!=""}) '
    "or on (namespace, pod) group by (namespace, pod) (kube_pod_info))"
)
#: One series per pod: `node` when known, `workload_kind` and `workload` (a pod without a
#: controller is `Pod` + its name).
POD_INFO: Final = (
    f"{CONTROLLERS} * on (namespace, pod) group_left (node) {PODS} or on (namespace, pod) "
    f'label_replace(label_replace({PODS}, "workload_kind", "Pod", "", ""), '
    '"workload", "$1", "pod", "(.+)")'
)


def with_pod_info(expr: str) -> str:
    """`expr` (one series per container) with the pod's node and workload labels.

    A container of a pod kube-state-metrics does not report (yet, or any more) keeps its
    series without them rather than being dropped or guessed at.
    """
    return (
        f"({expr}) * on (namespace, pod) group_left (node, workload_kind, workload) "
        f"({POD_INFO}) or on (namespace, pod, container) ({expr})"
    )


def _resource(kind: str, resource: str, unit: str) -> str:
    # max: one series per container when two kube-state-metrics replicas report it. Only
    # pods that hold their requests and limits: Pending and Running.
    return (
        "max by (namespace, pod, container) "
        f'(kube_pod_container_resource_{kind}{{resource="{resource}", unit="{unit}"}}) '
        "* on (namespace, pod) group_left () "
        'max by (namespace, pod) (kube_pod_status_phase{phase=~"Pending|Running"} == 1)'
    )


#: metric name → default PromQL.
WORKLOAD_QUERIES: Final[dict[str, str]] = {
    # sum: the container's cgroups add up (like the namespace sums, so containers add up to
    # their namespace).
    "container_cpu_usage_cores": with_pod_info(
        "sum by (namespace, pod, container) "
        f"(rate(container_cpu_usage_seconds_total{{{_CADVISOR_FILTER}}}[5m]))"
    ),
    "container_memory_working_set_bytes": with_pod_info(
        "sum by (namespace, pod, container) "
        f"(container_memory_working_set_bytes{{{_CADVISOR_FILTER}}})"
    ),
    "container_cpu_requests_cores": with_pod_info(_resource("requests", "cpu", "core")),
    "container_memory_requests_bytes": with_pod_info(_resource("requests", "memory", "byte")),
    "container_cpu_limits_cores": with_pod_info(_resource("limits", "cpu", "core")),
    "container_memory_limits_bytes": with_pod_info(_resource("limits", "memory", "byte")),
}
