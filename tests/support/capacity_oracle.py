"""Issue 12's acceptance oracle: generated clusters and the figures /tmp design defines for them.

`generate(seed)` draws a world (three clusters, node pools over three zones, workloads of every
kind, NodePools, subnets, Cost Explorer rows and a price table) as the CloudEvents a collector
would send; `Oracle(events)` folds those events in ledger order, in plain Python, and computes
rightsizing, headroom by requests, zone loss, NodePool-limit dates, subnet exhaustion and
showback from the written definitions (docs/metrics.md, the issue's design). It shares no code
with the implementation; numpy only fits the trend slope, as the definition names polyfit.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache
from typing import Any

import numpy as np

GIB = 2**30
MIB = 2**20
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
AS_OF = datetime(2026, 12, 1)  # a UTC midnight: the end of every window and of the month
MONTH = "2026-11"
MONTH_START = datetime(2026, 11, 1)
START = datetime(2026, 10, 30)  # two days before the month and the 30-day trend window
LOOKBACK = timedelta(days=14)
LB = AS_OF - LOOKBACK
TREND_WINDOW = timedelta(days=30)
TARGET = 0.85
W_CPU, W_MEM = 0.031611, 0.004237
PERCENTILE, BUFFER, MIN_CPU, MIN_MEMORY = 95.0, 0.15, 0.01, 104857600
ZA, ZB, ZC, ZD = (f"us-gov-west-1{z}" for z in "abcd")
SOURCE = "//oracle.test/capacity"
CE_SOURCE = "//oracle.test/cost-explorer"
PRICE_TABLE = {
    "currency": "USD",
    # m6i.xlarge also has Cost Explorer usage, which wins over this entry.
    "instance_types": {"m6i.xlarge": 9.99, "m6i.2xlarge": 0.384, "c6i.large": 0.085},
}
METRICS = {
    "container_cpu_usage_cores": "cpu_usage",
    "container_memory_working_set_bytes": "memory_usage",
    "container_cpu_requests_cores": "cpu_request",
    "container_memory_requests_bytes": "memory_request",
    "container_cpu_limits_cores": "cpu_limit",
    "container_memory_limits_bytes": "memory_limit",
}
NODE_METRICS = {
    "node_cpu_usage_cores": "cpu_u",
    "node_cpu_allocatable_cores": "cpu_a",
    "node_memory_usage_bytes": "mem_u",
    "node_memory_allocatable_bytes": "mem_a",
}


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@cache
def parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")


def hour_of(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def day_of(t: datetime) -> datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


# -- the generated world ---------------------------------------------------------------------


@dataclass
class Node:
    cluster: str
    name: str
    pool: str
    zone: str | None
    itype: str | None
    cpu: float
    mem: int
    status: bool  # False: no node.status event, only the labels of its node_* samples
    scraped: bool  # False: no node_* samples at all, only node.status events
    start: datetime
    end: datetime  # its last sample (inclusive)
    step: timedelta


@dataclass
class Ctr:
    """A container's requests and limits (None: not set) and its usage range."""

    name: str
    cpu_req: float | None
    mem_req: int | None
    cpu_lim: float | None
    mem_lim: int | None
    cpu_use: tuple[float, float]
    mem_use: tuple[int, int]
    holes: bool = False


@dataclass
class Pod:
    cluster: str
    namespace: str
    name: str
    kind: str | None  # None: the series carry no workload labels
    workload: str | None
    node: str | None  # None: the series carry no node label
    times: list[datetime]
    ctrs: list[Ctr]


@dataclass
class World:
    seed: int
    nodes: list[Node]
    pods: list[Pod]
    batches: list[list[dict[str, Any]]]  # the delivery, in order; duplicates included
    price_table: dict[str, Any]


def container_grid(t0: datetime, t1: datetime) -> list[datetime]:
    """Three-hourly before the look-back, hourly inside it (as_of itself included)."""
    out, t = [], t0
    while t <= t1:
        out.append(t)
        t += HOUR if t >= LB else 3 * HOUR
    return out


def _rid(rng: random.Random, n: int = 5) -> str:
    return "".join(rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(n))


def cloudevent(
    type_: str, data: dict[str, Any], id_: str, time: datetime, cluster: str | None, source: str
) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "specversion": "1.0",
        "id": id_,
        "source": source,
        "type": type_,
        "time": iso(time),
        "data": data,
    }
    if cluster is not None:
        ev["cluster"] = cluster
    return ev


