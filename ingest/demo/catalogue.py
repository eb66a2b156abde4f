"""The demo cluster's names: account, zones, instance types, node pools, namespaces, PVCs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ingest.demo.units import DAY, utc_us

DEMO_SOURCE_PREFIX: Final = "opsledger-demo"
CLUSTER: Final = "enhanced-eks-cluster"
REGION: Final = "us-gov-west-1"
ACCOUNT: Final = "123456789012"
ZONES: Final = ("us-gov-west-1a", "us-gov-west-1b", "us-gov-west-1c")


@dataclass(frozen=True, slots=True)
class InstanceType:
    """An EC2 instance type with its EKS allocatable resources and GovCloud on-demand price."""

    name: str
    vcpu: int
    mem_gib: int
    max_pods: int
    usd_hour: float

    @property
    def cpu_alloc(self) -> float:
        """vCPUs minus the EKS kube-reserved CPU ladder (6%, 1%, 0.5% x2, then 0.25%)."""
        reserved = 0.06 + 0.01 + 0.005 * 2 + 0.0025 * max(0, self.vcpu - 4)
        return round(self.vcpu - reserved, 3)

    @property
    def mem_alloc(self) -> int:
        """Memory minus hypervisor overhead, kube-reserved (255Mi + 11Mi/pod) and eviction."""
        mib = int(self.mem_gib * 1024 * 0.96) - (255 + 11 * self.max_pods) - 100
        return mib * 1024 * 1024


INSTANCE_TYPES: Final = {
    t.name: t
    for t in (
        InstanceType("m6i.xlarge", 4, 16, 58, 0.242),
        InstanceType("m6i.2xlarge", 8, 32, 58, 0.484),
        InstanceType("m7i.2xlarge", 8, 32, 58, 0.508),
        InstanceType("c6i.2xlarge", 8, 16, 58, 0.408),
        InstanceType("m6i.4xlarge", 16, 64, 234, 0.968),
        InstanceType("r6i.2xlarge", 8, 64, 58, 0.635),
        InstanceType("r6i.4xlarge", 16, 128, 234, 1.270),
        InstanceType("g5.2xlarge", 8, 32, 58, 1.464),
    )
}


@dataclass(frozen=True, slots=True)
class Pool:
    """An EKS Auto Mode node pool and how its size and utilisation follow the load."""

    name: str
    types: tuple[tuple[str, float], ...]
    base_nodes: float
    swing: float
    min_nodes: int
    max_nodes: int
    cpu: tuple[float, float]
    mem: tuple[float, float]
    commit: float


POOLS: Final = (
    Pool("system", (("m6i.xlarge", 1.0),), 3, 0.0, 3, 3, (0.28, 0.10), (0.44, 0.05), 0.70),
    Pool(
        "general-purpose",
        (("m6i.2xlarge", 0.5), ("m7i.2xlarge", 0.2), ("c6i.2xlarge", 0.15), ("m6i.4xlarge", 0.15)),
        40,
        0.45,
        22,
        44,
        (0.40, 0.12),
        (0.38, 0.10),
        0.80,
    ),
    Pool(
        "memory-optimized",
        (("r6i.2xlarge", 0.7), ("r6i.4xlarge", 0.3)),
        7,
        0.40,
        4,
        8,
        (0.45, 0.15),
        (0.52, 0.08),
        0.82,
    ),
    # Pinned at its NodePool limit (ingest/demo/nodepools.py): base and swing are not used.
    Pool("gpu", (("g5.2xlarge", 1.0),), 3, 0.0, 2, 8, (0.30, 0.30), (0.60, 0.10), 0.80),
)
POOL_INDEX: Final = {p.name: i for i, p in enumerate(POOLS)}
#: The pool that runs hot: batch jobs hit its NodePool limit (`max_nodes`).
HOT_POOL: Final = "memory-optimized"
#: The pool whose demand exceeds its NodePool limit: it runs as many nodes as the limit allows.
GPU_POOL: Final = "gpu"


@dataclass(frozen=True, slots=True)
class Namespace:
    """A namespace, the pool its pods run on, its share of that pool and its workloads."""

    name: str
    pool: str
    cpu_share: float
    mem_share: float
    cpu_per_pod: float
    workloads: tuple[str, ...]


NAMESPACES: Final = (
    Namespace("kube-system", "system", 0.30, 0.30, 0.10, ("coredns", "metrics-server")),
    Namespace("istio-system", "system", 0.30, 0.25, 0.25, ("istiod", "istio-ingressgateway")),
    Namespace("keda", "system", 0.10, 0.10, 0.10, ("keda-operator", "keda-metrics-apiserver")),
    Namespace("external-secrets", "system", 0.08, 0.10, 0.05, ("external-secrets",)),
    Namespace("cert-manager", "system", 0.07, 0.10, 0.05, ("cert-manager", "cert-manager-webhook")),
    Namespace("argocd", "system", 0.15, 0.15, 0.15, ("argocd-repo-server", "argocd-server")),
    Namespace(
        "prometheus",
        "general-purpose",
        0.08,
        0.10,
        1.00,
        (
            "kube-state-metrics",
            "grafana",
            "prometheus-operator",
            "prometheus-kube-prometheus-stack-prometheus",
            "loki",
            "prometheus-node-exporter",
        ),
    ),
    Namespace("payments", "general-purpose", 0.18, 0.14, 0.50, ("payments-api", "payments-worker")),
    Namespace("checkout", "general-purpose", 0.18, 0.14, 0.50, ("checkout-api", "cart-service")),
    Namespace("catalog", "general-purpose", 0.12, 0.12, 0.25, ("catalog-api", "image-resizer")),
    Namespace("orders", "general-purpose", 0.16, 0.14, 0.50, ("orders-api", "orders-consumer")),
    Namespace(
        "notifications",
        "general-purpose",
        0.07,
        0.06,
        0.25,
        ("notification-dispatcher", "email-sender"),
    ),
    Namespace("web-frontend", "general-purpose", 0.17, 0.20, 0.25, ("web-frontend",)),
    Namespace("search", HOT_POOL, 0.45, 0.50, 2.00, ("search-indexer", "search-api")),
    Namespace(
        "data-pipeline",
        HOT_POOL,
        0.55,
        0.50,
        1.50,
        ("spark-executor", "kafka-connect", "nightly-compaction"),
    ),
    Namespace("ml-inference", "gpu", 1.00, 1.00, 4.00, ("triton-server", "embedding-service")),
)
APP_NAMESPACES: Final = ("payments", "checkout", "catalog", "orders", "notifications")
NS_BY_NAME: Final = {n.name: n for n in NAMESPACES}


@dataclass(frozen=True, slots=True)
class Pvc:
    """A PersistentVolumeClaim and its growth model.

    "grow": used grows linearly (`rate` x the initial capacity per day) and the volume is
    doubled whenever it reaches `expand_fill` (the first time at `expand_at`); `expand_at`
    None means seed-drawn parameters of a quiet volume. "sawtooth": daily log rotation.
    """

    namespace: str
    name: str
    cap_gib: int
    kind: str = "grow"
    expand_at: int | None = None
    rate: float = 0.0
    expand_fill: float = 0.94
    gappy: bool = False


def _hot_pvc(ns: str, name: str, gib: int, fill: float, at: str, rate: float) -> Pvc:
    """A volume whose fill reaches `fill` at `at`, growing `rate` of its capacity per day."""
    expand_at = utc_us(at) + round((0.94 - fill) / rate * DAY)
    return Pvc(ns, name, gib, expand_at=expand_at, rate=rate)


_PROM = "prometheus-kube-prometheus-stack-prometheus-db-prometheus-kube-prometheus-stack-prometheus"
PVCS: Final = (
    _hot_pvc("prometheus", f"{_PROM}-0", 200, 0.90, "2026-11-21T10:00:00", 0.004),
    Pvc("prometheus", f"{_PROM}-1", 200),
    *(Pvc("prometheus", f"storage-loki-{i}", 100) for i in range(3)),
    Pvc(
        "prometheus",
        "alertmanager-kube-prometheus-stack-alertmanager-db-"
        "alertmanager-kube-prometheus-stack-alertmanager-0",
        10,
    ),
    Pvc("prometheus", "kube-prometheus-stack-grafana", 10),
    Pvc("prometheus", "storage-tempo-0", 50),
    _hot_pvc("payments", "data-payments-postgres-0", 200, 0.78, "2026-11-26T00:00:00", 0.0015),
    Pvc("payments", "data-payments-postgres-1", 200),
    Pvc("payments", "redis-data-payments-redis-master-0", 20),
    *(Pvc("payments", f"data-payments-vault-{i}", 10) for i in range(3)),
    *(Pvc("checkout", f"data-checkout-postgres-{i}", 100) for i in range(2)),
    Pvc("checkout", "redis-data-checkout-redis-master-0", 20),
    Pvc("checkout", "data-checkout-rabbitmq-0", 20),
    # Resized mid-history: 100Gi -> 200Gi once it passed 91 %.
    Pvc(
        "orders",
        "data-orders-postgres-0",
        100,
        expand_at=utc_us("2026-10-28T15:00:00"),
        rate=0.005,
        expand_fill=0.91,
    ),
    *(Pvc("orders", f"data-orders-postgres-{i}", 100) for i in (1, 2)),
    Pvc("orders", "redis-data-orders-redis-master-0", 20),
    *(Pvc("catalog", f"datadir-catalog-mongodb-{i}", 100) for i in range(3)),
    Pvc("catalog", "catalog-images", 50),
    *(Pvc("notifications", f"data-rabbitmq-{i}", 20, gappy=i == 1) for i in range(3)),
    Pvc("web-frontend", "web-frontend-uploads", 50),
    Pvc("argocd", "data-argocd-redis-ha-server-0", 10),
    *(Pvc("search", f"data-opensearch-master-{i}", 50) for i in range(3)),
    *(Pvc("search", f"data-opensearch-data-{i}", 500) for i in (0, 1, 2, 4, 5)),
    _hot_pvc("search", "data-opensearch-data-3", 500, 0.85, "2026-11-14T08:00:00", 0.0025),
    *(Pvc("data-pipeline", f"data-kafka-{i}", 500) for i in (0, 2)),
    _hot_pvc("data-pipeline", "data-kafka-1", 500, 0.85, "2026-11-23T06:00:00", 0.003),
    *(Pvc("data-pipeline", f"data-zookeeper-{i}", 10, gappy=i == 2) for i in range(3)),
    *(Pvc("data-pipeline", f"data-minio-{i}", 1024) for i in range(4)),
    *(Pvc("data-pipeline", f"data-clickhouse-{i}", 200) for i in (0, 1, 3)),
    _hot_pvc("data-pipeline", "data-clickhouse-2", 200, 0.80, "2026-11-26T00:00:00", 0.003),
    Pvc("data-pipeline", "airflow-logs", 50, kind="sawtooth"),
    Pvc("data-pipeline", "airflow-dags", 20),
    Pvc("data-pipeline", "spark-history", 50),
    *(Pvc("ml-inference", f"model-cache-triton-server-{i}", 200, gappy=i == 2) for i in range(3)),
)
