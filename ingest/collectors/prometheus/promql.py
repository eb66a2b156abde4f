"""The default PromQL for each canonical metric, and the labels each metric keeps."""

from __future__ import annotations

from typing import Final

from ingest.collectors.prometheus.workloads import (
    CONTAINER_LABELS,
    CONTAINER_REQUIRED,
    WORKLOAD_QUERIES,
)

NODE_LABELS: Final = ("node", "nodepool", "zone")
NAMESPACE_LABELS: Final = ("namespace",)
PVC_LABELS: Final = ("namespace", "persistentvolumeclaim")

#: The labels a canonical metric's series keep (all others are dropped) and, first, the ones
#: a series must have: `node` for node metrics (`nodepool` and `zone` are kept when known);
#: namespace, pod and container for container metrics (workload and node when known).
CANONICAL_LABELS: Final[dict[str, tuple[str, ...]]] = {
    "node_cpu_usage_cores": NODE_LABELS,
    "node_cpu_allocatable_cores": NODE_LABELS,
    "node_memory_usage_bytes": NODE_LABELS,
    "node_memory_allocatable_bytes": NODE_LABELS,
    "namespace_cpu_usage_cores": NAMESPACE_LABELS,
    "namespace_cpu_requests_cores": NAMESPACE_LABELS,
    "namespace_memory_usage_bytes": NAMESPACE_LABELS,
    "namespace_memory_requests_bytes": NAMESPACE_LABELS,
    "namespace_pod_count": NAMESPACE_LABELS,
    "pvc_used_bytes": PVC_LABELS,
    "pvc_capacity_bytes": PVC_LABELS,
    **dict.fromkeys(WORKLOAD_QUERIES, CONTAINER_LABELS),
}
_REQUIRED_OF: Final = {NODE_LABELS: ("node",), CONTAINER_LABELS: CONTAINER_REQUIRED}
REQUIRED_LABELS: Final[dict[str, tuple[str, ...]]] = {
    name: _REQUIRED_OF.get(labels, labels) for name, labels in CANONICAL_LABELS.items()
}

# One series per node carrying `nodepool` and `zone`, from kube-state-metrics' node labels
# (exported with --metric-labels-allowlist=nodes=[karpenter.sh/nodepool,
# eks.amazonaws.com/nodegroup,topology.kubernetes.io/zone]). The Karpenter / EKS Auto Mode
# node pool wins over a managed node group's name; topk keeps the join one-to-one even
# when two kube-state-metrics replicas report a node.
NODE_INFO: Final = (
    "topk by (node) (1, max by (node, nodepool, zone) ("
    "label_replace(label_replace(label_replace(kube_node_labels, "
    '"nodepool", "$1", "label_eks_amazonaws_com_nodegroup", "(.+)"), '
    '"nodepool", "$1", "label_karpenter_sh_nodepool", "(.+)"), '
    '"zone", "$1", "label_topology_kubernetes_io_zone", "(.+)")))'
)


def with_node_labels(expr: str) -> str:
    """`expr` (one series per `node`) with `nodepool` and `zone`; unlabelled nodes are kept."""
    return f"({expr}) * on (node) group_left (nodepool, zone) {NODE_INFO} or on (node) ({expr})"


def by_node_from_instance(expr: str) -> str:
    """Name node-exporter series by node: `node_uname_info`'s `nodename` is the node's name."""
    return (
        f"max by (node) (label_replace(({expr}) * on (instance) group_left (nodename) "
        f'topk by (instance) (1, node_uname_info), "node", "$1", "nodename", "(.+)"))'
    )


def _requests(resource: str, unit: str) -> str:
    # Only pods that hold their requests: Pending and Running (not Succeeded or Failed).
    return (
        "sum by (namespace) ("
        f'kube_pod_container_resource_requests{{resource="{resource}", unit="{unit}"}} '
        "* on (namespace, pod) group_left () "
        'max by (namespace, pod) (kube_pod_status_phase{phase=~"Pending|Running"} == 1))'
    )


#: metric name → the default PromQL (see docs/collectors.md, "Prometheus" for each choice).
DEFAULT_QUERIES: Final[dict[str, str]] = {
    # node-exporter: the whole node's busy CPU (system daemons and kubelet included), the
    # figure `kubectl top nodes` shows; iowait and steal are time the CPU did not work.
    "node_cpu_usage_cores": with_node_labels(
        by_node_from_instance(
            'sum without (cpu, mode) (rate(node_cpu_seconds_total{mode!~"idle|iowait|steal"}[5m]))'
        )
    ),
    "node_cpu_allocatable_cores": with_node_labels(
        'max by (node) (kube_node_status_allocatable{resource="cpu", unit="core"})'
    ),
    "node_memory_usage_bytes": with_node_labels(
        by_node_from_instance("node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes")
    ),
    "node_memory_allocatable_bytes": with_node_labels(
        'max by (node) (kube_node_status_allocatable{resource="memory", unit="byte"})'
    ),
    # cAdvisor (kubelet): container!="" drops the pod and node cgroup aggregates, "POD" the
    # pause containers of older runtimes.
    "namespace_cpu_usage_cores": (
        "sum by (namespace) "
        '(rate(container_cpu_usage_seconds_total{container!="", container!="POD"}[5m]))'
    ),
    "namespace_cpu_requests_cores": _requests("cpu", "core"),
    "namespace_memory_usage_bytes": (
        'sum by (namespace) (container_memory_working_set_bytes{container!="", container!="POD"})'
    ),
    "namespace_memory_requests_bytes": _requests("memory", "byte"),
    "namespace_pod_count": "count by (namespace) (max by (namespace, pod) (kube_pod_info))",
    # kubelet volume stats; max keeps one series per claim when two kubelets report it.
    "pvc_used_bytes": (
        "max by (namespace, persistentvolumeclaim) (kubelet_volume_stats_used_bytes)"
    ),
    "pvc_capacity_bytes": (
        "max by (namespace, persistentvolumeclaim) (kubelet_volume_stats_capacity_bytes)"
    ),
    # One series per container, with its pod's node and workload (workloads.py).
    **WORKLOAD_QUERIES,
}