class Builder:
    """Draws one world from a seed."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.nodes: list[Node] = []
        self.pods: list[Pod] = []
        self.samples: dict[str, list[dict[str, Any]]] = defaultdict(list)  # per cluster
        self.status: list[dict[str, Any]] = []
        self.grid: dict[str, list[datetime]] = {}

    # -- nodes --------------------------------------------------------------------------
    def node(
        self, cluster: str, name: str, pool: str, zone: str | None, itype: str | None, **kw: Any
    ):
        shape = {
            "m6i.xlarge": (4, 16),
            "m6i.2xlarge": (8, 32),
            "r6i.xlarge": (4, 32),
            "c6i.large": (2, 4),
            "p5.48xlarge": (192, 2048),
            None: (4, 16),
        }[itype]
        rng = self.rng
        k = len(self.nodes) + 1
        n = Node(
            cluster,
            name,
            pool,
            zone,
            itype,
            # Each node its own offset besides the drawn one: no two zones tie for the largest.
            cpu=shape[0]
            - rng.choice((0.08, 0.1, 0.12, 0.15))
            - rng.randrange(40) / 1000
            - k / 7919,
            mem=shape[1] * GIB - rng.randrange(300, 1500) * MIB - k * 7 * MIB,
            status=kw.get("status", True),
            scraped=kw.get("scraped", True),
            start=kw.get("start", START),
            end=kw.get("end", AS_OF),
            step=kw.get("step", HOUR),
        )
        self.nodes.append(n)
        return n

    def node_samples(self, n: Node, resize_at_as_of: bool = False) -> None:
        rng = self.rng
        labels = {"node": n.name, "nodepool": n.pool}
        if n.zone is not None:
            labels["zone"] = n.zone
        t = n.start
        out = self.samples[n.cluster]
        while n.scraped and t <= n.end:
            cpu_a = n.cpu + (1.0 if (resize_at_as_of and t == AS_OF) else 0.0)
            out += [
                _s("node_cpu_allocatable_cores", labels, t, cpu_a),
                _s("node_memory_allocatable_bytes", labels, t, n.mem),
                _s("node_cpu_usage_cores", labels, t, round(n.cpu * rng.uniform(0.1, 0.9), 4)),
                _s("node_memory_usage_bytes", labels, t, int(n.mem * rng.uniform(0.2, 0.9))),
            ]
            t += n.step
        if n.status:
            # Sent on change: when it joined, and a readiness flap later (same shape).
            first = n.start - timedelta(minutes=7)
            flap = n.start + (n.end - n.start) * rng.uniform(0.2, 0.8)
            for i, (ts, ready) in enumerate(((first, True), (flap, False), (flap + HOUR, True))):
                self.status.append(self.node_status(n, ts, ready, n.zone, f"{i}"))

    def node_status(self, n: Node, ts: datetime, ready: bool, zone: str, tag: str):
        data = {
            "node": n.name,
            "ready": ready,
            "nodepool": n.pool,
            "zone": zone,
            "instance_type": n.itype,
            "allocatable": {"cpu_cores": n.cpu, "memory_bytes": n.mem, "pods": 58},
        }
        return cloudevent(
            "opsledger.k8s.node.status",
            data,
            f"node-{n.cluster}-{n.name}-{tag}",
            ts,
            n.cluster,
            SOURCE,
        )

    def present(self, cluster: str, pool: str, t0: datetime, t1: datetime) -> list[Node]:
        return [
            n
            for n in self.nodes
            if n.cluster == cluster and n.pool == pool and n.start <= t0 and n.end >= t1
        ]

    # -- pods ---------------------------------------------------------------------------
    def pod(
        self,
        cluster: str,
        ns: str,
        name: str,
        kind: str | None,
        workload: str | None,
        node: Node | None,
        times: list[datetime],
        ctrs: list[Ctr],
    ) -> Pod:
        p = Pod(cluster, ns, name, kind, workload, node and node.name, times, ctrs)
        self.pods.append(p)
        return p

    def deployment(
        self,
        cluster: str,
        ns: str,
        name: str,
        pools: tuple[str, ...],
        phases: list[tuple[datetime, datetime, str, int]],
        ctrs_of: dict[str, list[Ctr]],
        kind: str = "Deployment",
        grid: list[datetime] | None = None,
    ) -> None:
        """Phases (start, end, replicaset, replicas): a pod lives while its index < replicas."""
        lives: dict[tuple[str, int], list[datetime]] = {}
        for t0, t1, rs, count in phases:
            for i in range(count):
                span = lives.setdefault((rs, i), [t0, t1])
                span[0], span[1] = min(span[0], t0), max(span[1], t1)
        grid = grid if grid is not None else self.grid[cluster]
        for (rs, _), (t0, t1) in sorted(lives.items()):
            candidates = [n for pool in pools for n in self.present(cluster, pool, t0, t1)]
            node = self.rng.choice(candidates)
            times = [t for t in grid if t0 <= t <= t1]
            pod_name = f"{name}-{rs}-{_rid(self.rng)}" if kind != "StatefulSet" else rs
            self.pod(cluster, ns, pod_name, kind, name, node, times, ctrs_of[rs])

    def pod_samples(self, p: Pod, spikes: bool) -> None:
        rng = self.rng
        out = self.samples[p.cluster]
        base: dict[str, str] = {"namespace": p.namespace, "pod": p.name}
        if p.kind is not None:
            base["workload_kind"] = p.kind
        if p.workload is not None:
            base["workload"] = p.workload
        for c in p.ctrs:
            lab = {**base, "container": c.name}
            if p.node is not None:
                lab["node"] = p.node
            lim = {**base, "container": c.name}  # limits come without the node label
            for t in p.times:
                hole = rng.random() if c.holes else 1.0
                if hole >= 0.03:
                    cpu = round(rng.uniform(*c.cpu_use), 5)
                    mem = rng.randrange(*c.mem_use)
                    if spikes and t == AS_OF:  # outside every window: must change nothing
                        cpu, mem = cpu * 40, mem * 9
                    if spikes and t == LB:  # the first instant of the look-back: inside
                        mem = int(c.mem_use[1] * 1.25)
                    out.append(_s("container_cpu_usage_cores", lab, t, cpu))
                    out.append(_s("container_memory_working_set_bytes", lab, t, mem))
                if hole < 0.03 or hole >= 0.05:  # a usage hole keeps its requests
                    if c.cpu_req is not None:
                        out.append(_s("container_cpu_requests_cores", lab, t, c.cpu_req))
                    if c.mem_req is not None:
                        out.append(_s("container_memory_requests_bytes", lab, t, c.mem_req))
                if c.cpu_lim is not None:
                    out.append(_s("container_cpu_limits_cores", lim, t, c.cpu_lim))
                if c.mem_lim is not None:
                    out.append(_s("container_memory_limits_bytes", lim, t, c.mem_lim))

    def namespace_samples(self, cluster: str) -> None:
        """kube-state-metrics' namespace sums, so the existing cluster items have requests."""
        sums: dict[tuple[str, datetime], list[float]] = defaultdict(lambda: [0.0, 0.0])
        for p in self.pods:
            if p.cluster != cluster:
                continue
            for t in p.times:
                s = sums[(p.namespace, t)]
                s[0] += sum(c.cpu_req or 0.0 for c in p.ctrs)
                s[1] += sum(c.mem_req or 0 for c in p.ctrs)
        for (ns, t), (cpu, mem) in sums.items():
            lab = {"namespace": ns}
            self.samples[cluster].append(_s("namespace_cpu_requests_cores", lab, t, cpu))
            self.samples[cluster].append(_s("namespace_memory_requests_bytes", lab, t, mem))


def _s(name: str, labels: dict[str, str], t: datetime, value: float) -> dict[str, Any]:
    return {"name": name, "labels": labels, "ts": iso(t), "value": value}


def _at(day: int, hour: int = 0, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute)


