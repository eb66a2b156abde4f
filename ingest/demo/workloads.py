"""The namespaces' workloads: kind, replicas, containers, usage shares and how they request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from ingest.demo.catalogue import INSTANCE_TYPES, NS_BY_NAME, POOLS, Namespace, Pool
from ingest.demo.units import GIB

MIB: Final = 2**20


@dataclass(frozen=True, slots=True)
class Container:
    """A container of a workload's pods: its part of the pod's usage and of its requests."""

    name: str
    share: float = 1.0
    requests: bool = True
    #: Limits as multiples of the request (None: no limit, the usual for CPU).
    cpu_limit: float | None = None
    mem_limit: float | None = None


@dataclass(frozen=True, slots=True)
class Workload:
    """A workload, how its pods share the namespace's usage and what they request.

    `cpu` and `mem` are its share of the namespace's usage. A pod requests `cpu_ratio` times
    what one pod uses at the reference month's weekday peak (CPU) and `mem_ratio` times its
    peak working set (memory): about twice what it uses on average. `replicas` is the
    count at that peak (Deployment; it scales with its pool's allocatable), the fixed count
    (StatefulSet) or the parallelism (CronJob). `request` fixes the per-pod requests (cores,
    bytes) instead; `per_node`: one pod per node of the pool (a GPU each).
    """

    namespace: str
    name: str
    replicas: int
    cpu: float
    mem: float
    kind: str = "Deployment"
    cpu_ratio: float = 1.25
    mem_ratio: float = 1.5
    containers: tuple[Container, ...] = ()
    min_replicas: int = 1
    request: tuple[float, int] | None = None
    per_node: bool = False
    #: Takes its namespace's share of a hot window's surge (the batch jobs that make it).
    surge: bool = False

    def __post_init__(self) -> None:
        if not self.containers:
            # One container named after the workload unless they are listed.
            object.__setattr__(self, "containers", (Container(self.name),))

    @property
    def pod_containers(self) -> tuple[Container, ...]:
        """The containers of a pod."""
        return self.containers


_PROM = "prometheus-kube-prometheus-stack-prometheus"

WORKLOADS: Final = (
    # system pool: EKS Auto Mode's built-in pool for critical add-ons
    Workload("kube-system", "coredns", 2, 0.55, 0.45, min_replicas=2),
    Workload("kube-system", "metrics-server", 1, 0.45, 0.55),
    Workload("istio-system", "istiod", 2, 0.5, 0.6, min_replicas=2),
    Workload(
        "istio-system",
        "istio-ingressgateway",
        3,
        0.5,
        0.4,
        cpu_ratio=1.5,
        min_replicas=2,
        containers=(Container("istio-proxy", cpu_limit=2.0, mem_limit=1.0),),
    ),
    Workload("keda", "keda-operator", 1, 0.6, 0.6),
    Workload("keda", "keda-metrics-apiserver", 1, 0.4, 0.4),
    Workload("external-secrets", "external-secrets", 1, 1.0, 1.0),
    Workload("cert-manager", "cert-manager", 1, 0.7, 0.7),
    Workload("cert-manager", "cert-manager-webhook", 1, 0.3, 0.3),
    Workload("argocd", "argocd-repo-server", 2, 0.7, 0.6, cpu_ratio=2.2, min_replicas=2),
    Workload("argocd", "argocd-server", 1, 0.3, 0.4, cpu_ratio=1.05, mem_ratio=1.35),
    # general-purpose: EKS Auto Mode's built-in pool
    Workload("prometheus", "kube-state-metrics", 1, 0.06, 0.04),
    Workload(
        "prometheus",
        "grafana",
        1,
        0.08,
        0.06,
        # The dashboard sidecar ships without requests or limits (the chart's default).
        containers=(
            Container("grafana", 0.8),
            Container("grafana-sc-dashboard", 0.2, requests=False),
        ),
    ),
    Workload("prometheus", "prometheus-operator", 1, 0.03, 0.02),
    Workload(
        "prometheus",
        _PROM,
        2,
        0.50,
        0.55,
        kind="StatefulSet",
        cpu_ratio=1.4,
        mem_ratio=1.6,
        containers=(
            Container("prometheus", 0.96, mem_limit=1.0),
            Container("config-reloader", 0.04, cpu_limit=2.0, mem_limit=1.0),
        ),
    ),
    Workload("prometheus", "loki", 3, 0.30, 0.32, kind="StatefulSet"),
    Workload(
        "prometheus",
        "prometheus-node-exporter",
        0,
        0.03,
        0.01,
        kind="DaemonSet",
        request=(0.05, 128 * MIB),
        containers=(Container("node-exporter"),),
    ),
    Workload(
        "payments",
        "payments-api",
        5,
        0.55,
        0.5,
        cpu_ratio=1.9,
        mem_ratio=1.7,
        min_replicas=3,
        containers=(Container("payments-api", mem_limit=1.0),),
    ),
    Workload(
        "payments",
        "payments-worker",
        3,
        0.45,
        0.5,
        min_replicas=2,
    ),
    Workload("checkout", "checkout-api", 5, 0.6, 0.55, cpu_ratio=1.6, min_replicas=3),
    Workload("checkout", "cart-service", 3, 0.4, 0.45),
    Workload("catalog", "catalog-api", 4, 0.55, 0.5, min_replicas=2),
    Workload(
        "catalog",
        "image-resizer",
        4,
        0.45,
        0.5,
        cpu_ratio=1.8,
        mem_ratio=1.7,
        containers=(Container("image-resizer", cpu_limit=2.0, mem_limit=1.5),),
    ),
    Workload("orders", "orders-api", 5, 0.5, 0.55, cpu_ratio=1.8, mem_ratio=1.7, min_replicas=3),
    # Sized before the Kafka topic grew: it needs more CPU than it asks for (throttled).
    Workload(
        "orders",
        "orders-consumer",
        3,
        0.5,
        0.45,
        cpu_ratio=0.75,
        mem_ratio=1.6,
        min_replicas=2,
    ),
    Workload("notifications", "notification-dispatcher", 2, 0.6, 0.6, min_replicas=2),
    Workload("notifications", "email-sender", 2, 0.4, 0.4),
    Workload("web-frontend", "web-frontend", 6, 1.0, 1.0, min_replicas=3),
    # memory-optimized: custom NodePool, limits in ingest/demo/nodepools.py
    Workload("search", "search-indexer", 3, 0.6, 0.5),
    Workload("search", "search-api", 3, 0.4, 0.5),
    # Sized for the nightly load; the batch surges of the hot windows are theirs (OOM kills).
    Workload(
        "data-pipeline",
        "spark-executor",
        5,
        0.6,
        0.6,
        cpu_ratio=1.3,
        mem_ratio=1.1,
        surge=True,
    ),
    Workload("data-pipeline", "kafka-connect", 2, 0.25, 0.25),
    Workload("data-pipeline", "nightly-compaction", 2, 0.12, 0.12, kind="CronJob"),
    # gpu: custom NodePool pinned at its limit; one inference server per GPU
    Workload(
        "ml-inference",
        "triton-server",
        0,
        0.85,
        0.9,
        request=(6.0, 24 * GIB),
        per_node=True,
        containers=(Container("triton-server", mem_limit=1.2),),
    ),
    Workload(
        "ml-inference",
        "embedding-service",
        2,
        0.15,
        0.1,
        min_replicas=2,
        request=(1.5, 4 * GIB),
    ),
)
#: The namespace whose batch jobs make the memory-optimized pool's hot windows.
SURGE_NAMESPACE: Final = "data-pipeline"
WORKLOAD_INDEX: Final = {(w.namespace, w.name): i for i, w in enumerate(WORKLOADS)}
POOL_BY_NAME: Final = {p.name: p for p in POOLS}

#: The CronJob's schedule: daily at 01:00 UTC, its Job runs for three hours.
CRON_START_H: Final = 1
CRON_HOURS: Final = 3


def _ref_alloc(pool: Pool) -> tuple[float, float]:
    """The pool's allocatable (cores, bytes) at its base size and instance mix."""
    cpu = sum(INSTANCE_TYPES[t].cpu_alloc * wt for t, wt in pool.types)
    mem = sum(INSTANCE_TYPES[t].mem_alloc * wt for t, wt in pool.types)
    return pool.base_nodes * cpu, pool.base_nodes * float(mem)


def _ns_share(ns: Namespace, attr: str) -> float:
    """The namespace's share of its pool, normalised over the pool's namespaces."""
    total = sum(float(getattr(n, attr)) for n in NS_BY_NAME.values() if n.pool == ns.pool)
    return float(getattr(ns, attr)) / total


#: The share of a pool's usage its namespaces' containers account for (ingest/demo/samples.py).
ATTRIBUTED: Final = 0.9


def _per_pod_requests(w: Workload) -> tuple[float, float]:
    """(cores, bytes) one pod requests at the reference load, before deploy steps."""
    if w.request is not None:
        return w.request
    ns = NS_BY_NAME[w.namespace]
    pool = POOL_BY_NAME[ns.pool]
    cpu_a, mem_a = _ref_alloc(pool)
    n = max(w.replicas, 1)
    cpu_peak = cpu_a * sum(pool.cpu) * ATTRIBUTED * _ns_share(ns, "cpu_share") * w.cpu / n
    mem_peak = mem_a * sum(pool.mem) * ATTRIBUTED * _ns_share(ns, "mem_share") * w.mem / n
    return cpu_peak * w.cpu_ratio, mem_peak * w.mem_ratio


#: Per workload: (cores, bytes) per pod at the reference load.
PER_POD: Final = np.array([_per_pod_requests(w) for w in WORKLOADS])
#: The reference allocatable (cores, bytes) of each pool, what `replicas` is sized for.
REF_ALLOC: Final = {p.name: _ref_alloc(p) for p in POOLS}
