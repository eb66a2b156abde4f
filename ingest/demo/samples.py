"""The hourly `opsledger.metric.samples` events: node, namespace and PVC usage every 5 minutes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
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
from ingest.demo.draws import T_GAP, T_SAMPLES, keyed_rng
from ingest.demo.pods import HourPods
from ingest.demo.units import HOUR, MIN, day_of
from ingest.demo.workloads import ATTRIBUTED, SURGE_NAMESPACE
from ingest.demo.world import FloatArray, IntArray, World, season
from store.contract import Event, batch_from_columns, samples_event
from store.timefmt import format_us

_TICK: Final = 5 * MIN
_TICKS: Final = 12
#: Unattributed usage on a pool: kubelet, container runtime, Auto Mode's managed daemons.
_ATTRIBUTED: Final = ATTRIBUTED


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


@dataclass(frozen=True, slots=True)
class NamespaceUsage:
    """The namespaces' usage an hourly event holds (namespaces x ticks), and the part of it
    that is not a hot window's surge (what their containers other than `surge` ones use)."""

    cpu: FloatArray
    mem: FloatArray
    cpu_base: FloatArray
    mem_base: FloatArray


def hour_event(w: World, h: int, pods: HourPods) -> tuple[Event, NamespaceUsage]:
    """The `opsledger.metric.samples` event of one cluster-hour (12 five-minute ticks), and the
    namespaces' usage it holds, for their containers."""
    t = h * HOUR + np.arange(_TICKS, dtype=np.int64) * _TICK
    tf = t.astype(np.float64)
    rng = keyed_rng(w.seed, h, T_SAMPLES)
    cols = _Columns()
    cpu_used, mem_used, base = _node_columns(w, h, tf, rng, cols)
    usage = _namespace_columns(rng, cols, cpu_used, mem_used, base, pods)
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
    event = samples_event(f"{DEMO_SOURCE_PREFIX}/metrics", event_id, int(t[-1]), CLUSTER, batch)
    return event, usage


