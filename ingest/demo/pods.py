"""The pods of each hour: replicas that follow their pool, their nodes, names and requests."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Final, cast

import numpy as np
import numpy.typing as npt

from ingest.demo.catalogue import HOT_POOL, NAMESPACES, NS_BY_NAME, POOL_INDEX, POOLS, ZONES
from ingest.demo.draws import T_STEP, k8s_suffix, keyed_rng, stable_hex, text_tag
from ingest.demo.units import DAY, HOUR, MIN
from ingest.demo.workloads import (
    CRON_HOURS,
    CRON_START_H,
    MIB,
    PER_POD,
    REF_ALLOC,
    WORKLOADS,
    Workload,
)
from ingest.demo.world import FloatArray, IntArray, World

NS_INDEX: Final = {n.name: j for j, n in enumerate(NAMESPACES)}
#: How many more batch executors KEDA runs in a hot window.
_SURGE_SCALE: Final = 2.5
_WL_NS: Final = [NS_INDEX[w.namespace] for w in WORKLOADS]
_WL_POOL: Final = [NS_BY_NAME[w.namespace].pool for w in WORKLOADS]
_U64: Final = np.uint64


@dataclass(frozen=True, slots=True)
class HourPods:
    """The containers running in one hour (one row each) and their namespaces' totals.

    A row is (workload, container, pod, node); requests and limits are NaN where the
    container has none. `cpu_weight` and `mem_weight` split the namespace's usage.
    """

    workload: IntArray
    container: IntArray
    pod: list[str]
    node: IntArray
    ns: IntArray
    cpu_weight: FloatArray
    mem_weight: FloatArray
    cpu_request: FloatArray
    mem_request: FloatArray
    cpu_limit: FloatArray
    mem_limit: FloatArray
    ns_cpu_request: FloatArray
    ns_mem_request: FloatArray
    ns_pods: FloatArray


def deploy_week(ns_index: int, t_us: int) -> int:
    """Each namespace deploys weekly, on its own cadence (13 hours apart)."""
    return (t_us + ns_index * 13 * HOUR) // (7 * DAY)


def step(seed: int, ns_index: int, t_us: int) -> float:
    """The request level a deploy sets: requests change in steps, each namespace's own."""
    return _step_of(seed, deploy_week(ns_index, t_us), ns_index)


@cache
def _step_of(seed: int, week: int, ns_index: int) -> float:
    """The request level of one namespace-week."""
    rng = keyed_rng(seed, week, T_STEP, text_tag(NAMESPACES[ns_index].name))
    return float(rng.choice([0.92, 1.0, 1.08], p=[0.25, 0.5, 0.25]))


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """SplitMix64's finaliser: a cheap, well-spread hash of 64-bit keys."""
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    out: npt.NDArray[np.uint64] = x ^ (x >> _U64(31))
    return out


@cache
def _key(*parts: object) -> int:
    """A stable 64-bit key of the parts."""
    return int(stable_hex(*parts)[:16], 16)


