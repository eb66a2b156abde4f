"""A deterministic, realistic demo history of one EKS cluster, as contract-valid ledger events.

Every event is a pure function of the seed and its own time slot (an hour of samples, a day of
facts, a month of budget), never of `since`, `now` or what was generated before it, so a later
run with a larger `now` only appends what is new and never conflicts with an earlier one. The
only exceptions are the "observed at the start" facts (SLA policy, budget, nodes already
running), whose ids carry the start date, as a collector's initial sync would.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from store.contract import Event, batch_from_columns, event_to_cloudevent, samples_event
from store.contract import validate_event as _validate
from store.ledger import Ledger
from store.timefmt import datetime_to_us, format_us, parse_rfc3339_us, us_to_datetime

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DEMO_SOURCE_PREFIX: Final = "opsledger-demo"
CLUSTER: Final = "enhanced-eks-cluster"
REGION: Final = "us-gov-west-1"
ACCOUNT: Final = "123456789012"
ZONES: Final = ("us-gov-west-1a", "us-gov-west-1b", "us-gov-west-1c")
MAX_BATCH: Final = 2000

_SEC: Final = 1_000_000
_MIN: Final = 60 * _SEC
_HOUR: Final = 60 * _MIN
_DAY: Final = 24 * _HOUR
_TICK: Final = 5 * _MIN
_TICKS: Final = 12
_GIB: Final = 1024**3
#: EKS Auto Mode replaces every node after 14 days (NodePool `expireAfter: 336h`).
_ROTATE_H: Final = 336


def _utc_us(text: str) -> int:
    """Microseconds of a naive ISO timestamp read as UTC."""
    return datetime_to_us(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC))


#: Load and growth are anchored here (the reference month of the demo), not at `since`.
_REF_US: Final = _utc_us("2026-10-01T00:00:00")

#: Random-stream tags: each kind of fact draws from its own `default_rng([seed, slot, tag])`.
_T_NODES, _T_FLAP, _T_HOT, _T_SAMPLES, _T_STEP, _T_CRASH = 1, 2, 3, 4, 5, 6
_T_WARN, _T_FIND, _T_INCIDENT, _T_COST, _T_GAP, _T_PVC, _T_ADHOC = 7, 8, 9, 10, 11, 12, 13

SLA_POLICY: Final[dict[str, Any]] = {
    "timezone": "America/New_York",
    "business_hours": {
        "days": ["mon", "tue", "wed", "thu", "fri"],
        "start": "09:00",
        "end": "17:00",
    },
    "holidays": ["2026-11-26"],
    "response": {"P0": "15m", "P1": "1h", "P2": "4h", "P3": "next_business_day"},
    "resolution": {"P0": "4h", "P1": "8h"},
}
_NY: Final = ZoneInfo("America/New_York")
_HOLIDAYS: Final = frozenset(dt.date.fromisoformat(d) for d in SLA_POLICY["holidays"])
_SEVERITIES: Final = ("P0", "P1", "P2", "P3")
_RESPONSE_MIN: Final = {"P0": 15, "P1": 60, "P2": 240}
ONCALL: Final = (
    "maria.garcia",
    "james.chen",
    "aisha.okafor",
    "tom.kowalski",
    "priya.raman",
    "lucas.silva",
)


@dataclass(frozen=True, slots=True)
class DemoTotals:
    """What a demo load did: events accepted and already present, events and samples generated."""

    accepted: int
    duplicates: int
    events: int
    samples: int


# -- small helpers -------------------------------------------------------------------------------


def _rng(*key: int) -> np.random.Generator:
    """A random stream keyed by (seed, slot, tag, ...): independent of anything drawn before."""
    return np.random.default_rng(list(key))


def _hex(*parts: object) -> str:
    """A stable 32-hex-digit digest of the parts."""
    return hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=16).hexdigest()


def _unit(*parts: object) -> float:
    """A stable number in [0, 1) derived from the parts."""
    return int(_hex(*parts)[:13], 16) / 16**13


def _uuid(*parts: object) -> str:
    """A stable version-4-shaped UUID derived from the parts."""
    return str(uuid.UUID(bytes=bytes.fromhex(_hex(*parts)), version=4))


def _tag(text: str) -> int:
    """A stable small integer for a text tag (random-stream keys must be integers)."""
    return zlib.crc32(text.encode())


def _k8s_suffix(length: int, *parts: object) -> str:
    """A name suffix in the alphabet Kubernetes uses for generated names."""
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    n = int(_hex(*parts), 16)
    out = []
    for _ in range(length):
        n, r = divmod(n, len(alphabet))
        out.append(alphabet[r])
    return "".join(out)


def _ts(us: int) -> str:
    """Kubernetes timestamps have whole seconds."""
    return format_us(us - us % _SEC)


def _day_of(us: int) -> int:
    """The UTC day number (days since the epoch) of an instant."""
    return us // _DAY


def _month_start(day: dt.date) -> dt.date:
    """The first day of the day's month."""
    return day.replace(day=1)


def _next_month(day: dt.date) -> dt.date:
    """The first day of the next month."""
    return (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def _date_us(day: dt.date) -> int:
    """Midnight UTC of a date, in microseconds."""
    return datetime_to_us(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC))


def default_since(now_us: int) -> dt.date:
    """The first day of the calendar month before `now` (UTC)."""
    today = us_to_datetime(now_us).date()
    return (_month_start(today) - dt.timedelta(days=1)).replace(day=1)


# -- business calendar (the SLA policy's) ---------------------------------------------------------


def _business_day(day: dt.date) -> bool:
    """A workday of the policy that is not one of its holidays."""
    return day.weekday() < 5 and day not in _HOLIDAYS


def _local_us(day: dt.date, hour: int) -> int:
    """An hour of a day in the policy's time zone, in UTC microseconds."""
    return datetime_to_us(dt.datetime(day.year, day.month, day.day, hour, tzinfo=_NY))


def _first_business_day_after(t_us: int) -> dt.date:
    """The first business day whose business hours begin after t."""
    day = us_to_datetime(t_us).astimezone(_NY).date()
    while not (_business_day(day) and _local_us(day, 9) > t_us):
        day += dt.timedelta(days=1)
    return day


def _in_business_hours(t_us: int) -> bool:
    """Whether t falls inside the policy's business hours."""
    local = us_to_datetime(t_us).astimezone(_NY)
    return _business_day(local.date()) and 9 <= local.hour < 17


def _p3_due(opened_us: int) -> int:
    """Close of the first business day that begins after the incident opened."""
    return _local_us(_first_business_day_after(opened_us), 17)


def _oncall(seed: int, t_us: int) -> str:
    """The primary on-call engineer: a weekly rotation."""
    return ONCALL[(t_us // (7 * _DAY) + seed) % len(ONCALL)]


# -- cluster shape --------------------------------------------------------------------------------


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
    Pool("system", (("m6i.xlarge", 1.0),), 3, 0.0, 3, 3, (0.28, 0.10), (0.55, 0.05), 0.70),
    Pool(
        "general-purpose",
        (("m6i.2xlarge", 0.5), ("m7i.2xlarge", 0.2), ("c6i.2xlarge", 0.15), ("m6i.4xlarge", 0.15)),
        40,
        0.45,
        22,
        44,
        (0.42, 0.12),
        (0.50, 0.10),
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
        (0.62, 0.08),
        0.82,
    ),
    Pool("gpu", (("g5.2xlarge", 1.0),), 3, 0.65, 1, 3, (0.25, 0.30), (0.40, 0.20), 0.75),
)
_POOL_INDEX: Final = {p.name: i for i, p in enumerate(POOLS)}
#: The pool that runs hot: batch jobs hit its NodePool limit (`max_nodes`).
HOT_POOL: Final = "memory-optimized"
_HOT_BLOCK_DAYS: Final = 9


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
        0.12,
        0.20,
        1.00,
        ("kube-state-metrics", "grafana", "prometheus-operator"),
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
    Namespace("data-pipeline", HOT_POOL, 0.55, 0.50, 1.50, ("spark-executor", "kafka-connect")),
    Namespace("ml-inference", "gpu", 1.00, 1.00, 4.00, ("triton-server", "embedding-service")),
)
APP_NAMESPACES: Final = ("payments", "checkout", "catalog", "orders", "notifications")
_NS: Final = {n.name: n for n in NAMESPACES}
#: Unattributed usage on a pool: kubelet, container runtime, Auto Mode's managed daemons.
_ATTRIBUTED: Final = 0.9


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
    expand_at = _utc_us(at) + round((0.94 - fill) / rate * _DAY)
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
        expand_at=_utc_us("2026-10-28T15:00:00"),
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