def _pool_util(
    w: World, pool: Pool, tf: FloatArray, noise: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Pool-wide CPU and memory utilisation per tick, and the part of each that is not a hot
    window's surge (2 x ticks); hot windows run above 85 %."""
    s = season(tf)
    cpu = pool.cpu[0] + pool.cpu[1] * s + 0.015 * noise[0]
    mem = pool.mem[0] + pool.mem[1] * s + 0.010 * noise[1]
    base = np.ones((2, _TICKS))
    if pool.name == HOT_POOL:
        hot = np.array([w.is_hot(int(x)) for x in tf])
        if hot.any():
            hot_cpu = np.where(hot, 0.92 + 0.015 * noise[0], cpu)
            hot_mem = np.where(hot, 0.895 + 0.010 * noise[1], mem)
            base = np.vstack([cpu / hot_cpu, mem / hot_mem])
            cpu, mem = hot_cpu, hot_mem
    return cpu, mem, base


def _reporting(w: World, idx: IntArray, tf: FloatArray) -> npt.NDArray[np.bool_]:
    """Ticks at which each node reports (metrics-server cannot scrape a NotReady kubelet)."""
    keep = np.ones((len(idx), _TICKS), dtype=np.bool_)
    for flap in w.flaps.get(day_of(int(tf[0])), []):
        down = np.isin(idx, flap.nodes)
        if down.any():
            keep[down] &= ~((tf >= flap.start_us) & (tf < flap.end_us))
    return keep


def _calm_hour(w: World, h: int) -> int:
    """The hour before the hot window hour h is in (h itself outside one)."""
    window = w.hot.get(h // 24)
    if window is None or not window[0] <= h * HOUR < window[1]:
        return h
    return window[0] // HOUR - 1


def _node_columns(
    w: World, h: int, tf: FloatArray, rng: np.random.Generator, cols: _Columns
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Node usage and allocatable; returns per-pool usage totals per tick (pools x ticks) and
    the share of each that is not a hot window's surge (pools x 2 x ticks)."""
    pool_noise = rng.normal(0.0, 1.0, (len(POOLS), 2, _TICKS))
    cpu_tot = np.zeros((len(POOLS), _TICKS))
    mem_tot = np.zeros((len(POOLS), _TICKS))
    base = np.ones((len(POOLS), 2, _TICKS))
    for p, pool in enumerate(POOLS):
        cpu_u, mem_u, base[p] = _pool_util(w, pool, tf, pool_noise[p])
        idx = w.alive_idx(pool.name, h)
        if pool.name == HOT_POOL and (base[p] < 1).any():
            # Nor are the nodes the surge brought: the calm part ran on the nodes before it.
            calm = w.alive_idx(pool.name, _calm_hour(w, h))
            base[p] *= np.array(
                [
                    [w.node_cpu[calm].sum() / w.node_cpu[idx].sum()],
                    [w.node_mem[calm].sum() / w.node_mem[idx].sum()],
                ]
            )
        noise = rng.normal(0.0, 1.0, (len(idx), 2, _TICKS))
        factor = w.node_factor[idx][:, None]
        cpu_alloc = w.node_cpu[idx][:, None]
        mem_alloc = w.node_mem[idx][:, None]
        cpu = cpu_alloc * np.clip(cpu_u * factor * (1 + 0.04 * noise[:, 0]), 0.02, 0.98)
        mem = mem_alloc * np.clip(mem_u * factor * (1 + 0.02 * noise[:, 1]), 0.05, 0.98)
        mem = np.rint(mem / 4096.0) * 4096.0
        cpu_tot[p] = cpu.sum(axis=0)
        mem_tot[p] = mem.sum(axis=0)
        labels = [w.node_labels[i] for i in idx.tolist()]
        keep = _reporting(w, idx, tf)
        cols.add("node_cpu_usage_cores", labels, np.round(cpu, 4), keep)
        cols.add("node_cpu_allocatable_cores", labels, cpu_alloc, keep)
        cols.add("node_memory_usage_bytes", labels, mem, keep)
        cols.add("node_memory_allocatable_bytes", labels, mem_alloc, keep)
    return cpu_tot, mem_tot, base


def _shares(attr: str) -> FloatArray:
    """Each namespace's share of its pool, normalised per pool."""
    raw = np.array([getattr(n, attr) for n in NAMESPACES])
    totals = {p.name: sum(getattr(n, attr) for n in NAMESPACES if n.pool == p.name) for p in POOLS}
    out: FloatArray = raw / np.array([totals[n.pool] for n in NAMESPACES])
    return out


_NS_POOL: Final = np.array([POOL_INDEX[n.pool] for n in NAMESPACES])
_NS_CPU_SHARE: Final = _shares("cpu_share")
_NS_MEM_SHARE: Final = _shares("mem_share")
_NS_LABELS: Final = [{"namespace": n.name} for n in NAMESPACES]
#: The batch namespace whose jobs make the hot windows, and its pool's other namespaces.
_SURGE_NS: Final = [n.name for n in NAMESPACES].index(SURGE_NAMESPACE)
_SURGE_PEERS: Final = [j for j, n in enumerate(NAMESPACES) if n.pool == HOT_POOL and j != _SURGE_NS]
_PVC_LABELS: Final = [{"namespace": p.namespace, "persistentvolumeclaim": p.name} for p in PVCS]


def _namespace_columns(
    rng: np.random.Generator,
    cols: _Columns,
    cpu_tot: FloatArray,
    mem_tot: FloatArray,
    base: FloatArray,
    pods: HourPods,
) -> NamespaceUsage:
    """Namespace usage is its share of its pool's usage, but a hot window's surge is all the
    batch namespace's; requests and pods are its containers' (ingest/demo/pods.py)."""
    noise = rng.normal(0.0, 1.0, (len(NAMESPACES), 2, _TICKS))
    scale = _ATTRIBUTED * (1 + np.array([0.03, 0.02])[None, :, None] * noise)
    cpu = cpu_tot[_NS_POOL] * _NS_CPU_SHARE[:, None] * scale[:, 0]
    mem = mem_tot[_NS_POOL] * _NS_MEM_SHARE[:, None] * scale[:, 1]
    # A hot window's surge is the batch namespace's: its pool's others keep their usual usage.
    usual = (cpu * base[_NS_POOL, 0], mem * base[_NS_POOL, 1])
    for total, calm in zip((cpu, mem), usual, strict=True):
        total[_SURGE_NS] += (total - calm)[_SURGE_PEERS].sum(axis=0)
        total[_SURGE_PEERS] = calm[_SURGE_PEERS]
    cpu, mem = np.round(cpu, 4), np.rint(mem / 4096.0) * 4096.0
    cols.add("namespace_cpu_usage_cores", _NS_LABELS, cpu)
    cols.add("namespace_cpu_requests_cores", _NS_LABELS, np.round(pods.ns_cpu_request, 3)[:, None])
    cols.add("namespace_memory_usage_bytes", _NS_LABELS, mem)
    cols.add("namespace_memory_requests_bytes", _NS_LABELS, pods.ns_mem_request[:, None])
    cols.add("namespace_pod_count", _NS_LABELS, pods.ns_pods[:, None])
    cpu_base, mem_base = cpu.copy(), mem.copy()
    cpu_base[_SURGE_NS] = np.minimum(cpu[_SURGE_NS], usual[0][_SURGE_NS])
    mem_base[_SURGE_NS] = np.minimum(mem[_SURGE_NS], usual[1][_SURGE_NS])
    return NamespaceUsage(cpu, mem, cpu_base, mem_base)


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
