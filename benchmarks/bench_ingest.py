"""Ingest throughput: the SQLite engine's limit vs opsledger in-process vs POST /v1/events.

Two workloads, each written through three paths into fresh, migrated SQLite files:

  (a)  raw `sqlite3` `executemany` of the rows in ONE transaction, same PRAGMAs as opsledger
       (WAL, synchronous=NORMAL): the engine's limit for those rows;
  (b)  `Ledger.append` of already-validated `Event` objects (validation excluded);
  (c)  `POST /v1/events` of the same events as JSON batches to `uvicorn` on 127.0.0.1.

Informational lines: (a') = (a) with one transaction per batch, as opsledger commits;
(b') = `validate_events` of the decoded JSON dicts + `Ledger.append` (the server's work
without HTTP).

Workload `events`: N small non-metric events (pod status, incident lifecycle, findings) in
batches of 1,000; (a) inserts the exact `events` rows opsledger stores for them.
Workload `samples`: 200 nodes x 4 node metrics at 60 s steps, one event per 10-minute window
(8,000 samples), for `--sample-hours`; (a) inserts one row per sample into a plain
`samples(series_id, ts, value)` table.

Every timed figure is the median of `--repeat` runs. Run from the repository root:

    .venv/bin/python benchmarks/bench_ingest.py            # or: make bench
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import math
import os
import platform
import pstats
import queue
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from store.contract import (
    Event,
    batch_from_columns,
    event_to_cloudevent,
    samples_event,
    validate_events,
)
from store.engine import SQLITE_BUSY_TIMEOUT_MS, make_engine
from store.keys import create_key
from store.ledger import EVENT_COLUMNS, Ledger
from store.migrate import upgrade
from store.timefmt import format_us, parse_rfc3339_us

REPO = Path(__file__).resolve().parent.parent
CLUSTER = "prod-eks-1"
T0_US = parse_rfc3339_us("2026-10-01T00:00:00Z")
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
STEP_S = 60
WINDOW_STEPS = 10
NODES = 200
NODE_METRICS = (
    "node_cpu_usage_cores",
    "node_cpu_allocatable_cores",
    "node_memory_usage_bytes",
    "node_memory_allocatable_bytes",
)
TARGET_B_OVER_A = 0.5
TARGET_C_OVER_B = 0.25
TARGET_SAMPLES_PER_S = 1_000_000
TARGET_BYTES_PER_SAMPLE = 16.0

INSERT_EVENT = (
    f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in EVENT_COLUMNS)})"
)
NAIVE_TABLE = "CREATE TABLE samples (series_id INTEGER, ts INTEGER, value REAL)"
INSERT_SAMPLE = "INSERT INTO samples (series_id, ts, value) VALUES (?, ?, ?)"


# -- workloads ------------------------------------------------------------------------------


@dataclass
class Workload:
    """One workload in every form the paths need, all built before any timing."""

    name: str
    n_events: int
    n_samples: int
    events: list[list[Event]]  # validated, one list per append / request
    dicts: list[list[dict[str, Any]]]  # decoded JSON, one list per append / request
    bodies: list[bytes]  # serialized JSON arrays, one per request
    raw_rows: list[list[tuple[Any, ...]]]  # rows for (a), one list per batch
    raw_setup: str | None = None  # DDL run before (a), untimed
    raw_insert: str = INSERT_EVENT


def _cloudevent(
    source: str,
    event_id: str,
    event_type: str,
    time_us: int,
    data: dict[str, Any],
    cluster: str | None = None,
    subject: str | None = None,
) -> dict[str, Any]:
    return event_to_cloudevent(
        source=source,
        event_id=event_id,
        event_type=event_type,
        time_us=time_us,
        cluster=cluster,
        subject=subject,
        data=data,
    )


def _node_name(i: int) -> str:
    return (
        f"ip-10-{20 + i // 250}-{(i * 37) % 250}-{(i * 101) % 250}.us-gov-west-1.compute.internal"
    )


def generate_event_dicts(n: int, seed: int) -> list[dict[str, Any]]:
    """A deterministic mix: ~70% pod status, ~20% incident lifecycle, ~10% findings."""
    rng = random.Random(seed)
    phases = ["Running"] * 8 + ["Pending", "Succeeded", "Failed"]
    services = ["checkout", "payments", "search", "auth", "ledger-api", "ingest", "web"]
    finding_types = [
        "Execution:Kubernetes/ExecInKubeSystemPod",
        "Policy:Kubernetes/AnonymousAccessGranted",
        "Discovery:Kubernetes/SuccessfulAnonymousAccess",
        "PrivilegeEscalation:Kubernetes/PrivilegedContainer",
    ]
    stages = ["acknowledged", "annotated", "mitigated", "resolved"]
    open_incidents: list[list[Any]] = []  # [incident_id, next stage]
    opened = 0
    out: list[dict[str, Any]] = []
    for i in range(n):
        t_us = T0_US + i * 1_700_000
        eid = f"{i:08d}"
        r = rng.random()
        if r < 0.70:
            ns = f"team-{rng.randrange(24):02d}"
            svc = rng.choice(services)
            pod = f"{svc}-{rng.randrange(16**6):06x}-{rng.randrange(36**5):05x}"
            phase = rng.choice(phases)
            restarts = rng.choice([0, 0, 0, 0, 1, 2, 5, 17])
            data: dict[str, Any] = {
                "namespace": ns,
                "pod": pod,
                "phase": phase,
                "restarts": restarts,
                "node": _node_name(rng.randrange(NODES)),
                "owner": f"ReplicaSet/{svc}-{rng.randrange(16**6):06x}",
            }
            if phase == "Failed" or restarts > 4:
                data["reason"] = rng.choice(["CrashLoopBackOff", "OOMKilled", "Error"])
            out.append(
                _cloudevent(
                    f"k8s://{CLUSTER}/pods",
                    eid,
                    "opsledger.k8s.pod.status",
                    t_us,
                    data,
                    CLUSTER,
                    f"{ns}/{pod}",
                )
            )
        elif r < 0.90:
            if not open_incidents or rng.random() < 0.25:
                opened += 1
                incident_id = f"INC-{opened:06d}"
                open_incidents.append([incident_id, 0])
                svc = rng.choice(services)
                data = {
                    "incident_id": incident_id,
                    "title": f"{svc}: elevated 5xx rate after deploy",
                    "severity": rng.choice(["P0", "P1", "P2", "P2", "P3", "P3"]),
                    "namespace": f"team-{rng.randrange(24):02d}",
                    "service": svc,
                }
                out.append(
                    _cloudevent(
                        "opsledger://incidents",
                        eid,
                        "opsledger.incident.opened",
                        t_us,
                        data,
                        CLUSTER,
                    )
                )
            else:
                k = rng.randrange(len(open_incidents))
                incident_id, stage_no = open_incidents[k]
                stage = stages[stage_no]
                if stage == "annotated":
                    data = {
                        "incident_id": incident_id,
                        "note": "rolled back to the previous ReplicaSet; error rate recovering",
                    }
                else:
                    data = {"incident_id": incident_id, "by": f"oncall-{rng.randrange(9)}"}
                if stage_no + 1 == len(stages):
                    open_incidents.pop(k)
                else:
                    open_incidents[k][1] = stage_no + 1
                out.append(
                    _cloudevent(
                        "opsledger://incidents", eid, f"opsledger.incident.{stage}", t_us, data
                    )
                )
        else:
            seen = format_us(t_us)
            data = {
                "provider": "guardduty",
                "finding_id": hashlib.md5(eid.encode()).hexdigest(),
                "title": "A container was launched with privileged access",
                "finding_type": rng.choice(finding_types),
                "severity": rng.choice(["HIGH", "MEDIUM", "MEDIUM", "LOW"]),
                "resource": f"arn:aws-us-gov:eks:us-gov-west-1:123456789012:cluster/{CLUSTER}",
                "namespace": f"team-{rng.randrange(24):02d}",
                "status": "ACTIVE",
                "first_seen": seen,
                "last_seen": seen,
            }
            out.append(
                _cloudevent(
                    "aws://guardduty/us-gov-west-1", eid, "opsledger.finding", t_us, data, CLUSTER
                )
            )
    return out


def event_rows(batches: Sequence[Sequence[Event]]) -> list[list[tuple[Any, ...]]]:
    """The exact `events` rows Ledger.append stores for these events, appended in order."""
    now = time.time_ns() // 1000
    versions: dict[str, int] = {}
    position = 0
    out = []
    for batch in batches:
        rows = []
        for ev in batch:
            assert ev.samples is None
            position += 1
            version = None
            if ev.stream is not None:
                version = versions[ev.stream] = versions.get(ev.stream, 0) + 1
            rows.append(
                (
                    position,
                    ev.source,
                    ev.id,
                    ev.type,
                    ev.time_us,
                    ev.cluster,
                    ev.subject,
                    ev.stream,
                    version,
                    now,
                    0,
                    orjson.dumps(ev.data),
                    ev.digest,
                    0,
                )
            )
        out.append(rows)
    return out


def build_events_workload(n: int, batch: int, seed: int) -> Workload:
    """Workload `events`: n small non-metric events in batches."""
    dicts = generate_event_dicts(n, seed)
    bodies = [orjson.dumps(dicts[k : k + batch]) for k in range(0, n, batch)]
    decoded = [orjson.loads(b) for b in bodies]
    events = [validate_events(d) for d in decoded]
    return Workload(
        name="events",
        n_events=n,
        n_samples=0,
        events=events,
        dicts=decoded,
        bodies=bodies,
        raw_rows=event_rows(events),
    )


def build_samples_workload(hours: float, per_request: int, seed: int) -> Workload:
    """Workload `samples`: 200 nodes x 4 gauges at 60 s, one event per 10-minute window."""
    rng = np.random.default_rng(seed)
    pools = ["general", "compute", "memory", "system"]
    zones = ["us-gov-west-1a", "us-gov-west-1b", "us-gov-west-1c"]
    labels = [
        {"node": _node_name(i), "nodepool": pools[i % 4], "zone": zones[i % 3]}
        for i in range(NODES)
    ]
    series = [(m, labels[i]) for m in NODE_METRICS for i in range(NODES)]
    n_series = len(series)
    cpu_alloc = rng.choice([3.92, 7.91, 15.89, 31.85], size=NODES)
    mem_alloc = (rng.choice([15.3, 30.8, 61.9, 124.6], size=NODES) * 2**30 // 1024) * 1024
    phase = rng.uniform(0, 2 * math.pi, size=NODES)
    windows = max(1, round(hours * 60 / (STEP_S / 60) / WINDOW_STEPS))
    sidx = np.repeat(np.arange(n_series, dtype=np.int64), WINDOW_STEPS)
    source = f"prometheus://{CLUSTER}/nodes"

    events: list[Event] = []
    cloud: list[dict[str, Any]] = []
    raw: list[tuple[Any, ...]] = []
    for w in range(windows):
        minutes = w * WINDOW_STEPS + np.arange(WINDOW_STEPS)
        ts_s = (T0_US // 1_000_000) + minutes * STEP_S
        day = 2 * math.pi * minutes / 1440.0
        util = 0.45 + 0.25 * np.sin(day[None, :] + phase[:, None])
        cpu = np.round(
            cpu_alloc[:, None] * np.clip(util + rng.normal(0, 0.05, util.shape), 0.01, 0.99), 9
        )
        mem_util = np.clip(util * 0.8 + 0.1 + rng.normal(0, 0.01, util.shape), 0.05, 0.97)
        mem = np.floor(mem_alloc[:, None] * mem_util / 1024) * 1024
        values = np.concatenate(
            [
                cpu.ravel(),
                np.repeat(cpu_alloc, WINDOW_STEPS),
                mem.ravel(),
                np.repeat(mem_alloc, WINDOW_STEPS),
            ]
        ).astype(np.float64)
        ts_s_col = np.tile(ts_s, n_series).astype(np.int64)
        ts_us = ts_s_col * 1_000_000
        batch = batch_from_columns(series, sidx, ts_us, values)
        time_us = int(ts_us.max())
        eid = f"nodes-{w:05d}"
        events.append(samples_event(source, eid, time_us, CLUSTER, batch))
        names = [s[0] for s in series]
        samples = [
            {"name": names[s], "labels": series[s][1], "ts": t, "value": v}
            for s, t, v in zip(sidx.tolist(), ts_s_col.tolist(), values.tolist(), strict=True)
        ]
        cloud.append(
            _cloudevent(
                source,
                eid,
                "opsledger.metric.samples",
                time_us,
                {"samples": samples},
                CLUSTER,
            )
        )
        raw.extend(zip((sidx + 1).tolist(), ts_us.tolist(), values.tolist(), strict=True))
    groups = range(0, windows, per_request)
    bodies = [orjson.dumps(cloud[k : k + per_request]) for k in groups]
    del cloud
    decoded = [orjson.loads(b) for b in bodies]
    spr = WINDOW_STEPS * n_series * per_request
    return Workload(
        name="samples",
        n_events=windows,
        n_samples=len(raw),
        events=[events[k : k + per_request] for k in groups],
        dicts=decoded,
        bodies=bodies,
        raw_rows=[raw[k : k + spr] for k in range(0, len(raw), spr)],
        raw_setup=NAIVE_TABLE,
        raw_insert=INSERT_SAMPLE,
    )


# -- databases ------------------------------------------------------------------------------


class Databases:
    """Fresh migrated SQLite files, copied from one template migrated once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.template = root / "template.db"
        upgrade(f"sqlite:///{self.template}")
        self.empty_size = compact(self.template)
        self._n = 0

    def fresh(self, label: str) -> Path:
        self._n += 1
        path = self.root / f"{self._n:03d}-{label}.db"
        shutil.copyfile(self.template, path)
        return path

    @staticmethod
    def drop(path: Path) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def compact(path: Path) -> int:
    """Checkpoint the WAL into the file, VACUUM, and return the file size in bytes."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return path.stat().st_size


def raw_connect(path: Path) -> sqlite3.Connection:
    """A sqlite3 connection with the PRAGMAs store/engine.py sets on every connection."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def content_digest(path: Path, *, with_positions: bool) -> str:
    """A digest of every stored row (recorded_at excluded), to check paths wrote the same."""
    cols = [c for c in EVENT_COLUMNS if c != "recorded_at"]
    order = "position"
    if not with_positions:
        cols = [c for c in cols if c not in ("position", "stream_version")]
        order = "source, id"
    h = hashlib.blake2b(digest_size=16)
    conn = sqlite3.connect(path)
    try:
        for row in conn.execute(f"SELECT {', '.join(cols)} FROM events ORDER BY {order}"):
            h.update(orjson.dumps([r.hex() if isinstance(r, bytes) else r for r in row]))
        for row in conn.execute("SELECT series_id, name, labels FROM series ORDER BY series_id"):
            h.update(orjson.dumps(list(row)))
    finally:
        conn.close()
    return h.hexdigest()