# -- load model -----------------------------------------------------------------------------------


def _growth(t_us: FloatArray) -> FloatArray:
    """Slow month-over-month growth (4 %/month), bounded so far-off dates stay plausible."""
    months = np.clip((t_us - _REF_US) / (30 * _DAY), -6.0, 12.0)
    return 1.0 + 0.04 * months


def _season(t_us: FloatArray) -> FloatArray:
    """Load shape in [0, 1]: US-East business-day peak, quiet nights, light weekends."""
    local_h = t_us / _HOUR - 5.0  # Eastern standard time is close enough for a load curve
    weekday = (np.floor(local_h / 24.0) + 3.0) % 7.0  # 1970-01-01 was a Thursday
    diurnal = np.exp(-(((local_h % 24.0 - 13.5) / 4.5) ** 2))
    out: FloatArray = diurnal * np.where(weekday >= 5.0, 0.35, 1.0)
    return out


# -- the world: nodes, flaps, hot windows ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Node:
    """One node incarnation: an instance that lives for hours [first_h, end_h)."""

    name: str
    pool: str
    zone: str
    itype: InstanceType
    slot: int
    first_h: int
    end_h: int
    factor: float


@dataclass(frozen=True, slots=True)
class Flap:
    """Nodes NotReady for [start_us, end_us)."""

    nodes: tuple[int, ...]
    start_us: int
    end_us: int
    reason: str
    message: str


