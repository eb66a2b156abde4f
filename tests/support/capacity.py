"""The hand-made cluster of tests/test_api_capacity.py: two clusters' node and namespace samples
over three hours, every value a function of (cluster, member, step), one of them corrected by a
later event. Other tests post the same samples when any realistic capacity data will do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from support.payloads import cloudevent, sample

SOURCE = "//opsledger.test/capacity"
T0 = datetime(2026, 10, 14, tzinfo=UTC)
STEPS = 36  # three hours of five-minute timestamps
GIB = 2**30
# cluster -> node -> (node pool, cpu allocatable, memory allocatable)
NODES: dict[str, dict[str, tuple[str, float, float]]] = {
    "c1": {
        "n1": ("general", 4.0, 16 * GIB),
        "n2": ("general", 8.0, 32 * GIB),
        "n3": ("memory", 16.0, 128 * GIB),
    },
    "c2": {"m1": ("general", 2.0, 8 * GIB)},
}
NAMESPACES: dict[str, tuple[str, ...]] = {"c1": ("web", "db"), "c2": ("web",)}
# A second, later sample of one series at one timestamp: the later ledger position wins.
CORRECTED = ("c1", "n1", 5, 3.9)


def ts(i: int) -> datetime:
    return T0 + timedelta(minutes=5 * i)


def rfc(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the hand-made cluster: every value is a function of (cluster, member, step) -------------


def node_cpu(cluster: str, node: str, i: int) -> float:
    if (cluster, node, i) == CORRECTED[:3]:
        return CORRECTED[3]
    base = {"n1": 1.0, "n2": 2.0, "n3": 4.0, "m1": 0.5}[node]
    return base + 0.05 * i + 0.25 * (i % 4)


def node_mem(node: str, i: int) -> float:
    return {"n1": 6.0, "n2": 20.0, "n3": 90.0, "m1": 3.0}[node] * GIB + (i % 5) * 0.25 * GIB


def ns_cpu(ns: str, i: int) -> float:
    return {"web": 3.0, "db": 5.0}[ns] + 0.1 * (i % 7)


def ns_cpu_requests(ns: str, i: int) -> float:
    return {"web": 6.0, "db": 10.0}[ns] + (i // 12)  # changes every hour


def ns_pods(ns: str, i: int) -> int:
    return {"web": 12, "db": 5}[ns] + i % 3


def samples_events() -> list[dict[str, Any]]:
    """One event per cluster and hour, with the node and namespace samples of that hour."""
    out = []
    for cluster, nodes in NODES.items():
        for hour in range(STEPS // 12):
            batch = []
            for i in range(hour * 12, hour * 12 + 12):
                t = rfc(ts(i))
                for node, (pool, cpu_a, mem_a) in nodes.items():
                    labels = {"node": node, "nodepool": pool, "zone": "us-gov-west-1a"}
                    # The value before correction is recorded first (lower position).
                    cpu = node_cpu(cluster, node, i) if (cluster, node, i) != CORRECTED[:3] else 0.1
                    batch += [
                        sample("node_cpu_usage_cores", labels, t, cpu),
                        sample("node_cpu_allocatable_cores", labels, t, cpu_a),
                        sample("node_memory_usage_bytes", labels, t, node_mem(node, i)),
                        sample("node_memory_allocatable_bytes", labels, t, mem_a),
                    ]
                for ns in NAMESPACES[cluster]:
                    labels = {"namespace": ns}
                    batch += [
                        sample("namespace_cpu_usage_cores", labels, t, ns_cpu(ns, i)),
                        sample("namespace_cpu_requests_cores", labels, t, ns_cpu_requests(ns, i)),
                        sample("namespace_memory_usage_bytes", labels, t, 2.0 * GIB),
                        sample("namespace_memory_requests_bytes", labels, t, 4.0 * GIB),
                        sample("namespace_pod_count", labels, t, ns_pods(ns, i)),
                    ]
            out.append(
                cloudevent(
                    "opsledger.metric.samples",
                    {"samples": batch},
                    id=f"{cluster}-h{hour}",
                    source=SOURCE,
                    cluster=cluster,
                    time=rfc(ts(hour * 12 + 11)),
                )
            )
    return out


def correction_event() -> dict[str, Any]:
    cluster, node, i, value = CORRECTED
    pool = NODES[cluster][node][0]
    labels = {"node": node, "nodepool": pool, "zone": "us-gov-west-1a"}
    return cloudevent(
        "opsledger.metric.samples",
        {"samples": [sample("node_cpu_usage_cores", labels, rfc(ts(i)), value)]},
        id="c1-correction",
        source=SOURCE,
        cluster=cluster,
        time=rfc(ts(i)),
    )