def _place(w: World, queue: list[_Queued], nodes: IntArray) -> list[int]:
    """Each pod's node among its pool's: weighted rendezvous hashing on allocatable CPU, so a
    pod stays put until its node goes (or a fresh node outbids it, as consolidation would).

    A steady pod (a Deployment's first `min_replicas`, a StatefulSet's) only takes the slots
    its pool never scales below, so it moves only when its node expires; a pod with a zone
    (>= 0) only goes to that zone's nodes. Either rule yields when no node passes it.
    """
    keys = np.array([q[3] for q in queue], dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = _mix(keys[:, None] ^ w.node_key[nodes][None, :])
    u = ((h >> _U64(11)).astype(np.float64) + 0.5) / 2.0**53
    score = np.log(u) / w.node_cpu[nodes][None, :]
    pool = np.array([q[6] for q in queue], dtype=np.int64)
    zone = np.array([q[4] for q in queue], dtype=np.int64)
    steady = np.array([q[5] for q in queue], dtype=np.bool_)
    floor = np.array([POOLS[p].min_nodes for p in pool.tolist()], dtype=np.int64)
    keep = pool[:, None] == w.node_pool[nodes][None, :]
    for applies, passes in (
        (zone >= 0, zone[:, None] == w.node_zone[nodes][None, :]),
        (steady, w.node_slot[nodes][None, :] < floor[:, None]),
    ):
        ok = keep & (~applies[:, None] | passes)
        keep = np.where(ok.any(axis=1, keepdims=True), ok, keep)
    score[~keep] = -np.inf
    out: list[int] = nodes[np.argmax(score, axis=1)].tolist()
    return out


@cache
def _rs(seed: int, wl: int, week: int) -> str:
    """A Deployment's ReplicaSet of one deploy week."""
    w = WORKLOADS[wl]
    return f"{w.name}-{k8s_suffix(10, seed, w.namespace, w.name, 'rs', week)}"


@cache
def _pod_name(seed: int, owner: str, *key: object) -> str:
    """A generated pod name under its owner (ReplicaSet, DaemonSet or Job)."""
    return f"{owner}-{k8s_suffix(5, seed, owner, *key)}"


def _pool_ratio(w: World, h: int) -> dict[str, float]:
    """Each pool's allocatable against what `replicas` is sized for, the tighter of CPU and
    memory (Karpenter adds nodes as the HPAs add pods)."""
    out = {}
    for p in POOLS:
        idx = w.alive_idx(p.name, h)
        cpu, mem = REF_ALLOC[p.name]
        out[p.name] = max(float(w.node_cpu[idx].sum()) / cpu, float(w.node_mem[idx].sum()) / mem)
    return out


def _calm_ratio(w: World, h: int, ratio: dict[str, float]) -> float:
    """The hot pool's ratio for the workloads a hot window is not about: as the hour before it."""
    window = w.hot.get(h // 24)
    if window is None or not window[0] <= h * HOUR < window[1]:
        return ratio[HOT_POOL]
    return _pool_ratio(w, window[0] // HOUR - 1)[HOT_POOL]


#: A pod waiting for a node: (workload, owner, ordinal, key, zone or -1, steady, pool).
_Queued = tuple[int, str, int, int, int, bool, int]


@cache
def _queue(seed: int, wl: int, owner: str, n: int) -> tuple[_Queued, ...]:
    """The pods of a placed workload: a StatefulSet's follow their EBS volumes' zones."""
    spec = WORKLOADS[wl]
    pool = POOL_INDEX[_WL_POOL[wl]]
    if spec.kind == "StatefulSet":
        return tuple(
            (wl, owner, j, _key(seed, owner, j), j % len(ZONES), True, pool) for j in range(n)
        )
    base = _key(seed, owner)
    return tuple(
        (wl, owner, j, (base + j * 0x9E3779B97F4A7C15) % 2**64, -1, j < spec.min_replicas, pool)
        for j in range(n)
    )


def _want(w: World, wl: int, h: int, ratio: dict[str, float], calm: float) -> tuple[_Queued, ...]:
    """The pods of a placed workload (Deployment, StatefulSet, CronJob) in hour h."""
    spec: Workload = WORKLOADS[wl]
    if spec.kind == "StatefulSet":
        return _queue(w.seed, wl, spec.name, spec.replicas)
    if spec.kind == "CronJob":
        if not CRON_START_H <= h % 24 < CRON_START_H + CRON_HOURS:
            return ()
        job = f"{spec.name}-{((h // 24) * DAY + CRON_START_H * HOUR) // MIN}"
        return _queue(w.seed, wl, job, spec.replicas)
    pool = _WL_POOL[wl]
    scale = ratio[pool]
    if pool == HOT_POOL and calm != scale:
        # A hot window: KEDA scales the batch executors on their queue, the rest stay calm.
        scale = scale * _SURGE_SCALE if spec.surge else calm
    # The HPA rounds up, past its 10 % tolerance.
    n = max(spec.min_replicas, math.ceil(spec.replicas * scale - 0.1))
    return _queue(w.seed, wl, _rs(w.seed, wl, deploy_week(_WL_NS[wl], h * HOUR)), n)


def _pods(w: World, h: int) -> dict[int, list[tuple[str, int]]]:
    """(pod name, node) of each workload's pods in hour h."""
    ratio = _pool_ratio(w, h)
    calm = _calm_ratio(w, h, ratio)
    out: dict[int, list[tuple[str, int]]] = {wl: [] for wl in range(len(WORKLOADS))}
    placing: list[_Queued] = []
    alive = [w.alive_idx(p.name, h) for p in POOLS]
    every = np.concatenate(alive)
    for wl, spec in enumerate(WORKLOADS):
        pool = _WL_POOL[wl]
        if spec.kind == "DaemonSet":
            # A DaemonSet's pods are named after it; a rollout replaces them.
            week = deploy_week(_WL_NS[wl], h * HOUR)
            out[wl] = [
                (_pod_name(w.seed, spec.name, week, w.nodes[i].name), i) for i in every.tolist()
            ]
        elif spec.per_node:
            rs = _rs(w.seed, wl, deploy_week(_WL_NS[wl], h * HOUR))
            nodes = alive[POOL_INDEX[pool]].tolist()
            out[wl] = [(_pod_name(w.seed, rs, w.nodes[i].name), i) for i in nodes]
        else:
            placing.extend(_want(w, wl, h, ratio, calm))
    for (wl, owner, j, *_), node in zip(placing, _place(w, placing, every), strict=True):
        kind = WORKLOADS[wl].kind
        if kind == "StatefulSet":
            name = f"{owner}-{j}"
        elif kind == "CronJob":
            name = _pod_name(w.seed, owner, j)
        else:
            name = _pod_name(w.seed, owner, j, w.nodes[node].name)
        out[wl].append((name, node))
    return out


def _per_ns(ns: IntArray, values: FloatArray) -> FloatArray:
    """Each namespace's sum of the rows' values (NaN counts 0)."""
    out: FloatArray = np.bincount(ns, np.nan_to_num(values), minlength=len(NAMESPACES)).astype(
        np.float64
    )
    return out


@cache
def _container_figures(wl: int, level: float) -> list[tuple[float, float, float, float]]:
    """(cpu request, memory request, cpu limit, memory limit) of each container of a pod of
    the workload at a deploy step's level; NaN where the container sets none."""
    spec = WORKLOADS[wl]
    cpu_pod, mem_pod = PER_POD[wl] * level
    containers = spec.pod_containers
    asked = sum(c.share for c in containers if c.requests)
    nan = float("nan")
    out = []
    for c in containers:
        if not c.requests:
            out.append((nan, nan, nan, nan))
            continue
        cpu = max(round(cpu_pod * c.share / asked, 2), 0.01)
        mem = max(round(mem_pod * c.share / asked / (16 * MIB)), 1) * 16 * MIB
        cpu_lim = nan if c.cpu_limit is None else round(cpu * c.cpu_limit, 2)
        mem_lim = nan if c.mem_limit is None else float(round(mem * c.mem_limit / MIB) * MIB)
        out.append((cpu, float(mem), cpu_lim, mem_lim))
    return out


def hour_pods(w: World, h: int) -> HourPods:
    """Every container running in hour h, with its requests, limits and usage weights."""
    memo = w.memo.get(("pods", h))
    if isinstance(memo, HourPods):
        return memo
    # An hour with the same nodes, deploys, jobs and hot window as the last one computed has
    # the same pods (hours come in order, so this spares most of the quiet ones).
    sig = _signature(w, h)
    last = w.memo.get(("last", 0))
    if isinstance(last, tuple) and last[0] == sig:
        return cast(HourPods, last[1])
    out = _hour_pods(w, h)
    w.memo[("last", 0)] = (sig, out)
    if h % 6 == 0:
        # The subnets' 6-hourly observations read these hours too.
        w.memo[("pods", h)] = out
    return out


def _signature(w: World, h: int) -> tuple[object, ...]:
    """What an hour's pods depend on besides the seed."""
    return (
        tuple(w.slots[p.name][:, h - w.h0].tobytes() for p in POOLS),
        tuple(deploy_week(j, h * HOUR) for j in range(len(NAMESPACES))),
        CRON_START_H <= h % 24 < CRON_START_H + CRON_HOURS,
        h // 24 if w.is_hot(h * HOUR) else -1,
    )


def _hour_pods(w: World, h: int) -> HourPods:
    """`hour_pods`, computed."""
    blocks: list[tuple[float, ...]] = []
    lengths: list[int] = []
    names: list[str] = []
    nodes: list[int] = []
    for wl, pods in _pods(w, h).items():
        if not pods:
            continue
        spec = WORKLOADS[wl]
        level = 1.0 if spec.request is not None else step(w.seed, _WL_NS[wl], h * HOUR)
        n = len(pods)
        pod_names = [p[0] for p in pods]
        pod_nodes = [p[1] for p in pods]
        for k, (c, figures) in enumerate(
            zip(spec.pod_containers, _container_figures(wl, level), strict=True)
        ):
            blocks.append((wl, k, spec.cpu * c.share / n, spec.mem * c.share / n, *figures))
            lengths.append(n)
            names.extend(pod_names)
            nodes.extend(pod_nodes)
    rows = np.repeat(np.array(blocks), lengths, axis=0)
    wl_col = rows[:, 0].astype(np.int64)
    ns = np.array(_WL_NS, dtype=np.int64)[wl_col]
    cpu_req, mem_req = rows[:, 4], rows[:, 5]
    per_ns = {(j, p) for j, p in zip(ns.tolist(), names, strict=True)}
    count = np.bincount([j for j, _ in per_ns], minlength=len(NAMESPACES))
    return HourPods(
        workload=wl_col,
        container=rows[:, 1].astype(np.int64),
        pod=names,
        node=np.array(nodes, dtype=np.int64),
        ns=ns,
        cpu_weight=rows[:, 2],
        mem_weight=rows[:, 3],
        cpu_request=cpu_req,
        mem_request=mem_req,
        cpu_limit=rows[:, 6],
        mem_limit=rows[:, 7],
        ns_cpu_request=_per_ns(ns, cpu_req),
        ns_mem_request=_per_ns(ns, mem_req),
        ns_pods=count.astype(np.float64),
    )
