"""The cluster's shape over time: load, nodes and their rotation, flaps, hot windows, volumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from ingest.demo.catalogue import (
    GPU_POOL,
    HOT_POOL,
    INSTANCE_TYPES,
    POOL_INDEX,
    POOLS,
    PVCS,
    ZONES,
    InstanceType,
    Pool,
    Pvc,
)
from ingest.demo.draws import (
    T_FLAP,
    T_HOT,
    T_NODES,
    T_PVC,
    keyed_rng,
    stable_hex,
    stable_unit,
    text_tag,
)
from ingest.demo.nodepools import gpu_limit_nodes
from ingest.demo.units import DAY, GIB, HOUR, MIN, SEC, day_of, utc_us

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: EKS Auto Mode replaces every node after 14 days (NodePool `expireAfter: 336h`).
ROTATE_H: Final = 336


# -- load model -----------------------------------------------------------------------------------

#: Load and growth are anchored here (the reference month of the demo), not at `since`.
_REF_US: Final = utc_us("2026-10-01T00:00:00")


def growth(t_us: FloatArray) -> FloatArray:
    """Slow month-over-month growth (4 %/month), bounded so far-off dates stay plausible."""
    months = np.clip((t_us - _REF_US) / (30 * DAY), -6.0, 12.0)
    return 1.0 + 0.04 * months


def season(t_us: FloatArray) -> FloatArray:
    """Load shape in [0, 1]: US-East business-day peak, quiet nights, light weekends."""
    local_h = t_us / HOUR - 5.0  # Eastern standard time is close enough for a load curve
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
    #: Per node (by index): allocatable cores, a 64-bit key (its id's digits), zone index.
    node_cpu: FloatArray = field(default_factory=lambda: np.zeros(0))
    node_key: npt.NDArray[np.uint64] = field(default_factory=lambda: np.zeros(0, np.uint64))
    node_zone: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    node_slot: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    node_pool: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    node_mem: FloatArray = field(default_factory=lambda: np.zeros(0))
    node_factor: FloatArray = field(default_factory=lambda: np.zeros(0))
    node_labels: list[dict[str, str]] = field(default_factory=list)
    #: Derived per-hour facts more than one section reads (pure functions of the hour).
    memo: dict[tuple[str, int], object] = field(default_factory=dict)

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
        for day in range(h0 // 24 + ROTATE_H // 24 + 1, h1 // 24):
            w.flaps[day] = _flaps(w, day)
        w.node_cpu = np.array([n.itype.cpu_alloc for n in w.nodes])
        w.node_key = np.array([int(n.name[3:], 16) for n in w.nodes], dtype=np.uint64)
        w.node_zone = np.array([ZONES.index(n.zone) for n in w.nodes], dtype=np.int64)
        w.node_slot = np.array([n.slot for n in w.nodes], dtype=np.int64)
        w.node_pool = np.array([POOL_INDEX[n.pool] for n in w.nodes], dtype=np.int64)
        w.node_mem = np.array([float(n.itype.mem_alloc) for n in w.nodes])
        w.node_factor = np.array([n.factor for n in w.nodes])
        w.node_labels = [{"node": n.name, "nodepool": n.pool, "zone": n.zone} for n in w.nodes]
        return w

    def _incarnate(self, pool: Pool, hours: IntArray) -> IntArray:
        """Slot k runs a node while the pool wants > k nodes; nodes also expire every 14 days."""
        counts = self.counts[pool.name]
        out = np.full((pool.max_nodes, len(hours)), -1, dtype=np.int64)
        for k in range(pool.max_nodes):
            alive = counts > k
            phase = int(stable_unit(self.seed, pool.name, k, "phase") * ROTATE_H)
            epoch = (hours + phase) // ROTATE_H
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
        u = stable_unit(*key, "type")
        acc = 0.0
        itype = pool.types[-1][0]
        for name, weight in pool.types:
            acc += weight
            if u < acc:
                itype = name
                break
        return Node(
            name="i-0" + stable_hex(*key)[:16],
            pool=pool.name,
            zone=ZONES[slot % 3],
            itype=INSTANCE_TYPES[itype],
            slot=slot,
            first_h=first_h,
            end_h=end_h,
            factor=0.88 + 0.24 * stable_unit(*key, "factor"),
        )

    def alive(self, pool: str, h: int) -> list[int]:
        """Indices of the pool's nodes running in hour h, by slot."""
        col = self.slots[pool][:, h - self.h0]
        return [int(i) for i in col if i >= 0]

    def alive_idx(self, pool: str, h: int) -> IntArray:
        """Indices of the pool's nodes running in hour h, by slot, as an array."""
        col = self.slots[pool][:, h - self.h0]
        out: IntArray = col[col >= 0]
        return out

    def alive_all(self, h: int) -> list[int]:
        """Indices of every node running in hour h."""
        return [i for p in POOLS for i in self.alive(p.name, h)]

    def is_hot(self, t_us: int) -> bool:
        """Whether the hot pool is in a hot window at t."""
        window = self.hot.get(day_of(t_us))
        return window is not None and window[0] <= t_us < window[1]


