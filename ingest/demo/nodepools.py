"""NodePools: the custom pools' limits (the GPU pool's raised once a month) and their status."""

from __future__ import annotations

import datetime as dt
from functools import cache
from typing import TYPE_CHECKING, Any, Final

from ingest.demo.catalogue import GPU_POOL, HOT_POOL, INSTANCE_TYPES, POOLS, ZONES
from ingest.demo.facts import DayPlan, cloudevent
from ingest.demo.units import GIB, HOUR
from store.event_types import EventType
from store.timefmt import format_us

if TYPE_CHECKING:
    from ingest.demo.world import World

#: The GPU NodePool's limit is raised by one g5.2xlarge on the 15th of each month, 16:00 UTC:
#: GPU capacity is rationed, and inference demand has outgrown every raise so far.
_RAISE_DAY: Final = 15
_RAISE_HOUR: Final = 16
#: The month whose raise takes the limit from 3 to 4 nodes; far months stay within 2 to 8.
_GPU_REF_MONTH: Final = 2026 * 12 + 9
_GPU_NODES: Final = (2, 8)
_GPU_TYPE: Final = INSTANCE_TYPES["g5.2xlarge"]
#: The memory-optimized pool's limits hold `max_nodes` of its instance mix.
_HOT_LIMITS: Final = {"cpu_cores": 96.0, "memory_bytes": 768 * GIB}
#: Status events: when a NodePool changes, seen at 6-hour marks, and at each midnight.
_EVERY_H: Final = 6


def gpu_limit_nodes(t_us: int) -> int:
    """How many GPU nodes the GPU NodePool's limit allows at t."""
    return _gpu_nodes_hour(t_us // HOUR)


@cache
def _gpu_nodes_hour(h: int) -> int:
    """The GPU limit in nodes during hour h."""
    t = dt.datetime(1970, 1, 1) + dt.timedelta(hours=h)
    months = t.year * 12 + t.month - 1 - _GPU_REF_MONTH
    raised = (t.day, t.hour) >= (_RAISE_DAY, _RAISE_HOUR)
    return min(max(3 + months + int(raised), _GPU_NODES[0]), _GPU_NODES[1])


def limits(pool: str, t_us: int) -> dict[str, float | int] | None:
    """A NodePool's `spec.limits` at t; None for EKS Auto Mode's built-in pools (no limits)."""
    if pool == HOT_POOL:
        return dict(_HOT_LIMITS)
    if pool == GPU_POOL:
        n = gpu_limit_nodes(t_us)
        # Memory is not what binds: the limit leaves room for larger GPU instances.
        return {"cpu_cores": float(n * _GPU_TYPE.vcpu), "memory_bytes": n * 48 * GIB}
    return None


def _status(w: World, pool: str, t_us: int, h: int, event_id: str) -> dict[str, Any]:
    """An `opsledger.k8s.nodepool.status` event: limits, the nodes of hour h, zones."""
    nodes = [w.nodes[i].itype for i in w.alive(pool, h)]
    data: dict[str, Any] = {"nodepool": pool}
    spec = limits(pool, t_us)
    if spec is not None:
        data["limits"] = spec
    data["resources"] = {
        "cpu_cores": float(sum(t.vcpu for t in nodes)),
        "memory_bytes": sum(t.mem_gib for t in nodes) * GIB,
        "nodes": len(nodes),
    }
    data["zones"] = list(ZONES)
    return cloudevent("k8s", event_id, EventType.K8S_NODEPOOL_STATUS, t_us, data)


def nodepool_facts(w: World, day: int, plan: DayPlan) -> None:
    """Each NodePool at midnight (the collector's daily resync) and at the 6-hour marks its
    size changed at, and the GPU pool's limit raise when it happens."""
    for h in range(day * 24, day * 24 + 24, _EVERY_H):
        if not w.h0 < h < w.h1:
            continue
        for pool in POOLS:
            if h % 24 and len(w.alive_idx(pool.name, h)) == len(
                w.alive_idx(pool.name, h - _EVERY_H)
            ):
                continue
            t = h * HOUR
            plan.raws.append(_status(w, pool.name, t, h, f"nodepool/{pool.name}/{format_us(t)}"))
    raise_h = day * 24 + _RAISE_HOUR
    if w.h0 < raise_h < w.h1 and gpu_limit_nodes(raise_h * HOUR) != gpu_limit_nodes(
        raise_h * HOUR - HOUR
    ):
        # The spec changes first: the resources are still those of the hour before.
        t = raise_h * HOUR
        event_id = f"nodepool/{GPU_POOL}/{format_us(t)}/limits"
        plan.raws.append(_status(w, GPU_POOL, t, raise_h - 1, event_id))