def generate(seed: int) -> World:
    """The world of one seed: the same shape every time, its figures drawn from the seed."""
    b = Builder(seed)
    rng = b.rng
    u = rng.uniform
    # c1: three pools over three zones. general grows; gen-b2 leaves three days before as_of;
    # batch has no NodePool; gpu joins on Nov 29 06:00 (two days of data) on an instance type
    # priced nowhere, one of its nodes known only by its samples' labels.
    gen_types = ["m6i.xlarge", "m6i.2xlarge"]
    general = [
        b.node("c1", "gen-a1", "general", ZA, "m6i.xlarge"),
        b.node("c1", "gen-b1", "general", ZB, rng.choice(gen_types)),
        b.node("c1", "gen-c1", "general", ZC, "m6i.2xlarge"),
        b.node("c1", "gen-a2", "general", ZA, rng.choice(gen_types)),
        b.node("c1", "gen-b2", "general", ZB, "m6i.xlarge", end=_at(27, 12)),
    ]
    if rng.random() < 0.5:
        general.append(b.node("c1", "gen-c2", "general", ZC, "m6i.xlarge", start=_at(8, 9)))
    batch = [
        b.node("c1", "bat-a1", "batch", ZA, "r6i.xlarge"),
        b.node("c1", "bat-b1", "batch", ZB, "r6i.xlarge"),
        b.node("c1", "bat-c1", "batch", ZC, "c6i.large"),
    ]
    gpu = [
        b.node("c1", "gpu-c1", "gpu", ZC, "p5.48xlarge", start=_at(29, 6)),
        b.node("c1", "gpu-a1", "gpu", ZA, None, status=False, start=_at(29, 6)),
    ]
    # c2: one static pool whose requests never change (a flat trend); nodes every 30 minutes.
    half = timedelta(minutes=30)
    c2 = [
        b.node("c2", "d-a1", "default", ZA, "m6i.xlarge", step=half),
        b.node("c2", "d-b1", "default", ZB, "c6i.large", step=half),
    ]
    # c3: no priced node at all (only labels): rightsizing has no prices there.
    b.node("c3", "x-a1", "default", ZA, None, status=False)
    for n in b.nodes:
        b.node_samples(n, resize_at_as_of=n.name == "gen-a1")
    # A later node.status (after as_of) moves gen-c1 to another zone: nothing may see it.
    b.status.append(b.node_status(general[2], AS_OF + timedelta(hours=5), True, ZA, "late"))

    b.grid = {c: container_grid(START, AS_OF) for c in ("c1", "c2", "c3")}
    g1 = b.grid["c1"]

    def ctr(name: str, cpu_req, mem_req, cpu_use, mem_use, cpu_lim=None, mem_lim=None, holes=False):
        return Ctr(name, cpu_req, mem_req, cpu_lim, mem_lim, cpu_use, mem_use, holes)

    # DaemonSet on every node, for its whole life: requests at every timestamp of each pool.
    # Its pods on the gpu nodes cannot be costed, so neither can kube-system (the spec: an item
    # with a row that is not costed has null costs and a reason).
    for n in general + batch + gpu:
        aws = ctr(
            "aws-node", 1 / 32, 128 * MIB, (0.004, 0.03), (60 * MIB, 110 * MIB), mem_lim=256 * MIB
        )
        times = [t for t in g1 if n.start <= t <= n.end]
        b.pod(
            "c1", "kube-system", f"aws-node-{_rid(rng)}", "DaemonSet", "aws-node", n, times, [aws]
        )
    # shop/web: six replicas before the month, two from Nov 1, three from a day, four after a
    # rollout that raises the CPU request; an envoy sidecar without requests or limits.
    grow1 = _at(rng.randrange(5, 14), rng.randrange(24))
    roll = _at(rng.randrange(20, 25), rng.randrange(24))
    web_hi = int(u(0.5, 0.8) * GIB)

    def web(req: float) -> list[Ctr]:
        return [
            ctr(
                "app",
                req,
                1 * GIB,
                (0.05, u(0.2, 0.35)),
                (300 * MIB, web_hi),
                1.0,
                2 * GIB,
                holes=True,
            ),
            ctr("envoy", None, None, (0.01, 0.05), (40 * MIB, 80 * MIB)),
        ]

    b.deployment(
        "c1",
        "shop",
        "web",
        ("general",),
        [
            (START, MONTH_START - HOUR, "5d8f7", 6),
            (MONTH_START, roll - HOUR, "6c9b4", 2),
            (grow1, roll - HOUR, "6c9b4", 3),
            (roll, AS_OF, "7fd6c", 4),
        ],
        {"5d8f7": web(0.5), "6c9b4": web(0.5), "7fd6c": web(0.75)},
    )
    # shop/api: a CPU request and no memory request.
    b.deployment(
        "c1",
        "shop",
        "api",
        ("general",),
        [(START, AS_OF, "84b2d", 2)],
        {"84b2d": [ctr("api", 0.25, None, (0.1, 0.3), (200 * MIB, 400 * MIB), holes=True)]},
    )
    # shop/canary: an Argo Rollout (a custom controller kind), under-requested.
    b.deployment(
        "c1",
        "shop",
        "canary",
        ("general",),
        [(_at(3), AS_OF, "9c7f1", 1)],
        {"9c7f1": [ctr("canary", 0.125, 256 * MIB, (0.1, 0.3), (200 * MIB, 300 * MIB))]},
        kind="Rollout",
    )
    # ops/legacy-7f9c: a ReplicaSet with no Deployment.
    b.deployment(
        "c1",
        "ops",
        "legacy-7f9c",
        ("general",),
        [(START, AS_OF, "x", 1)],
        {"x": [ctr("legacy", 0.5, 512 * MIB, (0.3, 0.5), (300 * MIB, 460 * MIB))]},
        kind="ReplicaSet",
    )
    # data/postgres: a StatefulSet on batch, requests near its usage.
    pg_cpu = u(0.85, 0.99)
    b.deployment(
        "c1",
        "data",
        "postgres",
        ("batch",),
        [(START, AS_OF, "postgres-0", 1), (START, AS_OF, "postgres-1", 1)],
        {
            f"postgres-{i}": [
                ctr(
                    "postgres",
                    1.0,
                    4 * GIB,
                    (0.5, pg_cpu),
                    (3 * GIB, int(u(3.2, 3.45) * GIB)),
                    2.0,
                    6 * GIB,
                )
            ]
            for i in range(2)
        },
        kind="StatefulSet",
    )
    # data/backup: a CronJob's pods at 02:15 and 03:15, off the containers' hourly grid.
    d = START
    while d < AS_OF:
        times = [d + timedelta(hours=2, minutes=15), d + timedelta(hours=3, minutes=15)]
        node = rng.choice(b.present("c1", "batch", times[0], times[1]))
        b.pod(
            "c1",
            "data",
            f"backup-{d:%Y%m%d}-{_rid(rng)}",
            "CronJob",
            "backup",
            node,
            times,
            [ctr("backup", 0.5, 512 * MIB, (0.2, 0.45), (100 * MIB, 400 * MIB))],
        )
        d += DAY
    # ops: a bare pod (labels say Pod), a pod whose series carry no workload labels, and two
    # Jobs: one whose samples span exactly 24 h, one 23 h.
    gen_all = b.present("c1", "general", START, AS_OF)
    b.pod(
        "c1",
        "ops",
        "debug-shell",
        "Pod",
        "debug-shell",
        rng.choice(gen_all),
        [t for t in g1 if t >= _at(10)],
        [ctr("shell", None, None, (0.001, 0.01), (10 * MIB, 30 * MIB))],
    )
    b.pod(
        "c1",
        "ops",
        "toolbox",
        None,
        None,
        rng.choice(gen_all),
        g1,
        [ctr("tools", 1 / 64, 64 * MIB, (0.001, 0.02), (20 * MIB, 50 * MIB))],
    )
    for job, t0, t1 in (("migrate", _at(20), _at(21)), ("seed", _at(25), _at(25, 23))):
        b.pod(
            "c1",
            "ops",
            f"{job}-{_rid(rng)}",
            "Job",
            job,
            rng.choice(gen_all),
            [t for t in g1 if t0 <= t <= t1],
            [ctr("job", 0.5, 256 * MIB, (0.1, 0.2), (100 * MIB, 200 * MIB))],
        )
    # ml on the gpu pool, from when it joined.
    ml_times = [t for t in g1 if t >= _at(29, 6)]
    b.pod(
        "c1",
        "ml",
        f"trainer-6f5d4-{_rid(rng)}",
        "Deployment",
        "trainer",
        gpu[0],
        ml_times,
        [ctr("trainer", 4.0, 16 * GIB, (2.0, 3.5), (6 * GIB, 12 * GIB))],
    )
    b.pod(
        "c1",
        "ml",
        "notebook",
        "Pod",
        "notebook",
        gpu[1],
        ml_times,
        [ctr("notebook", 0.5, 2 * GIB, (0.1, 0.4), (GIB, int(1.5 * GIB)))],
    )

    # c2: a DaemonSet and app pods whose requests never change; no-request batcher pods come
    # (zone b) and go (zone a) so the pod counts of the zones move.
    g2 = b.grid["c2"]
    app_cpu = _flat_request(8 / 64)
    for n in c2:
        b.pod(
            "c2",
            "kube-system",
            f"aws-node-{_rid(rng)}",
            "DaemonSet",
            "aws-node",
            n,
            g2,
            [ctr("aws-node", 1 / 32, 128 * MIB, (0.004, 0.03), (60 * MIB, 110 * MIB))],
        )
    for i, n in enumerate(c2):
        b.pod(
            "c2",
            "default",
            f"app-5b7c9-{i}{_rid(rng, 4)}",
            "Deployment",
            "app",
            n,
            g2,
            [ctr("app", app_cpu, 512 * MIB, (0.05, 0.1), (200 * MIB, 300 * MIB))],
        )
    change = _at(rng.randrange(10, 20))
    b.pod(
        "c2",
        "default",
        f"batcher-{_rid(rng)}",
        "Pod",
        None,
        c2[0],
        [t for t in g2 if t < change],
        [ctr("batcher", None, None, (0.01, 0.02), (30 * MIB, 60 * MIB))],
    )
    for i in range(2):
        b.pod(
            "c2",
            "default",
            f"batcher-{_rid(rng)}",
            "Pod",
            None,
            c2[1],
            [t for t in g2 if t >= change + i * 3 * DAY],
            [ctr("batcher", None, None, (0.01, 0.02), (30 * MIB, 60 * MIB))],
        )
    # c2/edge: a pod on a node that no scrape reports (its status alone says its pool, zone and
    # price), and a pod whose series carry no node label: neither can be costed.
    ghost = b.node("c2", "d-c1", "spot", ZB, "m6i.xlarge", scraped=False)
    b.node_samples(ghost)
    b.pod(
        "c2",
        "edge",
        f"ghost-6d9f8-{_rid(rng)}",
        "Deployment",
        "ghost",
        ghost,
        g2,
        [ctr("ghost", 0.25, 256 * MIB, (0.05, 0.2), (100 * MIB, 200 * MIB))],
    )
    b.pod(
        "c2",
        "edge",
        "orphan",
        "Pod",
        "orphan",
        None,
        [t for t in g2 if _at(18, 5) <= t <= _at(20, 17)],
        [ctr("orphan", 0.125, 128 * MIB, (0.05, 0.1), (50 * MIB, 100 * MIB))],
    )
    # c3: one deployment that scales from one replica to two.
    b.deployment(
        "c3",
        "web",
        "site",
        ("default",),
        [(START, AS_OF, "77c8d", 1), (_at(12), AS_OF, "77c8d", 2)],
        {"77c8d": [ctr("site", 0.25, 256 * MIB, (0.02, 0.05), (100 * MIB, 200 * MIB))]},
    )
    # ... and a node whose samples carry no zone (after the deployment: no pod of it there, so
    # zone a's pods still grow): its own zone group in zone loss, never the one lost.
    b.node_samples(b.node("c3", "x-nz", "default", None, None, status=False))
    # A pool where no container runs: its requests are unknown (null), not 0.
    b.node_samples(b.node("c3", "x-b1", "reserve", ZB, None, status=False))
    for p in b.pods:
        b.pod_samples(p, spikes=p.cluster == "c1" and p.namespace == "shop")
    # Series the projection must ignore: no container label; and no pod label.
    junk = {"namespace": "shop", "pod": "web-x", "node": "gen-a1"}
    b.samples["c1"].append(_s("container_cpu_usage_cores", junk, _at(20), 99.0))
    junk2 = {"namespace": "shop", "container": "app", "node": "gen-a1"}
    b.samples["c1"].append(_s("container_memory_requests_bytes", junk2, _at(20), 99 * GIB))
    for c in ("c1", "c2", "c3"):
        b.namespace_samples(c)
    return _deliver(b)