_HOT_BLOCK_DAYS: Final = 9


def _hot_window(seed: int, day: int) -> tuple[int, int] | None:
    """About every 9 days, batch jobs push the memory-optimized pool to its limit for hours."""
    # One window per 9-day block (not a daily coin flip) so every seed gets a few a month.
    block = day // _HOT_BLOCK_DAYS
    rng = keyed_rng(seed, block, T_HOT)
    offset, hour, hours = (
        int(rng.integers(0, _HOT_BLOCK_DAYS)),
        int(rng.integers(0, 19)),
        int(rng.integers(2, 6)),
    )
    if day != block * _HOT_BLOCK_DAYS + offset:
        return None
    start = day * DAY + hour * HOUR
    return start, start + hours * HOUR


def _node_counts(
    seed: int, pool: Pool, hours: IntArray, hot: dict[int, tuple[int, int]]
) -> IntArray:
    """Nodes the pool wants per hour: load x growth x a daily wobble, within its limits."""
    if pool.name == GPU_POOL:
        # Inference demand is above the GPU NodePool's limit day and night.
        return np.array([gpu_limit_nodes(int(h) * HOUR) for h in hours], dtype=np.int64)
    mid = (hours * HOUR + HOUR // 2).astype(np.float64)
    days = hours // 24
    wobble = np.ones(len(hours))
    for day in np.unique(days).tolist():
        wobble[days == day] = keyed_rng(seed, day, T_NODES).normal(1.0, 0.03, len(POOLS))[
            POOL_INDEX[pool.name]
        ]
    want = pool.base_nodes * growth(mid) * ((1 - pool.swing) + pool.swing * season(mid))
    counts = np.clip(np.rint(want * wobble), pool.min_nodes, pool.max_nodes).astype(np.int64)
    if pool.name == HOT_POOL:
        starts = hours * HOUR
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
    rng = keyed_rng(w.seed, day, T_FLAP)
    u = rng.random(2)
    starts = rng.integers(10, 23 * 60 - 40, 2)
    durations = rng.integers(3, 28, 2)
    pick = int(rng.integers(0, 1 << 30))
    reason = int(rng.integers(0, 2))
    zone = int(rng.integers(0, 3))
    out: list[Flap] = []
    gp = "general-purpose"
    if u[0] < 0.13:
        s = day * DAY + int(starts[0]) * MIN + int(pick % 60) * SEC
        e = s + int(durations[0]) * MIN
        slots = _steady_slots(w, gp, s, e)
        if slots:
            node = int(w.slots[gp][slots[pick % len(slots)], s // HOUR - w.h0])
            out.append(Flap((node,), s, e, *_FLAP_REASONS[reason]))
    if u[1] < 0.03:
        s = day * DAY + int(starts[1]) * MIN
        e = s + int(durations[1]) * MIN
        slots = [k for k in _steady_slots(w, gp, s, e) if k % 3 == zone][:3]
        if len(slots) >= 2:
            nodes = tuple(int(w.slots[gp][k, s // HOUR - w.h0]) for k in slots)
            out.append(Flap(nodes, s, e, *_FLAP_REASONS[2]))
    return out


def _steady_slots(w: World, pool: str, s: int, e: int) -> list[int]:
    """Slots running the same node through [s, e]."""
    a, b = s // HOUR - w.h0, e // HOUR - w.h0
    grid = w.slots[pool]
    return [k for k in range(grid.shape[0]) if grid[k, a] >= 0 and grid[k, a] == grid[k, b]]


# -- PVC model ------------------------------------------------------------------------------------

_PVC_REF_US: Final = utc_us("2026-11-26T00:00:00")


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
            cap0=np.array([float(p.cap_gib * GIB) for p in PVCS]),
            expand_at=np.array([float(x[0]) for x in params]),
            rate=np.array([x[1] for x in params]),
            fill=np.array([x[2] for x in params]),
            sawtooth=np.array([p.kind == "sawtooth" for p in PVCS]),
            gappy=np.array([p.gappy for p in PVCS]),
            phase_h=np.array([stable_unit(seed, p.name, "phase") * 24.0 for p in PVCS]),
        )

    def params(self, i: int) -> tuple[int, float, float]:
        """(first expansion time, daily rate, expansion fill) of volume i."""
        return int(self.expand_at[i]), float(self.rate[i]), float(self.fill[i])

    def state(self, t_us: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(used, capacity) in bytes of every volume (rows) at the times (columns), noiseless."""
        cap0, fill = self.cap0[:, None], self.fill[:, None]
        days = (t_us[None, :] - self.expand_at[:, None]) / DAY
        used = cap0 * np.maximum(fill + self.rate[:, None] * days, 0.12)
        doublings = np.floor(np.log2(np.maximum(used / (fill * cap0), 1.0)))
        cap = cap0 * np.where(days >= 0, 2.0 ** (doublings + 1), 1.0)
        # Logs rotate daily at 02:00 UTC; compressed archives are purged on Mondays.
        tt = t_us - 2 * HOUR
        weekday = (np.floor(tt / DAY) + 3.0) % 7.0
        saw = 0.16 + 0.035 * weekday + 0.30 * (tt % DAY) / DAY
        used = np.where(self.sawtooth[:, None], cap0 * saw[None, :], used)
        cap = np.where(self.sawtooth[:, None], cap0, cap)
        return used, cap


def _pvc_params(seed: int, pvc: Pvc) -> tuple[int, float, float]:
    """A quiet volume's fill on the reference day and growth rate are drawn per seed."""
    if pvc.expand_at is not None:
        return pvc.expand_at, pvc.rate, pvc.expand_fill
    rng = keyed_rng(seed, text_tag(f"{pvc.namespace}/{pvc.name}"), T_PVC)
    fill, rate = float(rng.uniform(0.22, 0.66)), float(rng.uniform(0.0003, 0.0018))
    return _PVC_REF_US + round((0.94 - fill) / rate * DAY), rate, 0.94


def pvc_crossings(
    params: tuple[int, float, float], threshold: float, lo: int, hi: int
) -> list[int]:
    """Times in [lo, hi) when a growing volume's fill rises through `threshold`."""
    expand_at, rate, fill = params
    if threshold >= fill:
        return []
    times = [expand_at - round((fill - threshold) / rate * DAY)]
    times += [expand_at + round((threshold * 2 ** (n + 1) - fill) / rate * DAY) for n in range(8)]
    return [t for t in times if lo <= t < hi]
