"""A day's `container_*` samples every 15 minutes, in one `opsledger.metric.samples` event.

Container usage splits the namespace usage the hourly events already carry, so summed per
namespace it is `namespace_cpu_usage_cores` at the same instant. One event a day rather
than an hour keeps the ledger small: a series' labels are stored once per event.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from ingest.demo.catalogue import CLUSTER, DEMO_SOURCE_PREFIX
from ingest.demo.draws import T_CONTAINER, keyed_rng
from ingest.demo.pods import HourPods
from ingest.demo.samples import NamespaceUsage
from ingest.demo.units import DAY, HOUR, MIN
from ingest.demo.workloads import MIB, WORKLOADS
from ingest.demo.world import FloatArray, IntArray, World
from store.contract import Event, batch_from_columns, samples_event
from store.timefmt import format_us

TICK: Final = 15 * MIN
#: The hourly events' five-minute ticks that fall on the quarter hours.
QUARTERS: Final = np.array([0, 3, 6, 9])
_PER_HOUR: Final = len(QUARTERS)
_SURGE: Final = np.array([[float(w.surge)] for w in WORKLOADS])
_METRICS: Final = (
    "container_cpu_usage_cores",
    "container_memory_working_set_bytes",
    "container_cpu_requests_cores",
    "container_memory_requests_bytes",
    "container_cpu_limits_cores",
    "container_memory_limits_bytes",
)


def _labels(w: World, pods: HourPods, r: int) -> dict[str, str]:
    """The labels of row r's container."""
    spec = WORKLOADS[int(pods.workload[r])]
    return {
        "namespace": spec.namespace,
        "pod": pods.pod[r],
        "container": spec.pod_containers[int(pods.container[r])].name,
        "workload_kind": spec.kind,
        "workload": spec.name,
        "node": w.nodes[int(pods.node[r])].name,
    }


def day_event(w: World, day: int, hours: Sequence[tuple[HourPods, NamespaceUsage]]) -> Event:
    """The container samples of one day from its 24 hours' pods and namespace usage."""
    # A series per container and node: a StatefulSet's pod keeps its name on a new node.
    ids: dict[tuple[str, int, int, int], int] = {}
    labels: list[dict[str, str]] = []
    cid_parts, hour_parts, group_parts, noise_parts = [], [], [], []
    n_ns = hours[0][1].cpu.shape[0]
    for k, (pods, _) in enumerate(hours):
        h = day * 24 + k
        cids = np.empty(len(pods.pod), dtype=np.int64)
        keys = zip(
            pods.pod,
            pods.workload.tolist(),
            pods.container.tolist(),
            pods.node.tolist(),
            strict=True,
        )
        for r, key in enumerate(keys):
            cid = ids.get(key)
            if cid is None:
                cid = ids[key] = len(labels)
                labels.append(_labels(w, pods, r))
            cids[r] = cid
        cid_parts.append(cids)
        hour_parts.append(np.full(len(cids), k, dtype=np.int64))
        group_parts.append(k * n_ns + pods.ns)
        rng = keyed_rng(w.seed, h, T_CONTAINER)
        noise_parts.append(rng.normal(0.0, 1.0, (2, len(cids), _PER_HOUR)))
    cids = np.concatenate(cid_parts)
    hour = np.concatenate(hour_parts)
    group = np.concatenate(group_parts)
    noise = np.concatenate(noise_parts, axis=1)
    figures = [
        np.concatenate([getattr(p, f) for p, _ in hours])
        for f in (
            "cpu_weight",
            "mem_weight",
            "cpu_request",
            "mem_request",
            "cpu_limit",
            "mem_limit",
        )
    ]
    surge = _SURGE[np.concatenate([p.workload for p, _ in hours])]
    usage = [
        np.concatenate([getattr(u, f)[:, QUARTERS] for _, u in hours])
        for f in ("cpu", "mem", "cpu_base", "mem_base")
    ]
    cpu_w = figures[0][:, None] * np.exp(0.10 * noise[0])
    mem_w = figures[1][:, None] * np.exp(0.01 * noise[1])
    cpu = _split(usage[2], group, cpu_w) + _split(usage[0] - usage[2], group, cpu_w * surge)
    mem = _split(usage[3], group, mem_w) + _split(usage[1] - usage[3], group, mem_w * surge)
    ts = day * DAY + hour[:, None] * HOUR + np.arange(_PER_HOUR, dtype=np.int64)[None, :] * TICK
    # A NotReady kubelet reports no usage; the requests come from the API server all along.
    node = np.concatenate([p.node for p, _ in hours])
    for flap in w.flaps.get(day, []):
        down = np.isin(node, flap.nodes)[:, None] & (ts >= flap.start_us) & (ts < flap.end_us)
        cpu[down] = mem[down] = np.nan
    values = [
        np.round(cpu, 4),
        np.rint(mem / MIB) * MIB,
        *(np.repeat(f[:, None], _PER_HOUR, axis=1) for f in figures[2:]),
    ]
    series: list[tuple[str, dict[str, str]]] = []
    sidx, ts_cols, val_cols = [], [], []
    rows = np.broadcast_to(cids[:, None], ts.shape)
    for metric, vals in zip(_METRICS, values, strict=True):
        keep = ~np.isnan(vals)
        if not keep.any():
            continue
        uniq, inv = np.unique(rows[keep], return_inverse=True)
        sidx.append(inv + len(series))
        series.extend((metric, labels[int(c)]) for c in uniq)
        ts_cols.append(ts[keep])
        val_cols.append(vals[keep])
    batch = batch_from_columns(
        series, np.concatenate(sidx), np.concatenate(ts_cols), np.concatenate(val_cols)
    )
    event_id = f"containers/{CLUSTER}/{format_us(day * DAY)}"
    time_us = (day + 1) * DAY - TICK
    return samples_event(f"{DEMO_SOURCE_PREFIX}/metrics", event_id, time_us, CLUSTER, batch)


def _split(total: FloatArray, group: IntArray, weight: FloatArray) -> npt.NDArray[np.float64]:
    """Each row's part of its group's total (groups x ticks), in proportion to its weight
    (nothing where the group's weights are all zero)."""
    sums = np.stack(
        [
            np.bincount(group, weight[:, t], minlength=total.shape[0])
            for t in range(weight.shape[1])
        ],
        axis=1,
    )
    share = np.divide(weight, sums[group], out=np.zeros_like(weight), where=sums[group] > 0)
    out: npt.NDArray[np.float64] = total[group] * share
    return out