def _flat_request(start: float) -> float:
    """A per-pod CPU request whose constant daily sum fits a slope <= 0 with polyfit (the
    fit of a constant is rounding noise of either sign; a flat trend then never arrives)."""
    req = start
    x = np.arange(30, dtype=float)
    while np.polyfit(x, np.full(30, 2 / 32 + 2 * req), 1)[0] > 0:
        req += 1 / 64
    return req


def _chunks(samples: list[dict[str, Any]], rng: random.Random, n: int) -> list[list[Any]]:
    order = list(samples)
    rng.shuffle(order)
    return [order[i::n] for i in range(n) if order[i::n]]


def _deliver(b: Builder) -> World:
    rng = b.rng
    events: list[dict[str, Any]] = []
    for cluster, samples in sorted(b.samples.items()):
        parts = max(2, len(samples) // 6000)
        for i, part in enumerate(_chunks(samples, rng, parts)):
            first = parse(min(s["ts"] for s in part))
            events.append(
                cloudevent(
                    "opsledger.metric.samples",
                    {"samples": part},
                    f"samples-{cluster}-{i}",
                    first,
                    cluster,
                    SOURCE,
                )
            )
    events += b.status
    events += _subnets(b)
    events += _cost_explorer(b)
    # Restatements and corrections are recorded after what they replace: the last batch.
    late: list[dict[str, Any]] = []
    late += _corrections(b, events)
    late += _restatements(b)
    rng.shuffle(events)
    batches = [events[i::4] for i in range(4)]
    for ev in rng.sample(events, max(1, len(events) // 8)):  # re-deliveries
        home = next(i for i, bt in enumerate(batches) if ev in bt)
        batches[(home + rng.randrange(1, 4)) % 4].append(ev)
    for bt in batches:
        rng.shuffle(bt)
    # NodePools last but one: their limits are drawn from the requests the samples give.
    pools = _nodepools(b, [e for bt in batches for e in bt] + late)
    batches.append(late + pools)
    return World(b.seed, b.nodes, b.pods, batches, PRICE_TABLE)


def _corrections(b: Builder, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A later samples event re-sending some web usage samples with other values."""
    rng = b.rng
    picks = [
        s
        for s in b.samples["c1"]
        if s["name"] == "container_cpu_usage_cores"
        and s["labels"].get("workload") == "web"
        and LB <= parse(s["ts"]) < AS_OF
    ]
    fixed = [
        {**s, "value": round(s["value"] * rng.uniform(1.5, 3.0), 5)} for s in rng.sample(picks, 25)
    ]
    return [
        cloudevent(
            "opsledger.metric.samples",
            {"samples": fixed},
            "samples-c1-fix",
            AS_OF - DAY,
            "c1",
            SOURCE,
        )
    ]


def _subnets(b: Builder) -> list[dict[str, Any]]:
    """Daily subnet status over November; one deleted; one sent after as_of."""
    rng = b.rng
    plan = [
        # cluster, subnet, zone, start available, daily decrease
        ("c1", "subnet-0a1", ZA, rng.randrange(600, 900), rng.randrange(5, 20)),
        ("c1", "subnet-0a2", ZA, 300, 1),
        ("c1", "subnet-0b1", ZB, rng.randrange(200, 400), rng.randrange(2, 9)),
        ("c1", "subnet-0b2", ZB, 40, 3),  # reaches 0 before as_of
        ("c1", "subnet-0c1", ZC, rng.randrange(100, 250), rng.randrange(1, 5)),
        ("c1", "subnet-0d1", ZD, 4000, 0),  # a zone with no nodes: no pod data
        ("c2", "subnet-1a1", ZA, rng.randrange(50, 120), 1),
        ("c2", "subnet-1b1", ZB, rng.randrange(50, 120), 1),
        ("c3", "subnet-2a1", ZA, rng.randrange(10, 30), 0),
    ]
    out = []
    for k, (cluster, sid, zone, avail0, drop) in enumerate(plan):
        d = MONTH_START
        i = 0
        while d < AS_OF:
            avail = max(0, avail0 - drop * i)
            ts = d + timedelta(hours=rng.randrange(24), minutes=rng.randrange(60))
            data = {
                "subnet_id": sid,
                "zone": zone,
                "cidr": f"10.{k}.{i % 4 * 4}.0/22",
                "available_ips": avail,
                "total_ips": 4091 if avail > 1019 else 1019,
                "vpc_id": f"vpc-{cluster}",
            }
            if sid == "subnet-0a2" and d >= _at(20):  # deleted from Nov 20 on
                data = {"subnet_id": sid, "deleted": True}
                out.append(
                    cloudevent(
                        "opsledger.network.subnet.status",
                        data,
                        f"subnet-{sid}-del",
                        ts,
                        cluster,
                        SOURCE,
                    )
                )
                break
            out.append(
                cloudevent(
                    "opsledger.network.subnet.status",
                    data,
                    f"subnet-{sid}-{i}",
                    ts,
                    cluster,
                    SOURCE,
                )
            )
            d += DAY
            i += 1
    late = {
        "subnet_id": "subnet-0c1",
        "zone": ZC,
        "cidr": "10.4.0.0/22",
        "available_ips": 1,
        "total_ips": 1019,
        "vpc_id": "vpc-c1",
    }
    out.append(
        cloudevent(
            "opsledger.network.subnet.status", late, "subnet-0c1-late", AS_OF + HOUR, "c1", SOURCE
        )
    )
    return out


def _cost_explorer(b: Builder) -> list[dict[str, Any]]:
    """EC2 cost per instance type and day. Settled days for as_of Dec 1: Oct 31 to Nov 29."""
    rng = b.rng
    out = []

    def row(day: date, itype: str, amount: float, hours: float, tag: str = "") -> None:
        data = {
            "date": day.isoformat(),
            "instance_type": itype,
            "amount": round(amount, 4),
            "usage_hours": hours,
            "currency": "USD",
        }
        out.append(
            cloudevent(
                "opsledger.cost.instance_type.daily",
                data,
                f"ce-{day}-{itype}{tag}",
                datetime.combine(day, datetime.min.time()) + DAY + 6 * HOUR,
                None,
                CE_SOURCE,
            )
        )

    d = date(2026, 10, 29)
    while d <= date(2026, 12, 1):
        settled = date(2026, 10, 31) <= d <= date(2026, 11, 29)
        # m6i.xlarge: Cost Explorer on every day; outside the settled days at ten times.
        hours = rng.randrange(40, 120)
        row(d, "m6i.xlarge", hours * rng.uniform(0.18, 0.21) * (1 if settled else 10), hours)
        # r6i.xlarge: only some days, the first and last settled ones among them.
        if d in (date(2026, 10, 30), date(2026, 11, 30), date(2026, 12, 1)):
            row(d, "r6i.xlarge", 500.0, 1.0)
        elif d in (date(2026, 10, 31), date(2026, 11, 29)) or rng.random() < 0.5:
            hours = rng.randrange(30, 72)
            row(d, "r6i.xlarge", hours * rng.uniform(0.24, 0.26), hours)
        # m6i.2xlarge: only unsettled days (the price table's price applies).
        if not settled:
            row(d, "m6i.2xlarge", 100.0, 10.0)
        # c6i.large: rows with no usage hours (the price table's price applies).
        if settled and rng.random() < 0.3:
            row(d, "c6i.large", 0.0, 0.0)
        d += DAY
    return out


def _restatements(b: Builder) -> list[dict[str, Any]]:
    """Cost Explorer restates a settled day: the last recorded amount counts, though this
    event's time is earlier than the first statement's."""
    day = date(2026, 11, 10)
    data = {
        "date": day.isoformat(),
        "instance_type": "m6i.xlarge",
        "amount": 77.5,
        "usage_hours": 150.0,
        "currency": "USD",
    }
    return [
        cloudevent(
            "opsledger.cost.instance_type.daily",
            data,
            f"ce-{day}-m6i.xlarge-re",
            _at(10, 12),
            None,
            CE_SOURCE,
        )
    ]


def _nodepools(b: Builder, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """general: a limit ahead of CPU requests and one behind memory requests, set twice at the
    same instant (the later recorded wins) and changed after as_of; gpu: deleted before as_of;
    batch: none; c2's default: a CPU limit only, over a flat trend."""
    rng = b.rng
    o = Oracle(events)
    cpu_level = o.requests_series("c1", "general", "cpu", AS_OF)[-1][1]
    mem_level = o.requests_series("c1", "general", "memory", AS_OF)[-1][1]
    c2_level = o.requests_series("c2", "default", "cpu", AS_OF)[-1][1]
    out = []

    def np_event(cluster: str, pool: str, tag: str, ts: datetime, **data: Any) -> None:
        out.append(
            cloudevent(
                "opsledger.k8s.nodepool.status",
                {"nodepool": pool, **data},
                f"nodepool-{cluster}-{pool}-{tag}",
                ts,
                cluster,
                SOURCE,
            )
        )

    tie = _at(15, 8, 30)
    np_event(
        "c1",
        "general",
        "0",
        _at(2),
        limits={"cpu_cores": 1000.0, "memory_bytes": 4096 * GIB},
        resources={"cpu_cores": 30.0, "memory_bytes": 120 * GIB, "nodes": 5},
        zones=[ZA, ZB, ZC],
    )
    np_event("c1", "general", "1", tie, limits={"cpu_cores": 2.0, "memory_bytes": GIB})
    np_event(
        "c1",
        "general",
        "2",
        tie,
        limits={
            "cpu_cores": round(cpu_level * rng.uniform(1.2, 1.6), 3),
            "memory_bytes": int(mem_level * rng.uniform(0.6, 0.9)),
        },
    )
    np_event("c1", "general", "late", AS_OF + 2 * HOUR, limits={"cpu_cores": 3.0})
    np_event("c1", "gpu", "0", _at(28), limits={"cpu_cores": 400.0})
    np_event("c1", "gpu", "del", _at(30, 3), deleted=True)
    np_event("c2", "default", "0", _at(1, 12), limits={"cpu_cores": round(c2_level * 1.5, 3)})
    return out


# -- the oracle: the events folded in ledger order ---------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default, DuckDB's quantile_cont)."""
    v = sorted(values)
    rank = (len(v) - 1) * q / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (rank - lo)


def mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def days_to(level: float, slope: float, target: float) -> float | None:
    if level >= target:
        return 0.0
    if slope <= 0:
        return None
    return (target - level) / slope


def eta(as_of: datetime, days: float | None) -> str | None:
    return None if days is None else iso(as_of + timedelta(days=days))


def trend(series: list[tuple[datetime, float]]) -> tuple[float, float]:
    """(level, slope) of daily values: the last value; polyfit's slope with >= 3 days."""
    if len(series) < 3:
        return series[-1][1], 0.0
    x = np.array([(d - series[0][0]) / DAY for d, _ in series], dtype=float)
    v = np.array([val for _, val in series], dtype=float)
    slope = float(np.polyfit(x, v, 1)[0])
    # docs/metrics.md: a slope within 1e-12 of the largest daily value per day is flat.
    if abs(slope) <= 1e-12 * max(abs(y) for y in v):
        slope = 0.0
    return series[-1][1], slope


def _sum_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return math.fsum(known) if known else None


class Oracle:
    """Plain-Python state of the ledger after the events, distinct by (source, id)."""

    def __init__(self, events: list[dict[str, Any]], price_table: dict[str, Any] | None = None):
        self.table = price_table
        self.wl: dict[tuple[str, str, str, str, datetime], dict[str, Any]] = {}
        self.nv: dict[tuple[str, str], dict[datetime, dict[str, float]]] = defaultdict(dict)
        self.nlabels: dict[tuple[str, str], list[tuple[datetime, str | None, str | None]]] = (
            defaultdict(list)
        )
        self.nstatus: dict[tuple[str, str], list[tuple[datetime, int, dict[str, Any]]]] = (
            defaultdict(list)
        )
        self.pools: dict[tuple[str, str], list[tuple[datetime, int, dict[str, Any]]]] = defaultdict(
            list
        )
        self.subnets: dict[tuple[str, str], list[tuple[datetime, int, dict[str, Any]]]] = (
            defaultdict(list)
        )
        self.ce: dict[tuple[date, str], tuple[float, float, str]] = {}
        seen: set[tuple[str, str]] = set()
        for pos, ev in enumerate(events):
            ident = (ev["source"], ev["id"])
            if ident in seen:
                continue
            seen.add(ident)
            self._apply(pos, ev)

    def _apply(self, pos: int, ev: dict[str, Any]) -> None:
        kind, data, cluster = ev["type"], ev["data"], ev.get("cluster")
        ts = parse(ev["time"])
        if kind == "opsledger.metric.samples":
            for s in data["samples"]:
                self._sample(cluster, s)
        elif kind == "opsledger.k8s.node.status":
            self.nstatus[(cluster, data["node"])].append((ts, pos, data))
        elif kind == "opsledger.k8s.nodepool.status":
            self.pools[(cluster, data["nodepool"])].append((ts, pos, data))
        elif kind == "opsledger.network.subnet.status":
            self.subnets[(cluster, data["subnet_id"])].append((ts, pos, data))
        elif kind == "opsledger.cost.instance_type.daily":
            key = (date.fromisoformat(data["date"]), data["instance_type"])
            self.ce[key] = (data["amount"], data["usage_hours"], data["currency"])

    def _sample(self, cluster: str, s: dict[str, Any]) -> None:
        name, lab, t = s["name"], s["labels"], parse(s["ts"])
        if name in NODE_METRICS:
            node = lab.get("node")
            if node is None:
                return
            self.nv[(cluster, node)].setdefault(t, {})[NODE_METRICS[name]] = float(s["value"])
            self.nlabels[(cluster, node)].append((t, lab.get("nodepool"), lab.get("zone")))
            return
        col = METRICS.get(name)
        if col is None or not all(k in lab for k in ("namespace", "pod", "container")):
            return
        key = (cluster, lab["namespace"], lab["pod"], lab["container"], t)
        row = self.wl.setdefault(key, {"kind": None, "workload": None, "node": None})
        row[col] = float(s["value"])
        for label, attr in (("workload_kind", "kind"), ("workload", "workload"), ("node", "node")):
            if lab.get(label) is not None:
                row[attr] = lab[label]

    # -- lookups at an instant ------------------------------------------------------------
    @staticmethod
    def _latest(history: list[tuple[datetime, int, dict[str, Any]]], at: datetime):
        known = [h for h in history if h[0] <= at]
        return max(known, key=lambda h: (h[0], h[1]))[2] if known else None

    def meta(self, cluster: str, node: str, at: datetime) -> tuple[Any, Any, Any]:
        """(nodepool, zone, instance_type) of a node at `at`."""
        st = self._latest(self.nstatus.get((cluster, node), []), at)
        if st is not None:
            return st.get("nodepool"), st.get("zone"), st.get("instance_type")
        labels = [lab for lab in self.nlabels.get((cluster, node), []) if lab[0] <= at]
        if labels:
            last = max(labels, key=lambda lab: lab[0])
            return last[1], last[2], None
        return None, None, None

    def price(self, itype: str | None, at: datetime) -> tuple[float | None, str | None]:
        """Hourly price of an instance type as of `at`, and its currency."""
        if itype is None:
            return None, None
        lo, hi = at.date() - timedelta(days=31), at.date() - timedelta(days=2)
        rows = [v for (d, t), v in self.ce.items() if t == itype and lo <= d <= hi]
        hours = math.fsum(r[1] for r in rows)
        if rows and hours > 0:
            return math.fsum(r[0] for r in rows) / hours, rows[0][2]
        table = self.table or {}
        if itype in table.get("instance_types", {}):
            return float(table["instance_types"][itype]), table["currency"]
        return None, None

    def node_hours(self, cluster: str, lo: datetime, hi: datetime):
        """{(node, hour): (c cores, g GiB)} of the nodes present in each hour of [lo, hi)."""
        out: dict[tuple[str, datetime], tuple[float, float]] = {}
        for (c, node), values in self.nv.items():
            if c != cluster:
                continue
            by_hour: dict[datetime, list[dict[str, float]]] = defaultdict(list)
            for t, v in values.items():
                if lo <= t < hi and v.get("cpu_a") is not None:
                    by_hour[hour_of(t)].append(v)
            for h, vs in by_hour.items():
                cs = mean([v["cpu_a"] for v in vs])
                gs = mean([v["mem_a"] / GIB for v in vs if v.get("mem_a") is not None])
                out[(node, h)] = (cs, gs)  # type: ignore[assignment]
        return out

    @staticmethod
    def split(p: float, c: float, g: float) -> tuple[float, float]:
        """(CPU price per core-hour, memory price per GiB-hour) of a node."""
        s = c * W_CPU / (c * W_CPU + g * W_MEM)
        return p * s / c, p * (1 - s) / g

    def unit_prices(self, cluster: str, lo: datetime, hi: datetime, at: datetime):
        cpu_cost = mem_cost = cores = gibs = 0.0
        currency = None
        for (node, _), (c, g) in self.node_hours(cluster, lo, hi).items():
            p, cur = self.price(self.meta(cluster, node, at)[2], at)
            if p is None:
                continue
            s = c * W_CPU / (c * W_CPU + g * W_MEM)
            cpu_cost += p * s
            mem_cost += p * (1 - s)
            cores += c
            gibs += g
            currency = cur
        if cores == 0:
            return None, None, None
        return cpu_cost / cores, mem_cost / gibs, currency

    # -- rightsizing ----------------------------------------------------------------------
    def rightsizing(
        self,
        as_of: datetime,
        lookback: timedelta,
        cluster: str | None = None,
        namespace: str | None = None,
        workload: str | None = None,
    ) -> dict[tuple[str, str, str, str, str], dict[str, Any]]:
        lo = as_of - lookback
        groups: dict[tuple[str, str, str, str, str], list[tuple[datetime, dict[str, Any]]]] = (
            defaultdict(list)
        )
        for (c, ns, pod, cont, t), row in self.wl.items():
            if not lo <= t < as_of:
                continue
            kind = row["kind"] or "Pod"
            wname = row["workload"] or pod
            if cluster not in (None, c) or namespace not in (None, ns):
                continue
            if workload not in (None, wname):
                continue
            groups[(c, ns, kind, wname, cont)].append((t, row))
        prices = {c: self.unit_prices(c, lo, as_of, as_of) for c in {k[0] for k in groups}}
        out = {}
        for key, rows in groups.items():
            out[key] = self._rightsize(key, rows, prices[key[0]])
        return out

    def _rightsize(
        self,
        key: tuple[str, ...],
        rows: list[tuple[datetime, dict[str, Any]]],
        prices: tuple[Any, Any, Any],
    ) -> dict[str, Any]:
        def col(name: str) -> list[float]:
            return [r[name] for _, r in rows if r.get(name) is not None]

        cpu_use, mem_use = col("cpu_usage"), col("memory_usage")
        p95 = percentile(cpu_use, PERCENTILE) if cpu_use else None
        mx = max(mem_use) if mem_use else None
        cpu_rec = None if p95 is None else max(p95, MIN_CPU)
        mem_rec = None if mx is None else max(mx * (1 + BUFFER), MIN_MEMORY)
        cpu_ts = {t for t, r in rows if r.get("cpu_usage") is not None}
        pods_avg = len(cpu_use) / len(cpu_ts) if cpu_ts else None
        cpu_req, mem_req = mean(col("cpu_request")), mean(col("memory_request"))
        cpu_rc = None if cpu_req is None or cpu_rec is None else (cpu_req - cpu_rec) * pods_avg
        mem_rc = None if mem_req is None or mem_rec is None else (mem_req - mem_rec) * pods_avg
        cpu_price, mem_price, currency = prices
        savings = None
        if (cpu_rc is not None or mem_rc is not None) and cpu_price is not None:
            savings = ((cpu_rc or 0.0) * cpu_price + (mem_rc or 0.0) / GIB * mem_price) * 730
        usage_ts = sorted(
            {
                t
                for t, r in rows
                if r.get("cpu_usage") is not None or r.get("memory_usage") is not None
            }
        )
        if not usage_ts or usage_ts[-1] - usage_ts[0] < DAY:
            status = "insufficient_data"
        elif cpu_req is None or mem_req is None:
            status = "no_requests"
        elif cpu_rec > cpu_req or mem_rec > mem_req:
            status = "under"
        elif cpu_req - cpu_rec > 0.10 * cpu_req or mem_req - mem_rec > 0.10 * mem_req:
            status = "over"
        else:
            status = "ok"
        return {
            "cluster": key[0],
            "namespace": key[1],
            "workload_kind": key[2],
            "workload": key[3],
            "container": key[4],
            "pods_avg": pods_avg,
            "cpu_request_cores": cpu_req,
            "cpu_usage_p95_cores": p95,
            "cpu_recommended_cores": cpu_rec,
            "cpu_limit_cores": mean(col("cpu_limit")),
            "memory_request_bytes": mem_req,
            "memory_usage_max_bytes": mx,
            "memory_recommended_bytes": mem_rec,
            "memory_limit_bytes": mean(col("memory_limit")),
            "cpu_reclaim_cores": cpu_rc,
            "memory_reclaim_bytes": mem_rc,
            "monthly_savings": savings,
            "currency": currency if cpu_price is not None else None,
            "status": status,
        }

    # -- headroom -------------------------------------------------------------------------
    def _in_scope(self, cluster: str, pool: str | None, node: str | None, at: datetime) -> bool:
        if pool is None:
            return True
        return node is not None and self.meta(cluster, node, at)[0] == pool

    def requests_series(
        self, cluster: str, pool: str | None, resource: str, as_of: datetime
    ) -> list[tuple[datetime, float]]:
        """Daily means over the scope's distinct timestamps of its summed requests."""
        col = "cpu_request" if resource == "cpu" else "memory_request"
        lo = as_of - TREND_WINDOW
        at_ts: dict[datetime, list[float | None]] = defaultdict(list)
        members: dict[str, bool] = {}
        for (c, _, _, _, t), row in self.wl.items():
            if c != cluster or not lo <= day_of(t) < as_of:
                continue
            node = row["node"]
            if node not in members:
                members[node] = self._in_scope(cluster, pool, node, as_of)
            if members[node]:
                at_ts[t].append(row.get(col))
        by_day: dict[datetime, list[float]] = defaultdict(list)
        for t, values in at_ts.items():
            s = _sum_or_none(values)
            if s is not None:
                by_day[day_of(t)].append(s)
        return sorted((d, mean(v)) for d, v in by_day.items())  # type: ignore[misc]

    def scope_nodes(self, cluster: str, pool: str | None) -> list[str]:
        """Nodes of a scope by their samples' nodepool label (the capacity projection's)."""
        return sorted(
            node
            for (c, node), labels in self.nlabels.items()
            if c == cluster and (pool is None or any(lab[1] == pool for lab in labels))
        )

    def allocatable_series(
        self, cluster: str, pool: str | None, resource: str, as_of: datetime
    ) -> list[tuple[datetime, float]]:
        col = "cpu_a" if resource == "cpu" else "mem_a"
        lo = as_of - TREND_WINDOW
        sums: dict[datetime, list[float]] = defaultdict(list)
        for node in self.scope_nodes(cluster, pool):
            for t, v in self.nv[(cluster, node)].items():
                if lo <= day_of(t) < as_of and v.get(col) is not None:
                    sums[t].append(v[col])
        by_day: dict[datetime, list[float]] = defaultdict(list)
        for t, vs in sums.items():
            by_day[day_of(t)].append(math.fsum(vs))
        return sorted((d, mean(v)) for d, v in by_day.items())  # type: ignore[misc]

    def latest_allocatable(
        self, cluster: str, pool: str | None, resource: str, as_of: datetime
    ) -> dict[str, float]:
        """Each node's latest allocatable in [as_of - 1 d, as_of)."""
        col = "cpu_a" if resource == "cpu" else "mem_a"
        out = {}
        for node in self.scope_nodes(cluster, pool):
            known = [
                (t, v[col])
                for t, v in self.nv[(cluster, node)].items()
                if as_of - DAY <= t < as_of and v.get(col) is not None
            ]
            if known:
                out[node] = max(known)[1]
        return out

    def headroom(self, as_of: datetime) -> dict[tuple[str, str | None, str], dict[str, Any]]:
        scopes: set[tuple[str, str | None]] = set()
        for (c, _), labels in self.nlabels.items():
            scopes.add((c, None))
            scopes.update((c, lab[1]) for lab in labels if lab[1] is not None)
        out = {}
        for cluster, pool in sorted(scopes, key=lambda s: (s[0], s[1] or "")):
            for resource in ("cpu", "memory"):
                item = self._headroom_item(cluster, pool, resource, as_of)
                if item is not None:
                    out[(cluster, pool, resource)] = item
        return out

    def _headroom_item(self, cluster: str, pool: str | None, resource: str, as_of: datetime):
        alloc_series = self.allocatable_series(cluster, pool, resource, as_of)
        if not alloc_series:
            return None
        allocatable = alloc_series[-1][1]
        latest = self.latest_allocatable(cluster, pool, resource, as_of)
        largest = max(latest.values(), default=0.0)
        req = self.requests_series(cluster, pool, resource, as_of)
        item: dict[str, Any] = {"allocatable": allocatable, "largest_node_allocatable": largest}
        if req:
            level, slope = trend(req)
            n1 = max(allocatable - largest, 0.0)
            d85 = days_to(level, slope, TARGET * allocatable)
            d85n1 = days_to(level, slope, TARGET * n1)
            item.update(
                requests=level,
                commitment_by_requests=level / allocatable,
                requests_growth_per_day=slope,
                days_to_85_by_requests=d85,
                eta_85_by_requests=eta(as_of, d85),
                days_to_85_by_requests_n_minus_1=d85n1,
                eta_85_by_requests_n_minus_1=eta(as_of, d85n1),
            )
        else:
            level = slope = None
            item.update(
                requests=None,
                commitment_by_requests=None,
                requests_growth_per_day=None,
                days_to_85_by_requests=None,
                eta_85_by_requests=None,
                days_to_85_by_requests_n_minus_1=None,
                eta_85_by_requests_n_minus_1=None,
            )
        zones: dict[str | None, float] = defaultdict(float)
        for node, a in latest.items():
            zones[self.meta(cluster, node, as_of)[1]] += a
        named = {z: a for z, a in zones.items() if z is not None}
        big = max(named, key=lambda z: named[z]) if named else None
        without = math.fsum(zones.values()) - (named[big] if big is not None else 0.0)
        item["zone_loss"] = {
            "zones": dict(zones),
            "largest_zone": big,
            "largest_zone_allocatable": named[big] if big is not None else None,
            "allocatable_without_largest_zone": without,
            "commitment_without_largest_zone": (
                None if level is None or without == 0 else level / without
            ),
            "survives": None if level is None else level <= without,
        }
        item["nodepool_limit"] = None
        if pool is not None:
            np_ = self._latest(self.pools.get((cluster, pool), []), as_of)
            if np_ is not None and not np_.get("deleted"):
                limits = np_.get("limits") or {}
                limit = limits.get("cpu_cores" if resource == "cpu" else "memory_bytes")
                if limit is not None:
                    days = None if level is None else days_to(level, slope, float(limit))
                    item["nodepool_limit"] = {
                        "limit": float(limit),
                        "days_to_limit": days,
                        "eta_limit": eta(as_of, days),
                    }
        return item

    # -- subnet IPs -----------------------------------------------------------------------
    def pods_series(self, cluster: str, zone: str, as_of: datetime):
        lo = as_of - TREND_WINDOW
        pods_at: dict[datetime, set[tuple[str, str]]] = defaultdict(set)
        zone_of: dict[str, Any] = {}
        for (c, ns, pod, _, t), row in self.wl.items():
            if c != cluster or row.get("cpu_usage") is None or not lo <= day_of(t) < as_of:
                continue
            node = row["node"]
            if node not in zone_of:
                zone_of[node] = None if node is None else self.meta(cluster, node, as_of)[1]
            if zone_of[node] == zone:
                pods_at[t].add((ns, pod))
        by_day: dict[datetime, list[float]] = defaultdict(list)
        for t, pods in pods_at.items():
            by_day[day_of(t)].append(float(len(pods)))
        return sorted((d, mean(v)) for d, v in by_day.items())  # type: ignore[misc]

    def ip_headroom(self, as_of: datetime):
        subnets = {}
        for (cluster, sid), history in self.subnets.items():
            latest = max(
                ((t, p, d) for t, p, d in history if t <= as_of),
                key=lambda h: (h[0], h[1]),
                default=None,
            )
            if latest is None or latest[2].get("deleted"):
                continue
            subnets[(cluster, sid)] = (latest[0], latest[2])
        zones: dict[tuple[str, str], dict[str, Any]] = {}
        for (cluster, _), (_, d) in subnets.items():
            z = zones.setdefault((cluster, d["zone"]), {"available_ips": 0})
            z["available_ips"] += d["available_ips"]
        for (cluster, zone), z in zones.items():
            series = self.pods_series(cluster, zone, as_of)
            if series:
                pods, per_day = trend(series)
            else:
                pods = per_day = None
            if z["available_ips"] == 0:
                days = 0.0
            elif per_day is not None and per_day > 0:
                days = z["available_ips"] / per_day
            else:
                days = None
            z.update(pods=pods, pods_per_day=per_day, days_to_exhaustion=days, eta=eta(as_of, days))
        out_subnets = {}
        for (cluster, sid), (t, d) in subnets.items():
            zd = zones[(cluster, d["zone"])]["days_to_exhaustion"]
            days = 0.0 if d["available_ips"] == 0 else zd
            out_subnets[(cluster, sid)] = {
                "zone": d["zone"],
                "vpc_id": d.get("vpc_id"),
                "cidr": d.get("cidr"),
                "available_ips": d["available_ips"],
                "total_ips": d.get("total_ips"),
                "days_to_exhaustion": days,
                "eta": eta(as_of, days),
                "observed_at": iso(t),
            }
        return zones, out_subnets

    # -- showback -------------------------------------------------------------------------
    def showback(self, month_start: datetime, month_end: datetime, by: str):
        """{cluster: {"items": {key: {...}}, "idle": {...}, "total": float, "unpriced": set}}."""
        at = month_end  # min(month end, now): the month is over
        rows_by: dict[tuple[str, datetime], list[tuple[datetime, tuple[str, ...], dict]]] = (
            defaultdict(list)
        )
        for (c, ns, pod, _, t), row in self.wl.items():
            if month_start <= t < month_end:
                rows_by[(c, hour_of(t))].append((t, (ns, pod), row))
        clusters = sorted({c for c, _ in self.nv} | {c for c, _ in rows_by})
        out = {}
        for cluster in clusters:
            nh = self.node_hours(cluster, month_start, month_end)
            prices: dict[str, tuple[float | None, str | None, str | None]] = {}
            for node in {n for n, _ in nh}:
                itype = self.meta(cluster, node, at)[2]
                p, cur = self.price(itype, at)
                prices[node] = (p, cur, itype)
            items: dict[tuple[Any, ...], dict[str, Any]] = {}
            idle = {"cpu": 0.0, "memory": 0.0}
            total = 0.0
            for (node, _), _cg in nh.items():
                if prices[node][0] is not None:
                    total += prices[node][0]
            node_cost: dict[tuple[str, datetime], list[float]] = defaultdict(lambda: [0.0, 0.0])
            for (c, h), rows in rows_by.items():
                if c != cluster:
                    continue
                m = len({t for t, _, _ in rows})
                for _, (ns, _pod), row in rows:
                    node = row["node"]
                    key = self._key(cluster, ns, row, _pod, node, at, by)
                    item = items.setdefault(key, {"cpu": 0.0, "memory": 0.0, "costed": True})
                    cg = nh.get((node, h)) if node is not None else None
                    if cg is None or prices[node][0] is None:
                        item["costed"] = False
                        continue
                    cpu_price, mem_price = self.split(prices[node][0], *cg)
                    cpu_alloc = max(row.get("cpu_request") or 0.0, row.get("cpu_usage") or 0.0)
                    mem_alloc = (
                        max(row.get("memory_request") or 0.0, row.get("memory_usage") or 0.0) / GIB
                    )
                    cc, mc = cpu_alloc / m * cpu_price, mem_alloc / m * mem_price
                    item["cpu"] += cc
                    item["memory"] += mc
                    nc = node_cost[(node, h)]
                    nc[0] += cc
                    nc[1] += mc
            for (node, h), (c, g) in nh.items():
                p = prices[node][0]
                if p is None:
                    continue
                cpu_price, mem_price = self.split(p, c, g)
                nc = node_cost.get((node, h), [0.0, 0.0])
                idle["cpu"] += cpu_price * c - nc[0]
                idle["memory"] += mem_price * g - nc[1]
            idle["cost"] = math.fsum(  # p − Σ the node-hour's row costs
                prices[node][0] - math.fsum(node_cost.get((node, h), [0.0, 0.0]))
                for (node, h) in nh
                if prices[node][0] is not None
            )
            unpriced = {(n, prices[n][2]) for n in prices if prices[n][0] is None}
            currency = next((prices[n][1] for n in prices if prices[n][1] is not None), None)
            out[cluster] = {
                "items": items,
                "idle": idle,
                "total": total,
                "unpriced": unpriced,
                "currency": currency,
            }
        return out

    def _key(self, cluster, ns, row, pod, node, at, by) -> tuple[Any, ...]:
        if by == "namespace":
            return (ns,)
        if by == "nodepool":
            return (None if node is None else self.meta(cluster, node, at)[0],)
        return (ns, row["kind"] or "Pod", row["workload"] or pod)