# -- the paths ------------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    path: Path


def run_raw(dbs: Databases, wl: Workload, one_transaction: bool) -> Run:
    path = dbs.fresh(f"{wl.name}-raw")
    conn = raw_connect(path)
    try:
        if wl.raw_setup:
            conn.execute(wl.raw_setup)
        gc.collect()
        t0 = time.perf_counter()
        if one_transaction:
            conn.execute("BEGIN IMMEDIATE")
            for rows in wl.raw_rows:
                conn.executemany(wl.raw_insert, rows)
            conn.execute("COMMIT")
        else:
            for rows in wl.raw_rows:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(wl.raw_insert, rows)
                conn.execute("COMMIT")
        elapsed = time.perf_counter() - t0
    finally:
        conn.close()
    return Run(elapsed, path)


def run_ledger(
    dbs: Databases, wl: Workload, validate: bool, profiler: cProfile.Profile | None = None
) -> Run:
    path = dbs.fresh(f"{wl.name}-ledger")
    ledger = Ledger.from_url(url_of(path))
    try:
        ledger.head()  # open the pooled connection before timing
        gc.collect()
        accepted = 0
        if profiler is not None:
            profiler.enable()
        t0 = time.perf_counter()
        if validate:
            for dicts in wl.dicts:
                accepted += ledger.append(validate_events(dicts)).accepted
        else:
            for batch in wl.events:
                accepted += ledger.append(batch).accepted
        elapsed = time.perf_counter() - t0
        if profiler is not None:
            profiler.disable()
    finally:
        ledger.engine.dispose()
    assert accepted == wl.n_events, (accepted, wl.n_events)
    return Run(elapsed, path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """`uvicorn api.app:create_app --factory` in a subprocess, on a loopback port."""

    def __init__(self, db: Path, log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env["OPSLEDGER_DATABASE_URL"] = url_of(db)
        env["OPSLEDGER_HOME"] = str(db.parent)
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "api.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "info",  # as `opsledger serve` runs it by default
            ],
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.log = log

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early; log:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not ready after {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def run_http(dbs: Databases, wl: Workload, connections: int) -> Run:
    path = dbs.fresh(f"{wl.name}-http")
    engine = make_engine(url_of(path))
    try:
        _key, token = create_key(engine, "bench", "write")
    finally:
        engine.dispose()
    server = Server(path, path.with_suffix(".log"))
    try:
        server.wait_ready()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": BATCH_CONTENT_TYPE}
        clients = [
            httpx.Client(base_url=server.base, headers=headers, timeout=300.0)
            for _ in range(connections)
        ]
        try:
            for c in clients:  # open each keep-alive connection and authenticate once
                c.get("/v1/events", params={"limit": 1}).raise_for_status()
            work: queue.SimpleQueue[bytes] = queue.SimpleQueue()
            for body in wl.bodies:
                work.put(body)
            accepted = [0] * connections
            errors: list[str] = []

            def worker(k: int) -> None:
                while True:
                    try:
                        body = work.get_nowait()
                    except queue.Empty:
                        return
                    r = clients[k].post("/v1/events", content=body)
                    if r.status_code >= 300:
                        errors.append(f"HTTP {r.status_code}: {r.text[:500]}")
                        return
                    accepted[k] += r.json()["accepted"]

            threads = [threading.Thread(target=worker, args=(k,)) for k in range(connections)]
            gc.collect()
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - t0
        finally:
            for c in clients:
                c.close()
    finally:
        server.stop()
    if errors:
        raise RuntimeError(errors[0])
    assert sum(accepted) == wl.n_events, (sum(accepted), wl.n_events)
    return Run(elapsed, path)


# -- reporting ------------------------------------------------------------------------------


@dataclass
class Figure:
    workload: Workload
    key: str
    label: str
    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def events_per_s(self) -> float:
        return self.workload.n_events / self.median

    @property
    def samples_per_s(self) -> float:
        return self.workload.n_samples / self.median

    @property
    def rows_per_s(self) -> float:
        return len_rows(self.workload) / self.median


def len_rows(wl: Workload) -> int:
    return sum(len(r) for r in wl.raw_rows)


def fmt_rate(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}"


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def profile(workloads: Sequence[Workload], key: str, top: int) -> int:
    """Run path (b) or (b') once per workload under cProfile and print where the time goes."""
    root = Path(tempfile.mkdtemp(prefix="opsledger-bench-"))
    try:
        dbs = Databases(root)
        for wl in workloads:
            profiler = cProfile.Profile()
            run = run_ledger(dbs, wl, key == "b'", profiler)
            print(f"\n== {wl.name}: path ({key}) took {run.seconds:.3f} s under cProfile")
            for order in ("cumulative", "tottime"):
                stats = pstats.Stats(profiler, stream=sys.stdout)
                stats.strip_dirs().sort_stats(order).print_stats(top)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=50_000, help="non-metric events")
    parser.add_argument("--batch", type=int, default=1_000, help="events per append / request")
    parser.add_argument(
        "--sample-hours", type=float, default=24.0, help="simulated hours of node metrics"
    )
    parser.add_argument(
        "--metric-batch",
        type=int,
        default=4,
        help="metric events (8,000 samples each) per append / request",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--connections", type=int, default=2, help="concurrent HTTP clients")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the temporary databases")
    parser.add_argument(
        "--profile",
        choices=["b", "b'"],
        help="instead of timing, run path (b) or (b') once per workload under cProfile",
    )
    parser.add_argument("--profile-top", type=int, default=25, help="functions to list")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    print(
        f"opsledger ingest benchmark  python {platform.python_version()}  "
        f"sqlite {sqlite3.sqlite_version}  cpus {os.cpu_count()}  {platform.machine()}  "
        f"load average {load_average()}"
    )
    print("building workloads (untimed) ...", flush=True)
    workloads = [
        build_events_workload(args.events, args.batch, args.seed),
        build_samples_workload(args.sample_hours, args.metric_batch, args.seed),
    ]
    for wl in workloads:
        body_mb = sum(len(b) for b in wl.bodies) / 1e6
        print(
            f"  {wl.name}: {wl.n_events:,} events, {wl.n_samples:,} samples, "
            f"{len(wl.bodies)} requests, {body_mb:,.1f} MB JSON, {len_rows(wl):,} raw rows"
        )
    # The prepared inputs are millions of long-lived objects; keep them out of the collector's
    # way so that they do not slow down the code being timed.
    gc.collect()
    gc.freeze()
    if args.profile:
        return profile(workloads, args.profile, args.profile_top)

    root = Path(tempfile.mkdtemp(prefix="opsledger-bench-"))
    problems: list[str] = []
    figures: dict[tuple[str, str], Figure] = {}
    stored: dict[tuple[str, str], float] = {}
    paths: list[tuple[str, str, Callable[[Databases, Workload], Run]]] = [
        ("a", "(a)  raw sqlite3 executemany, 1 txn", lambda d, w: run_raw(d, w, True)),
        ("a'", "(a') raw executemany, 1 txn per batch", lambda d, w: run_raw(d, w, False)),
        ("b", "(b)  Ledger.append, pre-validated", lambda d, w: run_ledger(d, w, False)),
        ("b'", "(b') validate_events + Ledger.append", lambda d, w: run_ledger(d, w, True)),
        (
            "c",
            f"(c)  POST /v1/events, uvicorn, {args.connections} conn",
            lambda d, w: run_http(d, w, args.connections),
        ),
    ]
    try:
        dbs = Databases(root)
        print(f"empty migrated database: {dbs.empty_size:,} bytes; runs in {root}")
        for rep in range(args.repeat):
            for wl in workloads:
                strict: dict[str, str] = {}
                loose: dict[str, str] = {}
                for key, label, fn in paths:
                    fig = figures.setdefault((wl.name, key), Figure(wl, key, label))
                    run = fn(dbs, wl)
                    fig.times.append(run.seconds)
                    print(
                        f"  run {rep + 1}/{args.repeat}  {wl.name:<8} {label:<42} "
                        f"{run.seconds:8.3f} s",
                        flush=True,
                    )
                    if rep == 0:
                        stored[(wl.name, key)] = compact(run.path) - dbs.empty_size
                        if wl.raw_setup is None or key not in ("a", "a'"):
                            loose[key] = content_digest(run.path, with_positions=False)
                            if key != "c" or args.connections == 1:
                                strict[key] = content_digest(run.path, with_positions=True)
                    Databases.drop(run.path)
                if rep == 0:
                    # Every path must store the same rows (recorded_at aside). Concurrent HTTP
                    # batches race for positions, so (c) is compared without positions and
                    # stream versions unless it ran on one connection.
                    same = len(set(strict.values())) == 1 and len(set(loose.values())) == 1
                    if not same:
                        problems.append(f"{wl.name}: paths stored different rows")
                    print(
                        f"  {wl.name}: identical stored rows in {', '.join(loose)}: "
                        f"{'yes' if same else 'NO'}",
                        flush=True,
                    )
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    report(workloads, figures, stored, args)
    print(
        f"\ntotal wall time {time.perf_counter() - started:.1f} s; "
        f"load average at the end {load_average()}"
    )
    for p in problems:
        print(f"PROBLEM: {p}")
    return 1 if problems else 0


def report(
    workloads: Sequence[Workload],
    figures: dict[tuple[str, str], Figure],
    stored: dict[tuple[str, str], float],
    args: argparse.Namespace,
) -> None:
    print(f"\nresults (median of {args.repeat} runs; fresh migrated SQLite file per run)")
    head = (
        f"{'workload':<8}  {'path':<42} {'median s':>9} {'events/s':>11} "
        f"{'samples/s':>12} {'rows/s':>11}"
    )
    print(head)
    print("-" * len(head))
    for (_name, key), fig in figures.items():
        wl = fig.workload
        raw = key in ("a", "a'")
        print(
            f"{wl.name:<8}  {fig.label:<42} {fig.median:9.3f} {fmt_rate(fig.events_per_s):>11} "
            f"{fmt_rate(fig.samples_per_s if wl.n_samples else None):>12} "
            f"{fmt_rate(fig.rows_per_s if raw else None):>11}"
        )

    print("\ntargets")
    checks: list[tuple[str, str, str, bool]] = []
    for wl in workloads:
        a, b, c = (figures[(wl.name, k)] for k in ("a", "b", "c"))
        unit = "samples/s" if wl.n_samples else "events/s"
        rate = (lambda f: f.samples_per_s) if wl.n_samples else (lambda f: f.events_per_s)
        ba = rate(b) / rate(a)
        cb = rate(c) / rate(b)
        checks.append(
            (
                f"{wl.name}: (b)/(a) in {unit}",
                f"{ba:.3f}",
                f">= {TARGET_B_OVER_A}",
                ba >= TARGET_B_OVER_A,
            )
        )
        checks.append(
            (
                f"{wl.name}: (c)/(b) in {unit}",
                f"{cb:.3f}",
                f">= {TARGET_C_OVER_B}",
                cb >= TARGET_C_OVER_B,
            )
        )
    sw = next(w for w in workloads if w.name == "samples")
    b_rate = figures[("samples", "b")].samples_per_s
    checks.append(
        (
            "samples: (b) in-process samples/s",
            fmt_rate(b_rate),
            f">= {TARGET_SAMPLES_PER_S:,}",
            b_rate >= TARGET_SAMPLES_PER_S,
        )
    )
    bps = stored[("samples", "b")] / sw.n_samples
    checks.append(
        (
            "samples: stored bytes per sample (b)",
            f"{bps:.2f}",
            f"<= {TARGET_BYTES_PER_SAMPLE:g}",
            bps <= TARGET_BYTES_PER_SAMPLE,
        )
    )
    for name, measured, goal, ok in checks:
        print(f"  {name:<40} {measured:>12}  {goal:<12} {verdict(ok)}")

    naive = stored[("samples", "a")] / sw.n_samples
    month = NODES * len(NODE_METRICS) * (86_400 // STEP_S) * 30
    print("\nstorage (file size after checkpoint + VACUUM, minus an empty migrated database)")
    print(f"  opsledger samples/v1 blobs (b):        {bps:6.2f} B/sample")
    print(f"  naive samples(series_id, ts, value):   {naive:6.2f} B/sample (no index)")
    ev_b = stored[("events", "b")] / next(w for w in workloads if w.name == "events").n_events
    print(f"  events workload (b):                   {ev_b:6.1f} B/event (row + 4 indexes)")
    print(
        f"  a 30-day month of this cluster ({month / 1e6:.1f} M samples): "
        f"{month * bps / 1e6:,.0f} MB as samples/v1, {month * naive / 1e6:,.0f} MB naive"
    )


if __name__ == "__main__":
    sys.exit(main())
