"""The hourly `opsledger.metric.samples` events: node, namespace and PVC usage every 5 minutes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Final

import numpy as np
import numpy.typing as npt

from ingest.demo.catalogue import (
    CLUSTER,
    DEMO_SOURCE_PREFIX,
    HOT_POOL,
    NAMESPACES,
    POOL_INDEX,
    POOLS,
    PVCS,
    Pool,
)
from ingest.demo.draws import T_GAP, T_SAMPLES, T_STEP, keyed_rng, text_tag
from ingest.demo.units import DAY, HOUR, MIN, day_of
from ingest.demo.world import FloatArray, World, season
from store.contract import Event, batch_from_columns, samples_event
from store.timefmt import format_us

_TICK: Final = 5 * MIN
_TICKS: Final = 12
#: Unattributed usage on a pool: kubelet, container runtime, Auto Mode's managed daemons.
_ATTRIBUTED: Final = 0.9


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
    t = h * HOUR + np.arange(_TICKS, dtype=np.int64) * _TICK
    tf = t.astype(np.float64)
    rng = keyed_rng(w.seed, h, T_SAMPLES)
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
    event_id = f"samples/{CLUSTER}/{format_us(h * HOUR)}"
    return samples_event(f"{DEMO_SOURCE_PREFIX}/metrics", event_id, int(t[-1]), CLUSTER, batch)


def _pool_util(
    w: World, pool: Pool, tf: FloatArray, noise: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Pool-wide CPU and memory utilisation per tick; hot windows run above 85 %."""
    s = season(tf)
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
    for flap in w.flaps.get(day_of(int(tf[0])), []):
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
    week = (t_us + ns_index * 13 * HOUR) // (7 * DAY)
    return _step_of(seed, week, ns_index)


@cache
def _step_of(seed: int, week: int, ns_index: int) -> float:
    """The request level of one namespace-week."""
    rng = keyed_rng(seed, week, T_STEP, text_tag(NAMESPACES[ns_index].name))
    return float(rng.choice([0.92, 1.0, 1.08], p=[0.25, 0.5, 0.25]))


def _shares(attr: str) -> FloatArray:
    """Each namespace's share of its pool, normalised per pool."""
    raw = np.array([getattr(n, attr) for n in NAMESPACES])
    totals = {p.name: sum(getattr(n, attr) for n in NAMESPACES if n.pool == p.name) for p in POOLS}
    out: FloatArray = raw / np.array([totals[n.pool] for n in NAMESPACES])
    return out


_NS_POOL: Final = np.array([POOL_INDEX[n.pool] for n in NAMESPACES])
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
    if w.is_hot(h * HOUR):
        commit[POOL_INDEX[HOT_POOL]] = 0.90
    step = np.array([_step(w.seed, j, h * HOUR) for j in range(len(NAMESPACES))])
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
    gaps = table.gappy & (keyed_rng(w.seed, h // 3, T_GAP).random(len(PVCS)) < 0.03)
    used, cap = table.state(tf)
    daily = 0.004 * np.sin(2 * np.pi * (tf[None, :] / HOUR - table.phase_h[:, None]) / 24.0)
    used = np.clip(used * (1 + daily + 0.0008 * noise), 0.0, 0.995 * cap)
    keep = np.repeat(~gaps[:, None], _TICKS, axis=1)
    cols.add("pvc_used_bytes", _PVC_LABELS, np.rint(used / 4096.0) * 4096.0, keep)
    cols.add("pvc_capacity_bytes", _PVC_LABELS, cap, keep)