@dataclass
class World:
    """Every slot-level fact of the cluster over an hour range, each a pure function of its slot."""

    seed: int
    h0: int
    h1: int
    pvcs: PvcTable
    counts: dict[str, IntArray] = field(default_factory=dict)
    slots: dict[str, IntArray] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    hot: dict[int, tuple[int, int]] = field(default_factory=dict)
    flaps: dict[int, list[Flap]] = field(default_factory=dict)

    @classmethod
    def build(cls, seed: int, h0: int, h1: int) -> World:
        """Nodes, flaps, hot windows and PVC parameters for hours [h0, h1)."""
        w = cls(seed, h0, h1, PvcTable.build(seed))
        for day in range(h0 // 24, h1 // 24 + 1):
            window = _hot_window(seed, day)
            if window is not None:
                w.hot[day] = window
        hours = np.arange(h0, h1, dtype=np.int64)
        for pool in POOLS:
            w.counts[pool.name] = _node_counts(seed, pool, hours, w.hot)
            w.slots[pool.name] = w._incarnate(pool, hours)
        for day in range(h0 // 24 + _ROTATE_H // 24 + 1, h1 // 24):
            w.flaps[day] = _flaps(w, day)
        return w

    def _incarnate(self, pool: Pool, hours: IntArray) -> IntArray:
        """Slot k runs a node while the pool wants > k nodes; nodes also expire every 14 days."""
        counts = self.counts[pool.name]
        out = np.full((pool.max_nodes, len(hours)), -1, dtype=np.int64)
        for k in range(pool.max_nodes):
            alive = counts > k
            phase = int(_unit(self.seed, pool.name, k, "phase") * _ROTATE_H)
            epoch = (hours + phase) // _ROTATE_H
            prev_alive = np.concatenate(([False], alive[:-1]))
            prev_epoch = np.concatenate(([-1], epoch[:-1]))
            start = alive & (~prev_alive | (epoch != prev_epoch))
            stops = np.flatnonzero(~alive | start)
            for s in np.flatnonzero(start).tolist():
                nxt = stops[np.searchsorted(stops, s, side="right") :]
                e = int(nxt[0]) if len(nxt) else len(hours)
                out[k, s:e] = len(self.nodes)
                self.nodes.append(self._node(pool, k, int(hours[s]), int(hours[0]) + e))
        return out

    def _node(self, pool: Pool, slot: int, first_h: int, end_h: int) -> Node:
        """The instance a slot runs from first_h: its id, type and load factor follow from that."""
        key = (self.seed, pool.name, slot, first_h)
        u = _unit(*key, "type")
        acc = 0.0
        itype = pool.types[-1][0]
        for name, weight in pool.types:
            acc += weight
            if u < acc:
                itype = name
                break
        return Node(
            name="i-0" + _hex(*key)[:16],
            pool=pool.name,
            zone=ZONES[slot % 3],
            itype=INSTANCE_TYPES[itype],
            slot=slot,
            first_h=first_h,
            end_h=end_h,
            factor=0.88 + 0.24 * _unit(*key, "factor"),
        )

    def alive(self, pool: str, h: int) -> list[int]:
        """Indices of the pool's nodes running in hour h, by slot."""
        col = self.slots[pool][:, h - self.h0]
        return [int(i) for i in col if i >= 0]

    def alive_all(self, h: int) -> list[int]:
        """Indices of every node running in hour h."""
        return [i for p in POOLS for i in self.alive(p.name, h)]

    def is_hot(self, t_us: int) -> bool:
        """Whether the hot pool is in a hot window at t."""
        window = self.hot.get(_day_of(t_us))
        return window is not None and window[0] <= t_us < window[1]


def _hot_window(seed: int, day: int) -> tuple[int, int] | None:
    """About every 9 days, batch jobs push the memory-optimized pool to its limit for hours."""
    # One window per 9-day block (not a daily coin flip) so every seed gets a few a month.
    block = day // _HOT_BLOCK_DAYS
    rng = _rng(seed, block, _T_HOT)
    offset, hour, hours = (
        int(rng.integers(0, _HOT_BLOCK_DAYS)),
        int(rng.integers(0, 19)),
        int(rng.integers(2, 6)),
    )
    if day != block * _HOT_BLOCK_DAYS + offset:
        return None
    start = day * _DAY + hour * _HOUR
    return start, start + hours * _HOUR


def _node_counts(
    seed: int, pool: Pool, hours: IntArray, hot: dict[int, tuple[int, int]]
) -> IntArray:
    """Nodes the pool wants per hour: load x growth x a daily wobble, within its limits."""
    mid = (hours * _HOUR + _HOUR // 2).astype(np.float64)
    days = hours // 24
    wobble = np.ones(len(hours))
    for day in np.unique(days).tolist():
        wobble[days == day] = _rng(seed, day, _T_NODES).normal(1.0, 0.03, len(POOLS))[
            _POOL_INDEX[pool.name]
        ]
    want = pool.base_nodes * _growth(mid) * ((1 - pool.swing) + pool.swing * _season(mid))
    counts = np.clip(np.rint(want * wobble), pool.min_nodes, pool.max_nodes).astype(np.int64)
    if pool.name == HOT_POOL:
        starts = hours * _HOUR
        for s, e in hot.values():
            counts[(starts >= s) & (starts < e)] = pool.max_nodes
    return counts


_FLAP_REASONS: Final = (
    (
        "KubeletNotReady",
        "container runtime network not ready: NetworkReady=false "
        "reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not "
        "initialized",
    ),
    ("KubeletNotReady", "PLEG is not healthy: pleg was last seen active 3m12s ago; threshold 3m0s"),
    ("NodeStatusUnknown", "Kubelet stopped posting node status."),
)


def _flaps(w: World, day: int) -> list[Flap]:
    """A few single-node NotReady flaps a month, and rarely an AZ-wide one."""
    rng = _rng(w.seed, day, _T_FLAP)
    u = rng.random(2)
    starts = rng.integers(10, 23 * 60 - 40, 2)
    durations = rng.integers(3, 28, 2)
    pick = int(rng.integers(0, 1 << 30))
    reason = int(rng.integers(0, 2))
    zone = int(rng.integers(0, 3))
    out: list[Flap] = []
    gp = "general-purpose"
    if u[0] < 0.13:
        s = day * _DAY + int(starts[0]) * _MIN + int(pick % 60) * _SEC
        e = s + int(durations[0]) * _MIN
        slots = _steady_slots(w, gp, s, e)
        if slots:
            node = int(w.slots[gp][slots[pick % len(slots)], s // _HOUR - w.h0])
            out.append(Flap((node,), s, e, *_FLAP_REASONS[reason]))
    if u[1] < 0.03:
        s = day * _DAY + int(starts[1]) * _MIN
        e = s + int(durations[1]) * _MIN
        slots = [k for k in _steady_slots(w, gp, s, e) if k % 3 == zone][:3]
        if len(slots) >= 2:
            nodes = tuple(int(w.slots[gp][k, s // _HOUR - w.h0]) for k in slots)
            out.append(Flap(nodes, s, e, *_FLAP_REASONS[2]))
    return out


def _steady_slots(w: World, pool: str, s: int, e: int) -> list[int]:
    """Slots running the same node through [s, e]."""
    a, b = s // _HOUR - w.h0, e // _HOUR - w.h0
    grid = w.slots[pool]
    return [k for k in range(grid.shape[0]) if grid[k, a] >= 0 and grid[k, a] == grid[k, b]]


# -- PVC model ------------------------------------------------------------------------------------

_PVC_REF_US: Final = _utc_us("2026-11-26T00:00:00")


@dataclass(frozen=True)
class PvcTable:
    """Every PVC's growth parameters as columns, so an hour of all volumes is one array op."""

    cap0: FloatArray
    expand_at: FloatArray
    rate: FloatArray
    fill: FloatArray
    sawtooth: npt.NDArray[np.bool_]
    gappy: npt.NDArray[np.bool_]
    phase_h: FloatArray

    @classmethod
    def build(cls, seed: int) -> PvcTable:
        """Fixed parameters of the story's volumes; quiet volumes draw theirs per seed."""
        params = [_pvc_params(seed, p) for p in PVCS]
        return cls(
            cap0=np.array([float(p.cap_gib * _GIB) for p in PVCS]),
            expand_at=np.array([float(x[0]) for x in params]),
            rate=np.array([x[1] for x in params]),
            fill=np.array([x[2] for x in params]),
            sawtooth=np.array([p.kind == "sawtooth" for p in PVCS]),
            gappy=np.array([p.gappy for p in PVCS]),
            phase_h=np.array([_unit(seed, p.name, "phase") * 24.0 for p in PVCS]),
        )

    def params(self, i: int) -> tuple[int, float, float]:
        """(first expansion time, daily rate, expansion fill) of volume i."""
        return int(self.expand_at[i]), float(self.rate[i]), float(self.fill[i])

    def state(self, t_us: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(used, capacity) in bytes of every volume (rows) at the times (columns), noiseless."""
        cap0, fill = self.cap0[:, None], self.fill[:, None]
        days = (t_us[None, :] - self.expand_at[:, None]) / _DAY
        used = cap0 * np.maximum(fill + self.rate[:, None] * days, 0.12)
        doublings = np.floor(np.log2(np.maximum(used / (fill * cap0), 1.0)))
        cap = cap0 * np.where(days >= 0, 2.0 ** (doublings + 1), 1.0)
        # Logs rotate daily at 02:00 UTC; compressed archives are purged on Mondays.
        tt = t_us - 2 * _HOUR
        weekday = (np.floor(tt / _DAY) + 3.0) % 7.0
        saw = 0.16 + 0.035 * weekday + 0.30 * (tt % _DAY) / _DAY
        used = np.where(self.sawtooth[:, None], cap0 * saw[None, :], used)
        cap = np.where(self.sawtooth[:, None], cap0, cap)
        return used, cap


def _pvc_params(seed: int, pvc: Pvc) -> tuple[int, float, float]:
    """A quiet volume's fill on the reference day and growth rate are drawn per seed."""
    if pvc.expand_at is not None:
        return pvc.expand_at, pvc.rate, pvc.expand_fill
    rng = _rng(seed, _tag(f"{pvc.namespace}/{pvc.name}"), _T_PVC)
    fill, rate = float(rng.uniform(0.22, 0.66)), float(rng.uniform(0.0003, 0.0018))
    return _PVC_REF_US + round((0.94 - fill) / rate * _DAY), rate, 0.94


def _pvc_crossings(
    params: tuple[int, float, float], threshold: float, lo: int, hi: int
) -> list[int]:
    """Times in [lo, hi) when a growing volume's fill rises through `threshold`."""
    expand_at, rate, fill = params
    if threshold >= fill:
        return []
    times = [expand_at - round((fill - threshold) / rate * _DAY)]
    times += [expand_at + round((threshold * 2 ** (n + 1) - fill) / rate * _DAY) for n in range(8)]
    return [t for t in times if lo <= t < hi]


# -- hourly samples -------------------------------------------------------------------------------


@dataclass
class _Columns:
    """Series and their per-tick values for one hour, before masking."""

    series: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    rows: list[FloatArray] = field(default_factory=list)
    keep: list[npt.NDArray[np.bool_]] = field(default_factory=list)

    def add(
        self,
        name: str,
        labels: Sequence[dict[str, str]],
        values: FloatArray,
        keep: npt.NDArray[np.bool_] | None = None,
    ) -> None:
        """Append one series per labels dict; `values` and `keep` are (len(labels), ticks)."""
        values = np.broadcast_to(values, (len(labels), _TICKS))
        self.series.extend((name, lab) for lab in labels)
        self.rows.append(values)
        shape = (len(labels), _TICKS)
        self.keep.append(np.ones(shape, dtype=np.bool_) if keep is None else keep)


def hour_event(w: World, h: int) -> Event:
    """The `opsledger.metric.samples` event of one cluster-hour (12 five-minute ticks)."""
    t = h * _HOUR + np.arange(_TICKS, dtype=np.int64) * _TICK
    tf = t.astype(np.float64)
    rng = _rng(w.seed, h, _T_SAMPLES)
    cols = _Columns()
    cpu_used, mem_used = _node_columns(w, h, tf, rng, cols)
    _namespace_columns(w, h, rng, cols, cpu_used, mem_used)
    _pvc_columns(w, h, tf, rng, cols)
    values = np.vstack(cols.rows)
    keep = np.vstack(cols.keep)
    present = np.flatnonzero(keep.any(axis=1))
    keep = keep[present]
    sidx = np.repeat(np.arange(len(present), dtype=np.int64), _TICKS)[keep.ravel()]
    ts = np.tile(t, len(present))[keep.ravel()]
    vals = values[present].ravel()[keep.ravel()]
    batch = batch_from_columns([cols.series[i] for i in present.tolist()], sidx, ts, vals)
    event_id = f"samples/{CLUSTER}/{format_us(h * _HOUR)}"
    return samples_event(f"{DEMO_SOURCE_PREFIX}/metrics", event_id, int(t[-1]), CLUSTER, batch)


def _pool_util(
    w: World, pool: Pool, tf: FloatArray, noise: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Pool-wide CPU and memory utilisation per tick; hot windows run above 85 %."""
    s = _season(tf)
    cpu = pool.cpu[0] + pool.cpu[1] * s + 0.015 * noise[0]
    mem = pool.mem[0] + pool.mem[1] * s + 0.010 * noise[1]
    if pool.name == HOT_POOL:
        hot = np.array([w.is_hot(int(x)) for x in tf])
        cpu = np.where(hot, 0.92 + 0.015 * noise[0], cpu)
        mem = np.where(hot, 0.895 + 0.010 * noise[1], mem)
    return cpu, mem


def _reporting(w: World, node: int, tf: FloatArray) -> npt.NDArray[np.bool_]:
    """Ticks at which the node reports (metrics-server cannot scrape a NotReady kubelet)."""
    keep = np.ones(_TICKS, dtype=np.bool_)
    for flap in w.flaps.get(_day_of(int(tf[0])), []):
        if node in flap.nodes:
            keep &= ~((tf >= flap.start_us) & (tf < flap.end_us))
    return keep


def _node_columns(
    w: World, h: int, tf: FloatArray, rng: np.random.Generator, cols: _Columns
) -> tuple[FloatArray, FloatArray]:
    """Node usage and allocatable; returns per-pool usage totals per tick (pools x ticks)."""
    pool_noise = rng.normal(0.0, 1.0, (len(POOLS), 2, _TICKS))
    cpu_tot = np.zeros((len(POOLS), _TICKS))
    mem_tot = np.zeros((len(POOLS), _TICKS))
    for p, pool in enumerate(POOLS):
        cpu_u, mem_u = _pool_util(w, pool, tf, pool_noise[p])
        idx = w.alive(pool.name, h)
        nodes = [w.nodes[i] for i in idx]
        noise = rng.normal(0.0, 1.0, (len(nodes), 2, _TICKS))
        factor = np.array([[n.factor] for n in nodes])
        cpu_alloc = np.array([[n.itype.cpu_alloc] for n in nodes])
        mem_alloc = np.array([[float(n.itype.mem_alloc)] for n in nodes])
        cpu = cpu_alloc * np.clip(cpu_u * factor * (1 + 0.04 * noise[:, 0]), 0.02, 0.98)
        mem = mem_alloc * np.clip(mem_u * factor * (1 + 0.02 * noise[:, 1]), 0.05, 0.98)
        mem = np.rint(mem / 4096.0) * 4096.0
        cpu_tot[p] = cpu.sum(axis=0)
        mem_tot[p] = mem.sum(axis=0)
        labels = [{"node": n.name, "nodepool": pool.name, "zone": n.zone} for n in nodes]
        keep = np.array([_reporting(w, i, tf) for i in idx]).reshape(len(idx), _TICKS)
        cols.add("node_cpu_usage_cores", labels, np.round(cpu, 4), keep)
        cols.add("node_cpu_allocatable_cores", labels, cpu_alloc, keep)
        cols.add("node_memory_usage_bytes", labels, mem, keep)
        cols.add("node_memory_allocatable_bytes", labels, mem_alloc, keep)
    return cpu_tot, mem_tot


def _step(seed: int, ns_index: int, t_us: int) -> float:
    """Requests change in steps (deploys), each namespace on its own weekly cadence."""
    week = (t_us + ns_index * 13 * _HOUR) // (7 * _DAY)
    return _step_of(seed, week, ns_index)


@cache
def _step_of(seed: int, week: int, ns_index: int) -> float:
    """The request level of one namespace-week."""
    rng = _rng(seed, week, _T_STEP, _tag(NAMESPACES[ns_index].name))
    return float(rng.choice([0.92, 1.0, 1.08], p=[0.25, 0.5, 0.25]))


def _shares(attr: str) -> FloatArray:
    """Each namespace's share of its pool, normalised per pool."""
    raw = np.array([getattr(n, attr) for n in NAMESPACES])
    totals = {p.name: sum(getattr(n, attr) for n in NAMESPACES if n.pool == p.name) for p in POOLS}
    out: FloatArray = raw / np.array([totals[n.pool] for n in NAMESPACES])
    return out


_NS_POOL: Final = np.array([_POOL_INDEX[n.pool] for n in NAMESPACES])
_NS_CPU_SHARE: Final = _shares("cpu_share")
_NS_MEM_SHARE: Final = _shares("mem_share")
_NS_PER_POD: Final = np.array([n.cpu_per_pod for n in NAMESPACES])
_NS_LABELS: Final = [{"namespace": n.name} for n in NAMESPACES]
_PVC_LABELS: Final = [{"namespace": p.namespace, "persistentvolumeclaim": p.name} for p in PVCS]


def _namespace_columns(
    w: World,
    h: int,
    rng: np.random.Generator,
    cols: _Columns,
    cpu_tot: FloatArray,
    mem_tot: FloatArray,
) -> None:
    """Namespace usage is its share of its pool's usage; requests follow allocatable (KEDA)."""
    noise = rng.normal(0.0, 1.0, (len(NAMESPACES), 2, _TICKS))
    alloc = np.array([_pool_alloc(w, p.name, h) for p in POOLS])
    commit = np.array([p.commit for p in POOLS])
    if w.is_hot(h * _HOUR):
        commit[_POOL_INDEX[HOT_POOL]] = 0.90
    step = np.array([_step(w.seed, j, h * _HOUR) for j in range(len(NAMESPACES))])
    scale = _ATTRIBUTED * (1 + np.array([0.03, 0.02])[None, :, None] * noise)
    cpu = cpu_tot[_NS_POOL] * _NS_CPU_SHARE[:, None] * scale[:, 0]
    mem = mem_tot[_NS_POOL] * _NS_MEM_SHARE[:, None] * scale[:, 1]
    pool_commit = commit[_NS_POOL] * step
    req_cpu = np.round(alloc[_NS_POOL, 0] * pool_commit * _NS_CPU_SHARE, 3)
    req_mem = np.round(alloc[_NS_POOL, 1] * pool_commit * _NS_MEM_SHARE / 2**20) * 2**20
    pods = np.maximum(np.round(req_cpu / _NS_PER_POD), 1.0)
    cols.add("namespace_cpu_usage_cores", _NS_LABELS, np.round(cpu, 4))
    cols.add("namespace_cpu_requests_cores", _NS_LABELS, req_cpu[:, None])
    cols.add("namespace_memory_usage_bytes", _NS_LABELS, np.rint(mem / 4096.0) * 4096.0)
    cols.add("namespace_memory_requests_bytes", _NS_LABELS, req_mem[:, None])
    cols.add("namespace_pod_count", _NS_LABELS, pods[:, None])


def _pool_alloc(w: World, pool: str, h: int) -> tuple[float, float]:
    """A pool's allocatable (cores, bytes) in hour h."""
    nodes = [w.nodes[i].itype for i in w.alive(pool, h)]
    return sum(t.cpu_alloc for t in nodes), float(sum(t.mem_alloc for t in nodes))


def _pvc_columns(
    w: World, h: int, tf: FloatArray, rng: np.random.Generator, cols: _Columns
) -> None:
    """PVC used and capacity; gappy volumes miss whole 3-hour blocks of samples."""
    table = w.pvcs
    noise = rng.normal(0.0, 1.0, (len(PVCS), _TICKS))
    gaps = table.gappy & (_rng(w.seed, h // 3, _T_GAP).random(len(PVCS)) < 0.03)
    used, cap = table.state(tf)
    daily = 0.004 * np.sin(2 * np.pi * (tf[None, :] / _HOUR - table.phase_h[:, None]) / 24.0)
    used = np.clip(used * (1 + daily + 0.0008 * noise), 0.0, 0.995 * cap)
    keep = np.repeat(~gaps[:, None], _TICKS, axis=1)
    cols.add("pvc_used_bytes", _PVC_LABELS, np.rint(used / 4096.0) * 4096.0, keep)
    cols.add("pvc_capacity_bytes", _PVC_LABELS, cap, keep)


# -- discrete facts of a day ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Trigger:
    """Something that opens an incident."""

    time_us: int
    severity: str
    title: str
    kind: str
    key: int
    namespace: str | None = None
    service: str | None = None
    note: str | None = None


@dataclass
class DayPlan:
    """The discrete facts of one UTC day: CloudEvents plus the incidents they trigger."""

    raws: list[dict[str, Any]] = field(default_factory=list)
    triggers: list[Trigger] = field(default_factory=list)


def _raw(
    stream: str,
    event_id: str,
    event_type: str,
    time_us: int,
    data: dict[str, Any],
    cluster: bool = True,
) -> dict[str, Any]:
    """A structured CloudEvent from the demo, for validation."""
    return event_to_cloudevent(
        source=f"{DEMO_SOURCE_PREFIX}/{stream}",
        event_id=event_id,
        event_type=event_type,
        time_us=time_us,
        cluster=CLUSTER if cluster else None,
        subject=None,
        data=data,
    )


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
    first_us -= first_us % _SEC
    last_us -= last_us % _SEC
    involved: dict[str, Any] = {
        "kind": kind,
        "name": name,
        "uid": _uuid(seed, kind, namespace, name),
        "apiVersion": "v1",
    }
    if namespace is not None:
        involved["namespace"] = namespace
    if field_path is not None:
        involved["fieldPath"] = field_path
    source: dict[str, Any] = {"component": component}
    if host is not None:
        source["host"] = host
    uid = _uuid(seed, "event", kind, name, reason, first_us)
    obj = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{name}.{first_us * 1000:x}",
            "namespace": namespace or "default",
            "uid": uid,
            "resourceVersion": str(last_us // _SEC % 1_000_000_000),
            "creationTimestamp": _ts(first_us),
        },
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "source": source,
        "firstTimestamp": _ts(first_us),
        "lastTimestamp": _ts(last_us),
        "count": count,
        "type": "Warning",
        "eventTime": None,
        "reportingComponent": component,
        "reportingInstance": host or "",
    }
    return _raw("k8s", f"event/{uid}", "opsledger.k8s.event", last_us, obj)


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
    t_us -= t_us % _SEC
    data: dict[str, Any] = {"namespace": ns, "pod": pod, "phase": phase, "restarts": restarts}
    if reason is not None:
        data["reason"] = reason
    if node is not None:
        data["node"] = node
    data["owner"] = owner
    event_id = f"pod/{ns}/{pod}/{format_us(t_us)}"
    return _raw("k8s", event_id, "opsledger.k8s.pod.status", t_us, data)


def _node_status(node: Node, t_us: int, ready: bool, reason: str, event_id: str) -> dict[str, Any]:
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
    return _raw("k8s", event_id, "opsledger.k8s.node.status", t_us, data)


def _pod(seed: int, ns: str, workload: str, t_us: int, *extra: object) -> tuple[str, str]:
    """(pod name, owner) of a Deployment's pod; ReplicaSets change with weekly rollouts."""
    rs = f"{workload}-{_k8s_suffix(10, seed, ns, workload, t_us // (7 * _DAY))}"
    return f"{rs}-{_k8s_suffix(5, seed, ns, rs, *extra)}", f"ReplicaSet/{rs}"


def day_plan(w: World, day: int) -> DayPlan:
    """Every discrete fact whose slot is this UTC day."""
    plan = DayPlan()
    _launches(w, day, plan)
    _flap_facts(w, day, plan)
    _hot_facts(w, day, plan)
    _crash_facts(w, day, plan)
    _noise_facts(w, day, plan)
    _finding_facts(w, day, plan)
    _pvc_facts(w, day, plan)
    _adhoc_facts(w, day, plan)
    return plan


def _launches(w: World, day: int, plan: DayPlan) -> None:
    """A node reports Ready when Auto Mode launches it."""
    for node in w.nodes:
        # Earlier starts may be cut off by the world's first hour; none of those is needed.
        if node.first_h // 24 == day and node.first_h >= w.h0 + _ROTATE_H:
            event_id = f"node/{node.name}/launched"
            plan.raws.append(
                _node_status(node, node.first_h * _HOUR, True, "KubeletReady", event_id)
            )


def _flap_facts(w: World, day: int, plan: DayPlan) -> None:
    """NotReady and back, NodeNotReady warnings for its pods, and sometimes an incident."""
    rng = _rng(w.seed, day, _T_FLAP, 1)
    for k, flap in enumerate(w.flaps.get(day, [])):
        for i in flap.nodes:
            node = w.nodes[i]
            plan.raws.append(
                _node_status(
                    node,
                    flap.start_us,
                    False,
                    flap.reason,
                    f"node/{node.name}/notready/{format_us(flap.start_us)}",
                )
            )
            plan.raws.append(
                _node_status(
                    node,
                    flap.end_us,
                    True,
                    "KubeletReady",
                    f"node/{node.name}/ready/{format_us(flap.end_us)}",
                )
            )
            for j in range(2):
                ns = APP_NAMESPACES[int(rng.integers(0, len(APP_NAMESPACES)))]
                workload = _NS[ns].workloads[j % len(_NS[ns].workloads)]
                pod, _ = _pod(w.seed, ns, workload, flap.start_us, node.name)
                t = flap.start_us + int(rng.integers(40, 60)) * _SEC
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


def _hot_facts(w: World, day: int, plan: DayPlan) -> None:
    """A hot window: pending batch pods, OOM kills on the pool, and often an incident."""
    window = w.hot.get(day)
    if window is None:
        return
    s, e = window
    rng = _rng(w.seed, day, _T_HOT, 1)
    total = len(w.alive_all(s // _HOUR))
    full = len(w.alive(HOT_POOL, s // _HOUR))
    pod, owner = _pod(w.seed, "data-pipeline", "spark-executor", s, "pending")
    t = s + int(rng.integers(3, 15)) * _MIN
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
            last_us=t + int(rng.integers(20, 50)) * _MIN,
            count=int(rng.integers(6, 40)),
        )
    )
    nodes = w.alive(HOT_POOL, s // _HOUR)
    for j in range(int(rng.integers(1, 4))):
        node = w.nodes[nodes[int(rng.integers(0, len(nodes)))]]
        t = s + int(rng.integers(20 * 60, (e - s) // _SEC - 60)) * _SEC
        victim, vowner = _pod(w.seed, "data-pipeline", "spark-executor", s, "oom", j)
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
                t + 2 * _SEC,
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
                s + 65 * _MIN, "P2", title, "hot-pool", 0, "data-pipeline", "spark-executor", note
            )
        )


def _crash_facts(w: World, day: int, plan: DayPlan) -> None:
    """CrashLoopBackOff episodes in application namespaces."""
    rng = _rng(w.seed, day, _T_CRASH)
    for j in range(int(rng.poisson(0.25))):
        ns = APP_NAMESPACES[int(rng.integers(0, len(APP_NAMESPACES)))]
        workload = _NS[ns].workloads[int(rng.integers(0, len(_NS[ns].workloads)))]
        t0 = day * _DAY + int(rng.integers(30 * 60, 23 * 3600)) * _SEC
        nodes = w.alive("general-purpose", t0 // _HOUR)
        node = w.nodes[nodes[int(rng.integers(0, len(nodes)))]].name
        pod, owner = _pod(w.seed, ns, workload, t0, "crash", day, j)
        restarts = int(rng.integers(5, 15))
        t1 = t0 + int(rng.integers(15, 110)) * _MIN
        t2 = t1 + int(rng.integers(2, 10)) * _MIN
        plan.raws.append(
            _pod_status(t0 + 90 * _SEC, ns, pod, "Running", "CrashLoopBackOff", 3, node, owner)
        )
        plan.raws.append(
            _pod_status(t1, ns, pod, "Running", "CrashLoopBackOff", restarts, node, owner)
        )
        plan.raws.append(_pod_status(t2, ns, pod, "Running", None, restarts, node, owner))
        pod_uid = _uuid(w.seed, "Pod", ns, pod)
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
                first_us=t0 + 40 * _SEC,
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
                    t0 + 4 * _MIN,
                    "P1" if prod else "P2",
                    f"{workload} CrashLoopBackOff in {ns}",
                    "crashloop",
                    j,
                    ns,
                    workload,
                    note,
                )
            )


def _noise_facts(w: World, day: int, plan: DayPlan) -> None:
    """Everyday warnings that open no incident: scale-up pending pods, restarts, image pulls."""
    rng = _rng(w.seed, day, _T_WARN)
    weekday = (day + 3) % 7 < 5
    if weekday and rng.random() < 0.6:
        t = day * _DAY + int(rng.integers(12 * 3600 + 1800, 14 * 3600)) * _SEC
        total = len(w.alive_all(t // _HOUR))
        for j in range(int(rng.integers(1, 4))):
            ns = APP_NAMESPACES[int(rng.integers(0, len(APP_NAMESPACES)))]
            workload = _NS[ns].workloads[0]
            pod, _ = _pod(w.seed, ns, workload, t, "scale", j)
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
                    first_us=t + j * 7 * _SEC,
                    last_us=t + int(rng.integers(40, 90)) * _SEC,
                    count=int(rng.integers(1, 5)),
                )
            )
    for j in range(int(rng.poisson(0.9))):
        ns = APP_NAMESPACES[int(rng.integers(0, len(APP_NAMESPACES)))]
        workload = _NS[ns].workloads[int(rng.integers(0, len(_NS[ns].workloads)))]
        t = day * _DAY + int(rng.integers(0, 86_340)) * _SEC
        nodes = w.alive("general-purpose", t // _HOUR)
        node = w.nodes[nodes[int(rng.integers(0, len(nodes)))]].name
        pod, owner = _pod(w.seed, ns, workload, t, "restart", day, j)
        plan.raws.append(
            _pod_status(t, ns, pod, "Running", "Error", int(rng.integers(1, 3)), node, owner)
        )
    if rng.random() < 0.15:
        ns = APP_NAMESPACES[int(rng.integers(0, len(APP_NAMESPACES)))]
        workload = _NS[ns].workloads[0]
        t = day * _DAY + int(rng.integers(0, 86_000)) * _SEC
        pod, _ = _pod(w.seed, ns, workload, t, "pull")
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
                last_us=t + 6 * _MIN,
                count=int(rng.integers(3, 12)),
                field_path=f"spec.containers{{{workload}}}",
            )
        )


#: GuardDuty EKS / Runtime Monitoring finding types: (type, severity, namespace, weight).
_GUARDDUTY: Final = (
    ("Execution:Kubernetes/ExecInKubeSystemPod", "MEDIUM", "kube-system", 3.0),
    ("Discovery:Kubernetes/SuccessfulAnonymousAccess", "MEDIUM", None, 2.0),
    ("Policy:Kubernetes/AnonymousAccessGranted", "HIGH", None, 1.0),
    ("PrivilegeEscalation:Kubernetes/PrivilegedContainer", "MEDIUM", "data-pipeline", 2.0),
    ("Persistence:Kubernetes/ContainerWithSensitiveMount", "MEDIUM", "prometheus", 2.0),
    ("Recon:EC2/PortProbeUnprotectedPort", "LOW", None, 4.0),
    ("UnauthorizedAccess:EC2/SSHBruteForce", "LOW", None, 2.0),
    ("Execution:Runtime/NewBinaryExecuted", "MEDIUM", "catalog", 2.0),
    ("DefenseEvasion:Runtime/ProcessInjection.Ptrace", "HIGH", "web-frontend", 0.7),
    ("Impact:Runtime/CryptoMinerExecuted", "HIGH", "notifications", 0.5),
    ("AttackSequence:EKS/CompromisedCluster", "CRITICAL", None, 0.35),
)
#: Security Hub AWS Foundational Security Best Practices controls: (control, title, severity).
_SECURITYHUB: Final = (
    ("EKS.1", "EKS cluster endpoints should not be publicly accessible", "HIGH"),
    ("EKS.2", "EKS clusters should run on a supported Kubernetes version", "HIGH"),
    ("EKS.8", "EKS clusters should have audit logging enabled", "MEDIUM"),
    ("EC2.8", "EC2 instances should use Instance Metadata Service Version 2 (IMDSv2)", "HIGH"),
    (
        "EC2.18",
        "Security groups should only allow unrestricted incoming traffic for authorized ports",
        "HIGH",
    ),
    ("S3.5", "S3 general purpose buckets should require requests to use SSL", "MEDIUM"),
    ("ECR.1", "ECR private repositories should have image scanning configured", "HIGH"),
    ("IAM.6", "Hardware MFA should be enabled for the root user", "CRITICAL"),
    ("KMS.4", "AWS KMS key rotation should be enabled", "MEDIUM"),
    ("SSM.1", "EC2 instances should be managed by AWS Systems Manager", "MEDIUM"),
    ("Config.1", "AWS Config should be enabled and use the service-linked role", "INFORMATIONAL"),
    (
        "CloudWatch.16",
        "CloudWatch log groups should be retained for a specified time period",
        "LOW",
    ),
)
_SH_TYPE: Final = (
    "Software and Configuration Checks/Industry and Regulatory Standards/"
    "AWS-Foundational-Security-Best-Practices"
)
#: The resource each Security Hub control family is evaluated on.
_SH_RESOURCES: Final = {
    "EKS": f"arn:aws-us-gov:eks:{REGION}:{ACCOUNT}:cluster/{CLUSTER}",
    "EC2": f"arn:aws-us-gov:ec2:{REGION}:{ACCOUNT}:security-group/sg-0f3c9a1d2b7e45a61",
    "S3": "arn:aws-us-gov:s3:::enhanced-eks-cluster-artifacts",
    "ECR": f"arn:aws-us-gov:ecr:{REGION}:{ACCOUNT}:repository/payments-api",
    "IAM": f"arn:aws-us-gov:iam::{ACCOUNT}:root",
    "KMS": f"arn:aws-us-gov:kms:{REGION}:{ACCOUNT}:key/5b1f0c1e-8d7a-4c3e-9a21-3f6e2d4c8b90",
    "SSM": f"arn:aws-us-gov:ec2:{REGION}:{ACCOUNT}:instance/i-0a1b2c3d4e5f60718",
    "Config": f"arn:aws-us-gov:config:{REGION}:{ACCOUNT}:config-recorder/default",
    "CloudWatch": f"arn:aws-us-gov:logs:{REGION}:{ACCOUNT}:log-group:/aws/eks/{CLUSTER}/cluster",
}
_CLUSTER_ARN: Final = f"arn:aws-us-gov:eks:{REGION}:{ACCOUNT}:cluster/{CLUSTER}"


def _finding(
    provider: str,
    finding_id: str,
    title: str,
    finding_type: str,
    severity: str,
    status: str,
    first_us: int,
    last_us: int,
    seq: int,
    resource: str,
    namespace: str | None,
) -> dict[str, Any]:
    """An `opsledger.finding` event: one state of a finding (seq 1 is the first sighting)."""
    data: dict[str, Any] = {
        "provider": provider,
        "finding_id": finding_id,
        "title": title,
        "finding_type": finding_type,
        "severity": severity,
        "resource": resource,
        "status": status,
        "first_seen": _ts(first_us),
        "last_seen": _ts(last_us),
    }
    if namespace is not None:
        data["namespace"] = namespace
    event_id = f"finding/{_hex(finding_id)[:20]}/{seq}"
    return _raw(provider, event_id, "opsledger.finding", last_us - last_us % _SEC, data)


def _finding_facts(w: World, day: int, plan: DayPlan) -> None:
    """GuardDuty and Security Hub findings; many are archived or resolved days later."""
    rng = _rng(w.seed, day, _T_FIND)
    weights = np.array([g[3] for g in _GUARDDUTY])
    for j in range(int(rng.poisson(0.45))):
        ftype, sev, ns, _ = _GUARDDUTY[int(rng.choice(len(_GUARDDUTY), p=weights / weights.sum()))]
        t = day * _DAY + int(rng.integers(0, 86_000)) * _SEC
        fid = _hex(w.seed, "guardduty", day, j)
        resource = (
            _CLUSTER_ARN
            if ns is None
            else f"Pod/{ns}/{_pod(w.seed, ns, _NS[ns].workloads[0], t, 'gd')[0]}"
        )
        title = f"{ftype} observed on EKS cluster {CLUSTER}."
        plan.raws.append(
            _finding("guardduty", fid, title, ftype, sev, "ACTIVE", t, t, 1, resource, ns)
        )
        close = rng.random()
        later = t + int(rng.integers(4 * 3600, 6 * 86_400)) * _SEC
        if sev in ("LOW", "MEDIUM") and close < 0.4:
            plan.raws.append(
                _finding("guardduty", fid, title, ftype, sev, "ARCHIVED", t, later, 2, resource, ns)
            )
        elif sev in ("HIGH", "CRITICAL") and close < 0.8:
            plan.raws.append(
                _finding("guardduty", fid, title, ftype, sev, "RESOLVED", t, later, 2, resource, ns)
            )
        if sev == "CRITICAL":
            plan.triggers.append(
                Trigger(
                    t,
                    "P0",
                    f"GuardDuty CRITICAL: {ftype}",
                    "guardduty",
                    j,
                    ns,
                    note="Isolated workload, rotated node role credentials.",
                )
            )
        elif sev == "HIGH" and rng.random() < 0.6:
            plan.triggers.append(Trigger(t, "P1", f"GuardDuty HIGH: {ftype}", "guardduty", j, ns))
        elif sev == "MEDIUM" and rng.random() < 0.25:
            plan.triggers.append(Trigger(t, "P3", f"GuardDuty MEDIUM: {ftype}", "guardduty", j, ns))
    for j in range(int(rng.poisson(0.8))):
        control, text, sev = _SECURITYHUB[int(rng.integers(0, len(_SECURITYHUB)))]
        t = day * _DAY + int(rng.integers(0, 86_000)) * _SEC
        fid = (
            f"arn:aws-us-gov:securityhub:{REGION}:{ACCOUNT}:subscription/"
            f"aws-foundational-security-best-practices/v/1.0.0/{control}/finding/"
            f"{_uuid(w.seed, 'securityhub', day, j)}"
        )
        title = f"{control} {text}"
        resource = _SH_RESOURCES[control.split(".")[0]]
        plan.raws.append(
            _finding("securityhub", fid, title, _SH_TYPE, sev, "ACTIVE", t, t, 1, resource, None)
        )
        if rng.random() < 0.55:
            later = t + int(rng.integers(86_400, 14 * 86_400)) * _SEC
            plan.raws.append(
                _finding(
                    "securityhub",
                    fid,
                    title,
                    _SH_TYPE,
                    sev,
                    "RESOLVED",
                    t,
                    later,
                    2,
                    resource,
                    None,
                )
            )
        escalate = rng.random()
        if sev in ("HIGH", "CRITICAL") and escalate < 0.3:
            plan.triggers.append(
                Trigger(t, "P2", f"Security Hub: {control} failed", "securityhub", j)
            )
        elif sev in ("MEDIUM", "LOW") and escalate < 0.25:
            plan.triggers.append(
                Trigger(t, "P3", f"Security Hub: {control} failed", "securityhub", j)
            )


def _pvc_facts(w: World, day: int, plan: DayPlan) -> None:
    """Storage alerts: above 85 % is a P3 (alert), above 90 % a P1 (expand now)."""
    lo, hi = day * _DAY, (day + 1) * _DAY
    for i, pvc in enumerate(PVCS):
        if pvc.kind != "grow":
            continue
        for threshold, sev in ((0.85, "P3"), (0.90, "P1")):
            for t in _pvc_crossings(w.pvcs.params(i), threshold, lo, hi):
                title = f"PVC {pvc.namespace}/{pvc.name} above {round(threshold * 100)}% full"
                key = i * 10 + round(threshold * 100) % 10
                plan.triggers.append(Trigger(t - t % _SEC, sev, title, "pvc", key, pvc.namespace))


_ADHOC: Final = (
    (
        "P3",
        "Runbook update: KEDA ScaledObject drift on orders-consumer",
        "orders",
        "orders-consumer",
    ),
    (
        "P3",
        "Right-size requests for catalog-api (p95 usage 35% of requests)",
        "catalog",
        "catalog-api",
    ),
    ("P3", "Informational: EKS add-on update available (coredns, kube-proxy)", "kube-system", None),
    ("P3", "Cost optimization: idle GPU node hours overnight", "ml-inference", "triton-server"),
    ("P3", "Istio sidecar injection missing on new namespace", "istio-system", "istiod"),
    ("P2", "checkout-api p99 latency > 1.5s", "checkout", "checkout-api"),
    ("P2", "orders-consumer Kafka lag growing", "orders", "orders-consumer"),
    ("P2", "Prometheus rule evaluation slow", "prometheus", None),
    ("P0", "payments-api production completely down (5xx > 90%)", "payments", "payments-api"),
)


def _adhoc_facts(w: World, day: int, plan: DayPlan) -> None:
    """Incidents from user reports and health checks, unrelated to other facts."""
    rng = _rng(w.seed, day, _T_ADHOC)
    rates = {"P3": 0.25, "P2": 0.08, "P0": 0.015}
    for sev, rate in rates.items():
        options = [a for a in _ADHOC if a[0] == sev]
        for j in range(int(rng.poisson(rate))):
            _, title, ns, service = options[int(rng.integers(0, len(options)))]
            t = day * _DAY + int(rng.integers(0, 86_000)) * _SEC
            plan.triggers.append(Trigger(t, sev, title, f"adhoc-{sev}", j, ns, service))


# -- incidents ------------------------------------------------------------------------------------

POSTMORTEM_URL: Final = "https://wiki.ops.example.gov/postmortems/"
#: How often the first acknowledgement misses the response target, by severity.
_BREACH_P: Final = {"P0": 0.3, "P1": 0.25, "P2": 0.2, "P3": 0.2}
_NOTES: Final = {
    "node-flap": "Auto Mode replaced the instance; workloads rescheduled.",
    "az-flap": "AZ network event; pods rescheduled to the other zones.",
    "pvc": "Retention shortened and expansion requested.",
}


def _ack_time(opened: int, severity: str, breach: bool, rng: np.random.Generator) -> int:
    """First acknowledgement: mostly within the response target, sometimes well after it."""
    if severity == "P3" or (severity == "P2" and breach and not _in_business_hours(opened)):
        # Nothing pages for these: they wait for a business-day morning triage, and a neglected
        # P3 can sit in the backlog for a week.
        day = _first_business_day_after(opened)
        for _ in range(int(rng.integers(1, 7)) if breach and severity == "P3" else 0):
            day = _first_business_day_after(_local_us(day, 17))
        return _local_us(day, 9) + int(rng.integers(30, 180)) * _MIN
    target = _RESPONSE_MIN[severity] * 60
    frac = rng.uniform(1.3, 3.5) if breach else rng.uniform(0.15, 0.85)
    return opened + int(target * frac) * _SEC


def _lifecycle(seed: int, trig: Trigger) -> list[tuple[int, str, dict[str, Any]]]:
    """An incident's events from opening to postmortem: (time, type suffix, payload)."""
    rng = _rng(seed, _day_of(trig.time_us), _T_INCIDENT, _tag(trig.kind), trig.key)
    opened = trig.time_us + int(rng.integers(60, 480)) * _SEC
    opened_data: dict[str, Any] = {"title": trig.title, "severity": trig.severity}
    if trig.namespace is not None:
        opened_data["namespace"] = trig.namespace
    if trig.service is not None:
        opened_data["service"] = trig.service
    steps: list[tuple[int, str, dict[str, Any]]] = [(opened, "opened", opened_data)]
    level = _SEVERITIES.index(trig.severity)
    draws = rng.random(8)
    escalate = level > 0 and draws[0] < 0.12
    held = _SEVERITIES[level - 1] if escalate else trig.severity
    ack = _ack_time(opened, held, draws[1] < _BREACH_P[held], rng)
    if trig.kind == "securityhub" and draws[2] < 0.35:
        # Compliance incidents raised by automation sometimes sit in the queue for days.
        ack = opened + int(rng.integers(20 * 60, 72 * 60)) * _MIN
    if escalate:
        steps.append(
            (
                opened + int((ack - opened) * rng.uniform(0.2, 0.7)) // _SEC * _SEC,
                "severity_changed",
                {"severity": held},
            )
        )
    steps.append((ack, "acknowledged", {"by": _oncall(seed, ack)}))
    lo_m, hi_m, lo_r, hi_r = {
        "P0": (15, 75, 20, 200),
        "P1": (30, 240, 60, 400),
        "P2": (60, 600, 120, 1440),
        "P3": (120, 2880, 60, 2880),
    }[held]
    t = ack
    if held != "P3" or draws[3] < 0.4:
        t = ack + int(rng.integers(lo_m, hi_m)) * _MIN
        steps.append((t, "mitigated", {"by": _oncall(seed, t)}))
        if held in ("P0", "P1") and draws[6] < 0.1:
            lower = _SEVERITIES[_SEVERITIES.index(held) + 1]
            at = t + int(rng.integers(2, 15)) * _MIN  # before the earliest resolution (20 min)
            steps.append((at, "severity_changed", {"severity": lower}))
    resolved = t + int(rng.integers(lo_r, hi_r)) * _MIN
    if draws[4] < 0.6:
        note = trig.note or _NOTES.get(trig.kind, f"Investigating: {trig.title}.")
        steps.append((ack + (resolved - ack) // 2 // _SEC * _SEC, "annotated", {"note": note}))
    steps.append((resolved, "resolved", {"by": _oncall(seed, resolved)}))
    if held != "P3" and draws[5] < 0.1:
        again = resolved + int(rng.integers(60, 720)) * _MIN
        steps.append((again, "reopened", {"by": _oncall(seed, again)}))
        resolved = again + int(rng.integers(60, 300)) * _MIN
        steps.append((resolved, "resolved", {"by": _oncall(seed, resolved)}))
    if held in ("P0", "P1"):
        t = resolved + int(rng.integers(24 * 60, 4 * 24 * 60)) * _MIN
        steps.append((t, "postmortem_linked", {}))
    steps.sort(key=lambda step: step[0])
    return steps


def _incident_raws(seed: int, plans: dict[int, DayPlan], lo: int, hi: int) -> list[dict[str, Any]]:
    """Lifecycle events of incidents opened in [lo, hi], numbered per month of opening."""
    incidents = [_lifecycle(seed, trig) for day in sorted(plans) for trig in plans[day].triggers]
    incidents.sort(key=lambda steps: (steps[0][0], steps[0][2]["title"]))
    numbers: dict[str, int] = {}
    out: list[dict[str, Any]] = []
    for steps in incidents:
        opened = steps[0][0]
        month = us_to_datetime(opened).strftime("%Y-%m")
        numbers[month] = numbers.get(month, 0) + 1
        if not lo <= opened <= hi:
            continue
        inc_id = f"INC-{month}-{numbers[month]:03d}"
        kinds: dict[str, int] = {}
        for t, kind, payload in steps:
            kinds[kind] = kinds.get(kind, 0) + 1
            if t > hi:
                continue
            data = {"incident_id": inc_id, **payload}
            if kind == "postmortem_linked":
                data["url"] = f"{POSTMORTEM_URL}{inc_id}"
            event_id = f"{inc_id}/{kind}" + (f"-{kinds[kind]}" if kinds[kind] > 1 else "")
            out.append(
                _raw(
                    "incidents",
                    event_id,
                    f"opsledger.incident.{kind}",
                    t,
                    data,
                    cluster=kind == "opened",
                )
            )
    return out


# -- money and policy -----------------------------------------------------------------------------

#: Expected spend per day at the reference month, for sizing budgets (all services, USD).
_DAILY_USD: Final = 865.0


def _cost_raws(w: World, day: int) -> list[dict[str, Any]]:
    """One finished day's spend per service (Cost Explorer's daily granularity)."""
    rng = _rng(w.seed, day, _T_COST)
    noise = rng.normal(0.0, 1.0, 8)
    compute = sum(
        w.nodes[i].itype.usd_hour for h in range(day * 24, day * 24 + 24) for i in w.alive_all(h)
    )
    mid = np.array([float(day * _DAY + _DAY // 2)])
    ebs_gib = float(w.pvcs.state(mid)[1].sum()) / _GIB
    g = float(_growth(mid)[0])
    spend = {
        "AmazonEC2": compute + ebs_gib * 0.096 / 30.4,
        "AmazonEKS": 2.40 + 0.12 * compute,
        "AmazonS3": 38.0 * g * (1 + 0.04 * noise[0]),
        "AmazonRDS": 172.0 * (1 + 0.01 * noise[1]),
        "AmazonCloudWatch": 24.0 * g * (1 + 0.05 * noise[2]),
        "AmazonGuardDuty": 11.0 * (1 + 0.06 * noise[3]),
        "AWSSecurityHub": 4.5 * (1 + 0.05 * noise[4]),
    }
    date = dt.date(1970, 1, 1) + dt.timedelta(days=day)
    return [
        _raw(
            "cost",
            f"cost/{date}/{service}",
            "opsledger.cost.daily",
            (day + 1) * _DAY,
            {
                "date": date.isoformat(),
                "service": service,
                "amount": round(float(amount), 2),
                "currency": "USD",
            },
            cluster=False,
        )
        for service, amount in spend.items()
    ]


def _budget_amount(seed: int, month: dt.date) -> float:
    """Budgets are set near the expected spend; every other month (per seed) too tight by 13 %."""
    index = month.year * 12 + month.month - 1
    days = (_next_month(month) - month).days
    mid = np.array([float(_date_us(month) + days * _DAY // 2)])
    factor = 0.87 if (index + seed) % 2 else 1.12
    return float(round(_DAILY_USD * float(_growth(mid)[0]) * days * factor, -2))


def _start_raws(w: World, since: dt.date, start_us: int, now_us: int) -> list[dict[str, Any]]:
    """What a collector observes when it starts: the SLA policy, budgets, running nodes."""
    tag = since.isoformat()
    out = [
        _raw(
            "sla",
            f"sla-policy/{tag}",
            "opsledger.sla.policy_set",
            start_us,
            dict(SLA_POLICY),
            cluster=False,
        )
    ]
    month = _month_start(since)
    while _date_us(month) <= now_us:
        at = max(_date_us(month), start_us)
        event_id = f"budget/{month:%Y-%m}" + ("" if at == _date_us(month) else f"@{tag}")
        data = {
            "month": f"{month:%Y-%m}",
            "amount": _budget_amount(w.seed, month),
            "currency": "USD",
        }
        out.append(_raw("budget", event_id, "opsledger.budget.set", at, data, cluster=False))
        month = _next_month(month)
    for i in w.alive_all(start_us // _HOUR):
        node = w.nodes[i]
        if node.first_h * _HOUR < start_us:
            out.append(
                _node_status(
                    node, start_us, True, "KubeletReady", f"node/{node.name}/observed/{tag}"
                )
            )
    return out


# -- assembly -------------------------------------------------------------------------------------


def _validated(raws: Sequence[dict[str, Any]]) -> list[Event]:
    """Validate through the contract, as any producer's events are."""
    return [_validate(raw, i) for i, raw in enumerate(raws)]


def _discrete(w: World, since: dt.date, start_us: int, now_us: int) -> list[Event]:
    """Every non-sample event in [start, now], in time order."""
    first_day = _day_of(_date_us(_month_start(since))) - 1
    last_day = _day_of(now_us)
    plans = {d: day_plan(w, d) for d in range(first_day, last_day + 1)}
    raws = _start_raws(w, since, start_us, now_us)
    for d, plan in plans.items():
        if d >= _day_of(start_us):
            raws.extend(plan.raws)
            if (d + 1) * _DAY <= now_us:
                raws.extend(_cost_raws(w, d))
    raws.extend(_incident_raws(w.seed, plans, start_us, now_us))
    kept = [r for r in raws if start_us <= _time_of(r) <= now_us]
    events = _validated(kept)
    events.sort(key=lambda e: (e.time_us, e.source, e.id))
    return events


def _time_of(raw: dict[str, Any]) -> int:
    """A raw event's time in microseconds."""
    return parse_rfc3339_us(raw["time"])


def _days(since: dt.date, now_us: int, seed: int) -> Iterator[tuple[int, int, list[list[Event]]]]:
    """(day number, days in all, the day's batches) in time order."""
    if seed < 0:
        raise ValueError("seed must be a non-negative integer")
    start_us = _date_us(since)
    if now_us < start_us:
        return
    # Incident numbers count from the month's start, and nodes may have launched 14 days earlier.
    first_h = (_date_us(_month_start(since)) - _DAY) // _HOUR - _ROTATE_H - 24
    w = World.build(seed, first_h, now_us // _DAY * 24 + 48)
    discrete = _discrete(w, since, start_us, now_us)
    days = range(_day_of(start_us), _day_of(now_us) + 1)
    k = 0
    for n, day in enumerate(days, start=1):
        hours = [h for h in range(day * 24, day * 24 + 24) if (h + 1) * _HOUR <= now_us]
        events = [hour_event(w, h) for h in hours]
        while k < len(discrete) and _day_of(discrete[k].time_us) <= day:
            events.append(discrete[k])
            k += 1
        events.sort(key=lambda e: e.time_us)
        yield n, len(days), [events[i : i + MAX_BATCH] for i in range(0, len(events), MAX_BATCH)]


def generate(since: dt.date, now_us: int, seed: int = 7) -> Iterator[list[Event]]:
    """Batches (at most MAX_BATCH events) of validated demo events from `since` to `now`."""
    for _, _, batches in _days(since, now_us, seed):
        yield from batches


def load(
    ledger: Ledger,
    since: dt.date,
    now_us: int,
    seed: int = 7,
    progress: Callable[[int, int], None] | None = None,
) -> DemoTotals:
    """Append the demo history; `progress(days_done, days_total)` is called after each day."""
    accepted = duplicates = events = samples = 0
    for day, days, batches in _days(since, now_us, seed):
        for batch in batches:
            result = ledger.append(batch)
            accepted += result.accepted
            duplicates += result.duplicates
            events += len(batch)
            samples += sum(len(e.samples) for e in batch if e.samples is not None)
        if progress is not None:
            progress(day, days)
    return DemoTotals(accepted, duplicates, events, samples)


__all__ = [
    "DEMO_SOURCE_PREFIX",
    "DemoTotals",
    "default_since",
    "generate",
    "load",
]
