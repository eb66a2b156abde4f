"""Load and soak benchmark: `opsledger serve` under mixed ingest, reads, SQL and webhooks.

What it runs, per backend (SQLite, PostgreSQL or both, one after the other): a temporary
OPSLEDGER_HOME, `opsledger db upgrade`, `opsledger demo` (a month of history, so that reads
have data), a write, a read and a query key made with `opsledger keys create`, then the real
server, `opsledger serve`, on a free 127.0.0.1 port in a subprocess. For PostgreSQL the
script initdb's and starts its own PostgreSQL 15 on 127.0.0.1 (as tests/support/pg.py does), or uses
`--pg-url`, on which it creates and later drops a database of its own. Then, for
`--duration` seconds, from threads of this process, each with its own keep-alive
`httpx.Client` (closed loop: a client sends its next request when the previous one answers):

- ingest clients (`--ingest-clients`, 8): `POST /v1/events` batches, each client one cluster
  (`load-<k>`, source `opsledger-load/ingest-<k>`): metric scrapes (nodes x 4 node metrics,
  namespaces x 5, PVCs x 2, at a new timestamp each time), small events (pod status,
  Kubernetes Warning events, node status, the lifecycle of new incidents), and about 10 %
  re-deliveries: an earlier batch re-sent byte for byte, a new batch holding an exact copy of
  an earlier event, or a new batch holding one of its own events twice. Each answer's
  `accepted` / `duplicates` is checked against what the batch holds;
- readers (`--readers`, 8) cycling through capacity trends (cluster, node, namespace scope,
  1h and 1d steps), headroom, storage forecasts (all PVCs, one namespace), incident metrics,
  the incident list, an incident's timeline and `GET /v1/projections`;
- SQL clients (`--sql-clients`, 2): `POST /v1/query` with post-mortem style SELECTs over the
  read model (incidents, inc_events, cap_rollup, pvc_samples, k8s_events, pod_status);
- webhook clients (`--webhook-clients`, 1): Alertmanager deliveries (firing, then resolved)
  and signed PagerDuty V3 deliveries (triggered, acknowledged, resolved), built from the
  real payloads in ../shared/data/fixtures when present, with fresh fingerprints and ids,
  and about 15 % exact re-deliveries.

Every loop stops at the deadline, every request has a timeout (`--timeout`, 30 s) and the
requests of a run are capped (`--max-requests`); the server, its process group and the
PostgreSQL the script started are stopped in `finally`. The script samples the server's
RSS (VmRSS of the main process, and of its whole process tree, which holds the query worker
processes) every `--rss-interval` seconds; once every client has stopped it reads the
ledger's (source, id) pairs of the load's sources with SQLAlchemy and compares them with the
distinct events the clients were answered 200 for.

Printed per backend: per route the count, throughput, p50 / p95 / p99 / max latency of the
answered requests and the statuses other than 2xx; ingest totals; RSS at the start (after
a warm-up pass over every read route), the middle and the end; the first anomalies and the
distinct error and warning runs of the server log (kept in the temporary home); and the
targets, each PASS or FAIL:
- responses >= 500: 0;
- the server's RSS at the end within 20 % of the middle (end / middle <= 1.2), each the
  median of the RSS samples over a minute (a single sample holds whatever the requests in
  flight hold at that instant: a forecast of every PVC holds a month of samples for a
  second); the single samples and the maximum are printed beside them;
- p99 of the readers' requests sent while ingest runs < 1 s (a timed-out request counts
  as the time it waited; the SQL clients' p99 is printed beside it);
- the ledger holds exactly the distinct events sent (no missing, extra or doubled event,
  nothing from other sources since the start, and `accepted` summed over the answers equal
  to the number of distinct events);
then checks: no timeouts or transport errors, no 4xx, every ingest and webhook answer
counting `accepted` / `duplicates` as the batch predicts, no error in the server log, no
error in the script. The exit status is 1 when any target or check fails.

Run from the repository root (the issue's soak: 10 minutes per backend, about 25 minutes in
all), on a quiet machine, since the clients share its cores with the server:
`.venv/bin/python benchmarks/bench_load.py --duration 600`
`.venv/bin/python benchmarks/bench_load.py --backend sqlite --duration 90 --json /tmp/load.json`
`--server-env NAME=VALUE` passes a setting to the CLI and the server (e.g. to compare with
OPENBLAS_NUM_THREADS=1). Loopback only: the server, PostgreSQL and every client use 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import hmac
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import psycopg
from psycopg import sql
from sqlalchemy import bindparam, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.sql.expression import BindParameter

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO.parent / "shared" / "data" / "fixtures"
PG_BINDIR = Path("/usr/lib/postgresql/15/bin")
HOST = "127.0.0.1"
BATCH = "application/cloudevents-batch+json"
PD_SECRET = "load-benchmark-pagerduty-signing-secret"
AM_RECEIVER = "opsledger-load"
AM_SOURCE = f"alertmanager/{AM_RECEIVER}"
PD_SOURCE = "pagerduty"
DEMO_CLUSTER = "enhanced-eks-cluster"

TARGET_5XX = 0
TARGET_RSS_RATIO = 1.2
#: Seconds of RSS samples whose median stands for the start, the middle and the end.
RSS_WINDOW_S = 60.0
TARGET_READ_P99_S = 1.0

Key = tuple[str, str]  # (source, id)


# -- small helpers --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def rfc3339(t: float) -> str:
    """Unix seconds as RFC 3339 UTC with microseconds."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def compact_utc(t_us: int) -> str:
    """`20200206T001758.432911Z`, as the Alertmanager receiver names incidents."""
    d = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=t_us)
    head = d.strftime("%Y%m%dT%H%M%S")
    return f"{head}.{d.microsecond:06d}Z" if d.microsecond else f"{head}Z"


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def opsledger_cli() -> list[str]:
    """The `opsledger` entry point of the interpreter running this script."""
    beside = Path(sys.executable).with_name("opsledger")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("opsledger")
    if found is None:
        raise SystemExit("opsledger is not installed: run `make install` first")
    return [found]


def clean_env(home: Path, database_url: str | None) -> dict[str, str]:
    """This process's environment without OPSLEDGER_* settings, then the benchmark's."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("OPSLEDGER_")}
    env["OPSLEDGER_HOME"] = str(home)
    if database_url is not None:
        env["OPSLEDGER_DATABASE_URL"] = database_url
    env["OPSLEDGER_PAGERDUTY_WEBHOOK_SECRET"] = PD_SECRET
    return env


# -- PostgreSQL -----------------------------------------------------------------------------


class Postgres:
    """A throwaway PostgreSQL 15 on 127.0.0.1 (initdb, pg_ctl), or a database on `--pg-url`."""

    def __init__(self, existing_url: str | None) -> None:
        self.existing = make_url(existing_url) if existing_url else None
        self.root: Path | None = None
        self.port = 0
        self.dbname = f"opsledger_load_{os.getpid()}_{int(time.time()) % 100000}"
        self.version = ""
        self._as_root = os.geteuid() == 0

    def _run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        # initdb and postgres refuse to run as root: root hands them to the postgres user.
        cmd = ["runuser", "-u", "postgres", "--", *argv] if self._as_root else list(argv)
        return subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)

    def start(self) -> str:
        """Start (or reach) the server, create the benchmark's database; return its URL."""
        if self.existing is None:
            self._start_local()
        with psycopg.connect(self._admin_dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.dbname)))
            row = conn.execute("SHOW server_version").fetchone()
            self.version = str(row[0]) if row else "?"
        return self._url(self.dbname, "postgresql+psycopg")

    def _url(self, database: str, driver: str) -> str:
        if self.existing is not None:
            url = self.existing.set(drivername=driver, database=database)
        else:
            url = make_url(f"{driver}://postgres@{HOST}:{self.port}/{database}")
        return url.render_as_string(hide_password=False)

    def _admin_dsn(self) -> str:
        base = (self.existing.database if self.existing else None) or "postgres"
        return self._url(base, "postgresql")

    def _start_local(self) -> None:
        bindir = Path(os.environ.get("OPSLEDGER_TEST_PG_BINDIR") or PG_BINDIR)
        if not (bindir / "initdb").is_file():
            raise SystemExit(
                f"PostgreSQL 15 server binaries not found in {bindir}: install postgresql-15, "
                "or give --pg-url postgresql+psycopg://USER@127.0.0.1:PORT/postgres"
            )
        self.root = Path(tempfile.mkdtemp(prefix="opsledger-load-pg-", dir="/tmp"))
        data, sockets, log = self.root / "data", self.root / "sock", self.root / "server.log"
        self.root.chmod(0o755)
        sockets.mkdir(mode=0o755)
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(sockets, "postgres", "postgres")
        initdb = self._run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{initdb.stdout}\n{initdb.stderr}")
        last = ""
        for _ in range(5):  # another process may take the free port before the server binds it
            self.port = free_port()
            options = (
                f"-p {self.port} -k {sockets} -c listen_addresses={HOST} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=200"
            )
            started = self._run(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(log),
                    "-w",
                    "-t",
                    "60",
                    "start",
                    "-o",
                    options,
                ]
            )
            if started.returncode == 0:
                return
            last = f"{started.stdout}\n{started.stderr}"
        raise RuntimeError(f"pg_ctl start failed:\n{last}")

    def stop(self) -> None:
        """Drop the database on an existing server; stop and delete a server started here."""
        try:
            if self.existing is not None:
                with psycopg.connect(self._admin_dsn(), autocommit=True) as conn:
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(self.dbname)
                        )
                    )
        finally:
            if self.root is not None:
                data = self.root / "data"
                if (data / "postmaster.pid").exists():
                    bindir = Path(os.environ.get("OPSLEDGER_TEST_PG_BINDIR") or PG_BINDIR)
                    self._run(
                        [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
                    )
                shutil.rmtree(self.root, ignore_errors=True)


# -- the server under test --------------------------------------------------------------------


class Server:
    """A temporary home with the demo loaded, keys, and `opsledger serve` in a subprocess."""

    def __init__(self, home: Path, database_url: str | None, extra_env: dict[str, str]) -> None:
        self.home = home
        self.ledger_url = database_url or f"sqlite:///{home / 'ledger.db'}"
        self.env = clean_env(home, database_url) | extra_env
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.log_path = home / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.tokens: dict[str, str] = {}

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [*opsledger_cli(), *args], env=self.env, cwd=REPO, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"opsledger {' '.join(args)} failed:\n{done.stderr}")
        return done.stdout.strip()

    def prepare(self) -> str:
        """`db upgrade`, `demo`, and one key per scope the clients use."""
        self.cli("db", "upgrade")
        t0 = time.perf_counter()
        demo = self.cli("demo")
        demo_s = time.perf_counter() - t0
        for scope in ("write", "read", "query"):
            self.tokens[scope] = self.cli(
                "keys", "create", "--name", f"load-{scope}", "--scope", scope
            )
        return f"{demo} ({demo_s:.1f} s)"

    def start(self) -> None:
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                [*opsledger_cli(), "serve", "--host", HOST, "--port", str(self.port)],
                env=self.env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the query workers go with it
            )
        finally:
            log.close()

    def wait_ready(self, timeout: float) -> float:
        """Wait for /readyz, then for every projection to catch up; return the seconds taken."""
        t0 = time.perf_counter()
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {self.tokens['read']}"}
        with httpx.Client(base_url=self.base, timeout=5.0, headers=headers) as c:
            while time.monotonic() < deadline:
                if self.proc is None or self.proc.poll() is not None:
                    raise RuntimeError(f"the server exited early; log tail:\n{self.log_tail()}")
                try:
                    if c.get("/readyz").status_code == 200:
                        lags = [p["lag"] for p in c.get("/v1/projections").json()["projections"]]
                        if lags and max(lags) == 0:
                            return time.perf_counter() - t0
                except (httpx.TransportError, KeyError, ValueError):
                    pass
                time.sleep(0.2)
        raise RuntimeError(f"the server was not ready after {timeout:.0f} s")

    def stop(self) -> None:
        """SIGTERM (uvicorn's graceful stop), then SIGKILL of the whole process group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # query workers left behind, if any

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]


@dataclass
class LogProblems:
    """Runs of server log lines other than uvicorn's INFO lines, split into errors and warnings.

    opsledger's loggers (and APScheduler's) have no handler under `opsledger serve`, so their
    warnings and errors reach stderr without a level prefix: every line that is not an INFO
    line belongs to a run. A run with a traceback, an ERROR or CRITICAL line, or the words
    "failed" or "exception" is an error; any other run is a warning. `errors` and `warnings`
    hold the distinct runs (alike but for digits), most frequent first, with their counts.
    """

    error_count: int = 0
    warning_count: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, log: str, limit: int = 8) -> LogProblems:
        runs: list[list[str]] = []
        current: list[str] = []
        for line in log.splitlines():
            if line.startswith(("INFO:", "serving http://")) or (
                current and line == current[0]  # the same message again: a run of its own
            ):
                if current:
                    runs.append(current)
                current = [] if line.startswith(("INFO:", "serving http://")) else [line]
            else:
                current.append(line)
        if current:
            runs.append(current)
        counts: dict[bool, Counter[str]] = {True: Counter(), False: Counter()}
        first: dict[str, str] = {}
        for run in runs:
            body = "\n".join(run)
            is_error = bool(
                re.search(r"Traceback|^(ERROR|CRITICAL)|failed|exception", body, re.I | re.M)
            )
            shape = re.sub(r"\d+", "N", run[-1].strip())
            counts[is_error][shape] += 1
            first.setdefault(shape, body)
        return cls(
            error_count=sum(counts[True].values()),
            warning_count=sum(counts[False].values()),
            errors=[f"[{n}x] {first[k]}" for k, n in counts[True].most_common(limit)],
            warnings=[f"[{n}x] {first[k]}" for k, n in counts[False].most_common(limit)],
        )


def log_tail(log: str, lines: int = 25) -> str:
    """The last lines of a server log without its 200 OK access lines, repeats collapsed."""
    out: list[str] = []
    shapes: list[str] = []
    repeats: list[int] = []
    for line in log.splitlines():
        if line.endswith(" 200 OK"):
            continue
        shape = re.sub(r"\d+", "N", line)
        if shapes and shapes[-1] == shape:
            repeats[-1] += 1
            continue
        out.append(line)
        shapes.append(shape)
        repeats.append(1)
    tail = [f"{ln}  [x{n}]" if n > 1 else ln for ln, n in zip(out, repeats, strict=True)]
    return "\n".join(tail[-lines:])


# -- recording --------------------------------------------------------------------------------


@dataclass(slots=True)
class Result:
    route: str
    kind: str  # ingest, read, sql, webhook
    status: str  # "200", "503", "timeout", "ConnectError", ...
    start: float  # perf_counter
    seconds: float


@dataclass
class Run:
    """What every client thread shares: the deadline, the request budget and the results."""

    base: str
    deadline: float  # perf_counter
    max_requests: int
    timeout: float
    stop: threading.Event = field(default_factory=threading.Event)
    results: list[Result] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)
    _sent: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def going(self) -> bool:
        return not self.stop.is_set() and time.perf_counter() < self.deadline

    def _take(self) -> bool:
        with self._lock:
            if self._sent >= self.max_requests:
                self.stop.set()
                return False
            self._sent += 1
            return True

    def anomaly(self, text: str) -> None:
        with self._lock:
            if len(self.anomalies) < 1000:
                self.anomalies.append(text)

    def call(
        self, client: httpx.Client, route: str, kind: str, method: str, url: str, **kw: Any
    ) -> httpx.Response | None:
        """One timed request; None when it got no HTTP answer (or the budget is spent)."""
        if not self._take():
            return None
        t0 = time.perf_counter()
        try:
            r = client.request(method, url, **kw)
        except httpx.TimeoutException:
            self.results.append(Result(route, kind, "timeout", t0, time.perf_counter() - t0))
            return None
        except httpx.TransportError as e:
            name = type(e).__name__
            self.results.append(Result(route, kind, name, t0, time.perf_counter() - t0))
            return None
        self.results.append(Result(route, kind, str(r.status_code), t0, time.perf_counter() - t0))
        if r.status_code >= 300:
            self.anomaly(f"{route}: HTTP {r.status_code} {method} {url}: {r.text[:300]}")
        return r


class Client(threading.Thread):
    """A client thread with its own keep-alive connection; subclasses implement `step`."""

    kind = ""

    def __init__(self, run: Run, token: str, index: int, seed: int) -> None:
        super().__init__(name=f"{type(self).__name__}-{index}", daemon=True)
        self.run_ = run
        self.index = index
        self.rng = random.Random(seed * 1000 + index)
        self.http = httpx.Client(
            base_url=run.base,
            headers={"Authorization": f"Bearer {token}"},
            timeout=run.timeout,
        )
        self.error: str | None = None

    def call(self, route: str, method: str, url: str, **kw: Any) -> httpx.Response | None:
        return self.run_.call(self.http, route, self.kind, method, url, **kw)

    def step(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        try:
            while self.run_.going():
                self.step()
        except Exception as e:  # a bug of the script, not of the server: stop the run
            self.error = f"{self.name}: {type(e).__name__}: {e}"
            self.run_.stop.set()
        finally:
            self.http.close()


# -- ingest -----------------------------------------------------------------------------------

POOLS = ("general-purpose", "memory-optimized", "compute")
ZONES = ("us-gov-west-1a", "us-gov-west-1b", "us-gov-west-1c")
NAMESPACES = ("payments", "checkout", "search", "catalog", "batch")
REASONS = ("BackOff", "FailedScheduling", "Unhealthy", "FailedMount", "OOMKilling")


@dataclass
class Delivery:
    """Tallies of what came back 200: distinct (source, id) sent, accepted and duplicates."""

    sent: set[Key] = field(default_factory=set)
    uncertain: set[Key] = field(default_factory=set)  # no answer, or >= 500: written or not
    accepted: int = 0
    duplicates: int = 0
    samples: int = 0


class Ingest(Client):
    """One cluster's collector: metric scrapes, small events and re-deliveries."""

    kind = "ingest"

    def __init__(self, run: Run, token: str, index: int, seed: int, args: Any) -> None:
        super().__init__(run, token, index, seed)
        self.source = f"opsledger-load/ingest-{index}"
        self.cluster = f"load-{index}"
        self.redeliver = args.redeliver
        self.scrapes = args.scrapes
        self.nodes = [
            {
                "node": f"ip-10-{index}-{i // 200}-{i % 200}.load.internal",
                "nodepool": POOLS[i % len(POOLS)],
                "zone": ZONES[i % len(ZONES)],
            }
            for i in range(args.nodes)
        ]
        self.pvcs = [
            {"namespace": NAMESPACES[i % len(NAMESPACES)], "persistentvolumeclaim": f"data-{i}"}
            for i in range(args.pvcs)
        ]
        self.base_use = [self.rng.uniform(0.3, 0.7) for _ in self.nodes]
        self.fill = [self.rng.uniform(0.3, 0.8) for _ in self.pvcs]
        self.seq = 0
        self.last_ts = 0.0
        self.restarts: dict[str, int] = {}
        self.incidents: dict[str, str] = {}  # incident id -> last step recorded
        self.recent_bodies: deque[tuple[bytes, int]] = deque(maxlen=32)
        self.recent_events: deque[dict[str, Any]] = deque(maxlen=64)
        self.tally = Delivery()

    def _id(self, what: str) -> str:
        self.seq += 1
        return f"{what}-{self.index}-{self.seq}"

    def _now(self) -> float:
        """Wall-clock seconds, strictly increasing per client (a new timestamp every time)."""
        self.last_ts = max(time.time(), self.last_ts + 0.001)
        return self.last_ts

    def _event(
        self, kind: str, data: dict[str, Any], eid: str, t: float, cluster: bool = True
    ) -> dict[str, Any]:
        ev: dict[str, Any] = {
            "specversion": "1.0",
            "id": eid,
            "source": self.source,
            "type": kind,
            "time": rfc3339(t),
            "data": data,
        }
        if cluster:
            ev["cluster"] = self.cluster
        return ev

    def scrape(self) -> dict[str, Any]:
        """One samples event: every node, namespace and PVC at one new timestamp."""
        t = self._now()
        ts = round(t, 6)
        swing = 0.1 * float(np.sin(t / 600.0))
        samples: list[dict[str, Any]] = []

        def add(name: str, labels: dict[str, str], value: float) -> None:
            samples.append({"name": name, "labels": labels, "ts": ts, "value": value})

        total_cpu = 0.0
        for labels, base in zip(self.nodes, self.base_use, strict=True):
            cpu = 16.0 if labels["nodepool"] == "compute" else 8.0
            mem = cpu * 4 * 2**30
            use = min(0.98, max(0.02, base + swing + self.rng.gauss(0, 0.02)))
            total_cpu += cpu
            add("node_cpu_allocatable_cores", labels, cpu)
            add("node_cpu_usage_cores", labels, round(cpu * use, 6))
            add("node_memory_allocatable_bytes", labels, mem)
            add("node_memory_usage_bytes", labels, float(int(mem * use) // 1024 * 1024))
        for j, ns in enumerate(NAMESPACES):
            labels = {"namespace": ns}
            share = total_cpu * (0.05 + 0.03 * j)
            add("namespace_cpu_usage_cores", labels, round(share * (0.6 + swing), 6))
            add("namespace_cpu_requests_cores", labels, share)
            add("namespace_memory_usage_bytes", labels, float(int(share * 4 * 2**30 * 0.6)))
            add("namespace_memory_requests_bytes", labels, share * 4 * 2**30)
            add("namespace_pod_count", labels, 10 + j)
        for i, labels in enumerate(self.pvcs):
            cap = 100 * 2**30
            self.fill[i] = min(0.99, self.fill[i] + self.rng.uniform(0, 2e-5))
            add("pvc_capacity_bytes", labels, cap)
            add("pvc_used_bytes", labels, float(int(cap * self.fill[i])))
        return self._event("opsledger.metric.samples", {"samples": samples}, self._id("scrape"), t)

    def small_events(self, n: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """Pod and node status, Kubernetes events and incident steps; the incident steps."""
        out: list[dict[str, Any]] = []
        steps: dict[str, str] = {}
        for _ in range(n):
            t = self._now()
            r = self.rng.random()
            ns = self.rng.choice(NAMESPACES)
            pod = f"{ns}-api-{self.rng.randrange(40):02d}"
            node = self.rng.choice(self.nodes)["node"]
            if r < 0.45:
                restarts = self.restarts.get(pod, 0) + self.rng.choice((0, 0, 1))
                self.restarts[pod] = restarts
                reason = "CrashLoopBackOff" if restarts and self.rng.random() < 0.3 else None
                data: dict[str, Any] = {
                    "namespace": ns,
                    "pod": pod,
                    "phase": "Running",
                    "restarts": restarts,
                    "node": node,
                    "owner": f"ReplicaSet/{ns}-api",
                }
                if reason:
                    data["reason"] = reason
                out.append(self._event("opsledger.k8s.pod.status", data, self._id("pod"), t))
            elif r < 0.70:
                eid = self._id("k8s")
                data = {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {"name": f"{pod}.{eid}", "namespace": ns},
                    "involvedObject": {"kind": "Pod", "name": pod, "namespace": ns},
                    "reason": self.rng.choice(REASONS),
                    "message": f"load event {eid} for pod {pod}",
                    "type": "Warning",
                    "count": self.rng.randrange(1, 20),
                }
                out.append(self._event("opsledger.k8s.event", data, eid, t))
            elif r < 0.78:
                labels = self.rng.choice(self.nodes)
                data = {
                    "node": labels["node"],
                    "ready": self.rng.random() < 0.9,
                    "nodepool": labels["nodepool"],
                    "zone": labels["zone"],
                    "allocatable": {"cpu_cores": 7.91, "memory_bytes": 31577120768, "pods": 58},
                }
                out.append(self._event("opsledger.k8s.node.status", data, self._id("node"), t))
            else:
                ev = self._incident_step(t, steps)
                if ev is not None:
                    out.append(ev)
        return out, steps

    def _incident_step(self, t: float, steps: dict[str, str]) -> dict[str, Any] | None:
        """Open a new incident, or move one of this client's open incidents on by one step."""
        free = [i for i, s in self.incidents.items() if i not in steps and s != "resolved"]
        if not free or (len(free) < 20 and self.rng.random() < 0.4):
            self.seq += 1
            inc = f"LOAD-{self.index}-{self.seq}"
            steps[inc] = "opened"
            data = {
                "incident_id": inc,
                "title": f"load incident {inc}",
                "severity": self.rng.choice(("P0", "P1", "P2", "P3")),
                "namespace": self.rng.choice(NAMESPACES),
            }
            return self._event("opsledger.incident.opened", data, f"{inc}-opened", t)
        inc = self.rng.choice(free)
        nxt = {"opened": "acknowledged", "acknowledged": "mitigated", "mitigated": "resolved"}
        step = nxt[self.incidents[inc]]
        steps[inc] = step
        data = {"incident_id": inc, "by": "load.oncall"}
        return self._event(f"opsledger.incident.{step}", data, f"{inc}-{step}", t, False)

    def step(self) -> None:
        r = self.rng.random()
        if r < self.redeliver and self.recent_events:
            self.redelivery()
        elif r < self.redeliver + (1 - self.redeliver) / 2:
            batch = [self.scrape() for _ in range(self.scrapes)]
            self.post("POST /v1/events metrics", batch, len(batch), 0, {})
        else:
            batch, steps = self.small_events(self.rng.randrange(5, 21))
            self.post("POST /v1/events small", batch, len(batch), 0, steps)

    def redelivery(self) -> None:
        """An earlier batch again, or a new batch with an earlier or repeated event in it."""
        how = self.rng.random()
        if how < 0.4 and self.recent_bodies:
            body, n = self.rng.choice(self.recent_bodies)
            self.send("POST /v1/events redelivery", body, [], 0, n, n, {})
            return
        batch, steps = self.small_events(self.rng.randrange(4, 12))
        new = len(batch)
        if how < 0.7:
            again = self.rng.choice(self.recent_events)  # recorded earlier, sent again as is
        else:
            again = batch[self.rng.randrange(len(batch))]  # twice in this very batch
        at = self.rng.randrange(len(batch) + 1)
        batch = [*batch[:at], again, *batch[at:]]
        self.post("POST /v1/events redelivery", batch, new, 1, steps)

    def post(
        self, route: str, batch: list[dict[str, Any]], new: int, dups: int, steps: dict[str, str]
    ) -> None:
        self.send(route, orjson.dumps(batch), batch, new, dups, len(batch), steps)

    def send(
        self,
        route: str,
        body: bytes,
        batch: list[dict[str, Any]],
        new: int,
        dups: int,
        n: int,
        steps: dict[str, str],
    ) -> None:
        keys = {(e["source"], e["id"]) for e in batch}
        r = self.call(route, "POST", "/v1/events", content=body, headers={"Content-Type": BATCH})
        if r is None or r.status_code >= 500:
            self.tally.uncertain |= keys
            for inc in steps:  # abandon them: their next step could conflict
                self.incidents[inc] = "resolved"
            return
        if r.status_code != 200:
            for inc in steps:
                self.incidents[inc] = "resolved"
            return
        answer = r.json()
        if answer.get("accepted") != new or answer.get("duplicates") != dups:
            self.run_.anomaly(
                f"{route} {self.source}: expected accepted={new} duplicates={dups}, got {answer}"
            )
        self.tally.accepted += int(answer.get("accepted") or 0)
        self.tally.duplicates += int(answer.get("duplicates") or 0)
        self.tally.sent |= keys
        self.tally.samples += sum(
            len(e["data"]["samples"]) for e in batch if e["type"] == "opsledger.metric.samples"
        )
        self.incidents.update(steps)
        if batch:
            self.recent_bodies.append((body, n))
            self.recent_events.extend(self.rng.sample(batch, min(3, len(batch))))


# -- readers ----------------------------------------------------------------------------------


def _z(d: datetime) -> str:
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


class Reader(Client):
    """The read routes in turn, each reader starting at another one."""

    kind = "read"

    def __init__(self, run: Run, token: str, index: int, seed: int) -> None:
        super().__init__(run, token, index, seed)
        self.incident_ids: list[str] = []
        self.turn = index * 3

    def routes(self) -> list[tuple[str, str, dict[str, str]]]:
        now = datetime.now(UTC).replace(microsecond=0)
        day, six_h = _z(now - timedelta(days=1)), _z(now - timedelta(hours=6))
        trends = "/v1/capacity/trends"
        demo = {"limit": "100", "cluster": DEMO_CLUSTER}
        return [
            (
                "GET trends cluster 1h",
                trends,
                {"metric": "cpu", "scope": "cluster", "step": "1h", "from": day},
            ),
            ("GET trends cluster 1d", trends, {"metric": "memory", "scope": "cluster"}),
            (
                "GET trends node 1h",
                trends,
                {
                    "metric": "cpu",
                    "scope": "node",
                    "step": "1h",
                    "from": six_h,
                    "cluster": DEMO_CLUSTER,
                },
            ),
            (
                "GET trends node 1d",
                trends,
                {"metric": "memory", "scope": "node", "step": "1d", "cluster": DEMO_CLUSTER},
            ),
            (
                "GET trends namespace 1h",
                trends,
                {"metric": "memory", "scope": "namespace", "step": "1h", "from": day},
            ),
            ("GET headroom", "/v1/capacity/headroom", {}),
            ("GET storage forecast all", "/v1/storage/forecast", {}),
            (
                "GET storage forecast namespace",
                "/v1/storage/forecast",
                {"namespace": self.rng.choice(("search", "payments", "orders", "monitoring"))},
            ),
            ("GET incidents metrics", "/v1/incidents/metrics", {"group_by": "severity"}),
            ("GET incidents", "/v1/incidents", self.rng.choice(({"limit": "100"}, demo))),
            ("GET incident timeline", "", {}),
            ("GET projections", "/v1/projections", {}),
        ]

    def step(self) -> None:
        routes = self.routes()
        name, url, params = routes[self.turn % len(routes)]
        self.turn += 1
        if name == "GET incident timeline":
            if not self.incident_ids:
                name, url, params = "GET incidents", "/v1/incidents", {"limit": "100"}
            else:
                url = f"/v1/incidents/{self.rng.choice(self.incident_ids)}/timeline"
        r = self.call(name, "GET", url, params=params)
        if name == "GET incidents" and r is not None and r.status_code == 200:
            ids = [i["incident_id"] for i in r.json()["items"]]
            self.incident_ids = [*dict.fromkeys(ids + self.incident_ids)][:300]


class Sql(Client):
    """Post-mortem and capacity questions through `POST /v1/query`."""

    kind = "sql"

    def queries(self) -> list[tuple[str, str]]:
        since = _z(datetime.now(UTC) - timedelta(days=1)).replace("T", " ").rstrip("Z")
        return [
            (
                "SQL incidents by severity",
                "SELECT severity_max AS severity, count(*) AS incidents, "
                "round(median(mttr_s) / 3600, 2) AS mttr_median_h, "
                "count(*) FILTER (acknowledged_at > response_due_at) AS late_acks "
                "FROM incidents GROUP BY ALL ORDER BY severity",
            ),
            (
                "SQL latest incident milestones",
                "SELECT make_timestamp(t) AS at, kind, data->>'by' AS by FROM inc_events "
                "WHERE incident_id = (SELECT incident_id FROM incidents ORDER BY opened_at DESC "
                "LIMIT 1) ORDER BY t",
            ),
            (
                "SQL hottest nodes 1h",
                "SELECT cluster, node, max(utilization_p95) AS p95 FROM cap_rollup "
                "WHERE step = '1h' AND scope = 'node' AND resource = 'cpu' "
                f"AND t >= TIMESTAMP '{since}' GROUP BY ALL ORDER BY p95 DESC LIMIT 10",
            ),
            (
                "SQL fullest PVCs",
                "SELECT cluster, namespace, pvc, "
                "arg_max(value, ts) FILTER (metric = 'pvc_used_bytes') / "
                "arg_max(value, ts) FILTER (metric = 'pvc_capacity_bytes') AS used_ratio "
                "FROM pvc_samples GROUP BY ALL ORDER BY used_ratio DESC LIMIT 10",
            ),
            (
                "SQL warning reasons 24h",
                "SELECT cluster, reason, count(*) AS n FROM k8s_events "
                f"WHERE ts >= TIMESTAMP '{since}' GROUP BY ALL ORDER BY n DESC LIMIT 20",
            ),
            (
                "SQL pod restarts",
                "SELECT cluster, namespace, pod, max(restarts) AS restarts FROM pod_status "
                "GROUP BY ALL ORDER BY restarts DESC LIMIT 10",
            ),
        ]

    def step(self) -> None:
        qs = self.queries()
        name, query = qs[(self.index + self.rng.randrange(len(qs))) % len(qs)]
        self.call(name, "POST", "/v1/query", json={"query": query, "limit": 1000})


# -- webhooks ---------------------------------------------------------------------------------


def _fixture(rel: str, fallback: dict[str, Any]) -> dict[str, Any]:
    path = FIXTURES / rel
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
        return doc
    except (OSError, ValueError):
        return fallback


_AM_FALLBACK: dict[str, Any] = {
    "receiver": AM_RECEIVER,
    "status": "firing",
    "version": "4",
    "groupKey": "{}:{}",
    "externalURL": "http://alertmanager:9093",
    "groupLabels": {},
    "commonLabels": {},
    "commonAnnotations": {},
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "High CPU Temperature", "severity": "critical"},
            "annotations": {"summary": "High CPU core temperature"},
            "startsAt": "2020-02-06T00:17:58.432911368Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": "a1bc48475b20e73d",
        }
    ],
}


def _pd_fallback(kind: str) -> dict[str, Any]:
    return {
        "event": {
            "id": "01BZYIL05THJDFF2Y08X9SVMTU",
            "event_type": f"incident.{kind}",
            "resource_type": "incident",
            "occurred_at": "2021-06-04T13:35:29.781Z",
            "agent": {"id": "PJ0LVEB", "summary": "PIG 208", "type": "user_reference"},
            "data": {
                "id": "PFQZPSY",
                "type": "incident",
                "title": "Test Incident 3",
                "service": {"id": "PA2P440", "summary": "pig208", "type": "service_reference"},
                "priority": None,
                "urgency": "high",
            },
        }
    }


class Webhooks(Client):
    """Alertmanager and PagerDuty deliveries of new incidents, their progress, and repeats."""

    kind = "webhook"

    def __init__(self, run: Run, token: str, index: int, seed: int, pause: float) -> None:
        super().__init__(run, token, index, seed)
        self.pause = pause
        self.am = _fixture("alertmanager/zulip-alert.json", _AM_FALLBACK)
        self.am["receiver"] = AM_RECEIVER
        self.pd = {
            k: _fixture(f"pagerduty-v3/{k}_v3.json", _pd_fallback(k))
            for k in ("triggered", "acknowledged", "resolved")
        }
        self.firing: list[dict[str, Any]] = []  # alerts sent firing, not yet resolved
        self.paged: dict[str, str] = {}  # PagerDuty incident id -> last step sent
        self.recent: deque[tuple[str, bytes, dict[str, str], int]] = deque(maxlen=32)
        self.tally = Delivery()
        self.seq = 0

    def _hex(self, n: int) -> str:
        return "".join(self.rng.choice("0123456789abcdef") for _ in range(n))

    def step(self) -> None:
        r = self.rng.random()
        if r < 0.15 and self.recent:
            route, body, headers, n = self.rng.choice(self.recent)
            self.deliver(
                route.replace("new", "redelivery").replace("step", "redelivery"),
                body,
                headers,
                set(),
                0,
                n,
            )
        elif r < 0.40 or (r < 0.55 and not self.firing):
            self.alerts_firing()
        elif r < 0.55:
            self.alerts_resolved()
        elif r < 0.75 or not self.paged:
            self.page("triggered")
        else:
            self.page("")
        if self.pause:
            time.sleep(self.pause)

    def alerts_firing(self) -> None:
        template = self.am["alerts"][0]
        alerts = []
        for _ in range(self.rng.randrange(1, 3)):
            now = time.time()
            us = int(now * 1_000_000) - self.rng.randrange(60_000_000)
            alert = copy.deepcopy(template)
            alert["fingerprint"] = self._hex(16)
            alert["labels"] = {
                **template["labels"],
                "host": f"load-host-{self.rng.randrange(100)}",
                "severity": self.rng.choice(("critical", "warning", "info")),
                "cluster": "load-am",
                "namespace": self.rng.choice(NAMESPACES),
            }
            # nanoseconds, as Alertmanager sends them; the ledger keeps microseconds
            secs, frac = divmod(us, 1_000_000)
            stamp = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            alert["startsAt"] = f"{stamp}.{frac:06d}{self.rng.randrange(1000):03d}Z"
            alert["endsAt"] = "0001-01-01T00:00:00Z"
            alert["_us"] = us
            alerts.append(alert)
        self._post_am("POST /v1/webhooks/alertmanager new", alerts, "firing")

    def alerts_resolved(self) -> None:
        picked = [
            self.firing.pop(self.rng.randrange(len(self.firing)))
            for _ in range(min(len(self.firing), self.rng.randrange(1, 3)))
        ]
        for alert in picked:
            alert["status"] = "resolved"
            alert["endsAt"] = rfc3339(time.time())
        self._post_am("POST /v1/webhooks/alertmanager step", picked, "resolved")

    def _post_am(self, route: str, alerts: list[dict[str, Any]], status: str) -> None:
        doc = copy.deepcopy(self.am)
        doc["status"] = status
        doc["alerts"] = [{k: v for k, v in a.items() if k != "_us"} for a in alerts]
        body = orjson.dumps(doc)
        keys: set[Key] = set()
        for a in alerts:
            inc = f"am-{a['fingerprint']}-{compact_utc(a['_us'])}"
            keys.add((AM_SOURCE, f"{inc}/opened"))
            if status == "resolved":
                keys.add((AM_SOURCE, f"{inc}/resolved"))
        dups = len(alerts) if status == "resolved" else 0
        n = len(keys)
        answered = self.deliver(route, body, {"Content-Type": "application/json"}, keys, dups, n)
        if answered and status == "firing":
            self.firing.extend(alerts)
            del self.firing[:-200]

    def page(self, kind: str) -> None:
        if kind == "triggered":
            self.seq += 1
            pd_id = f"PLD{self.index}X{self.seq}"
        else:
            pd_id = self.rng.choice(list(self.paged))
            kind = {"triggered": "acknowledged", "acknowledged": "resolved"}[self.paged[pd_id]]
        doc = copy.deepcopy(self.pd[kind])
        ev = doc["event"]
        ev["id"] = f"01LOAD{self.index}{self._hex(19).upper()}"
        ev["occurred_at"] = rfc3339(time.time())
        ev["data"]["id"] = pd_id
        ev["data"]["title"] = f"load page {pd_id}"
        body = orjson.dumps(doc)
        sig = hmac.new(PD_SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/json", "X-PagerDuty-Signature": f"v1={sig}"}
        route = f"POST /v1/webhooks/pagerduty {'new' if kind == 'triggered' else 'step'}"
        if self.deliver(route, body, headers, {(PD_SOURCE, ev["id"])}, 0, 1):
            if kind == "resolved":
                self.paged.pop(pd_id, None)
            else:
                self.paged[pd_id] = kind
        else:
            self.paged.pop(pd_id, None)

    def deliver(
        self, route: str, body: bytes, headers: dict[str, str], keys: set[Key], dups: int, n: int
    ) -> bool:
        """Post one delivery; check `appended` / `duplicates`; True when answered 200."""
        r = self.call(route, "POST", route.split()[1], content=body, headers=headers)
        if r is None or r.status_code >= 500:
            self.tally.uncertain |= keys
            return False
        if r.status_code != 200:
            return False
        answer = r.json()
        new = len(keys) - dups
        if (
            answer.get("appended") != new
            or answer.get("duplicates") != n - new
            or answer.get("ignored")
        ):
            self.run_.anomaly(
                f"{route}: expected appended={new} duplicates={n - new}, got {answer}"
            )
        self.tally.accepted += int(answer.get("appended") or 0)
        self.tally.duplicates += int(answer.get("duplicates") or 0)
        self.tally.sent |= keys
        if keys:
            self.recent.append((route, body, headers, n))
        return True


# -- RSS --------------------------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def process_tree(root: int) -> list[int]:
    """`root` and its descendants, from the parent ids in /proc/<pid>/stat."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


@dataclass
class RssSample:
    t: float  # perf_counter
    main_kb: int
    tree_kb: int
    processes: int


class RssSampler(threading.Thread):
    def __init__(self, pid: int, interval: float, run: Run) -> None:
        super().__init__(name="rss", daemon=True)
        self.pid = pid
        self.interval = interval
        self.run_ = run
        self.samples: list[RssSample] = []
        self.halt = threading.Event()

    def sample(self) -> RssSample:
        tree = process_tree(self.pid)
        s = RssSample(
            time.perf_counter(), rss_kb(self.pid), sum(rss_kb(p) for p in tree), len(tree)
        )
        self.samples.append(s)
        return s

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            if self.sample().main_kb == 0:  # the server is gone
                self.run_.anomaly("the server process exited during the run")
                self.run_.stop.set()
                return

    def at(self, t: float) -> RssSample:
        return min(self.samples, key=lambda s: abs(s.t - t))

    def around(self, start: float, end: float) -> RssSample:
        """The median of the samples in [start, end): the footprint, not one request's peak."""
        inside = [s for s in self.samples if start <= s.t < end] or [self.at((start + end) / 2)]
        return RssSample(
            (start + end) / 2,
            int(np.median([s.main_kb for s in inside])),
            int(np.median([s.tree_kb for s in inside])),
            max(s.processes for s in inside),
        )


# -- one backend ------------------------------------------------------------------------------


def percentiles(xs: Sequence[float]) -> tuple[float, float, float]:
    if not xs:
        return (float("nan"),) * 3
    p = np.percentile(np.asarray(xs), [50, 95, 99])
    return float(p[0]), float(p[1]), float(p[2])


def route_table(results: Sequence[Result], seconds: float) -> list[dict[str, Any]]:
    by: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        by.setdefault((r.kind, r.route), []).append(r)
    order = {"ingest": 0, "webhook": 1, "read": 2, "sql": 3}
    rows = []
    for (kind, route), rs in sorted(by.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
        answered = [r.seconds for r in rs if r.status.isdigit()]
        p50, p95, p99 = percentiles(answered)
        statuses = Counter(r.status for r in rs)
        rows.append(
            {
                "kind": kind,
                "route": route,
                "count": len(rs),
                "per_s": len(rs) / seconds,
                "p50_ms": p50 * 1000,
                "p95_ms": p95 * 1000,
                "p99_ms": p99 * 1000,
                "max_ms": max(answered, default=float("nan")) * 1000,
                "statuses": dict(sorted(statuses.items())),
            }
        )
    return rows


def ledger_pairs(url: str, sources: Sequence[str], after: int) -> tuple[list[Key], int]:
    """(source, id) of every event of `sources`, and how many other events came after `after`."""
    ours: BindParameter[list[str]] = bindparam("sources", expanding=True)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT source, id FROM events WHERE source IN :sources").bindparams(ours),
                {"sources": list(sources)},
            )
            pairs = [(str(a), str(b)) for a, b in rows]
            others = conn.execute(
                text(
                    "SELECT count(*) FROM events WHERE position > :after AND source NOT IN :sources"
                ).bindparams(ours),
                {"after": after, "sources": list(sources)},
            ).scalar_one()
    finally:
        engine.dispose()
    return pairs, int(others)


def ledger_head(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            head = conn.execute(text("SELECT coalesce(max(position), 0) FROM events"))
            return int(head.scalar_one())
    finally:
        engine.dispose()


def warm_up(base: str, tokens: dict[str, str]) -> None:
    """One of each read and one query, unrecorded, so that first-call costs are not counted."""
    run = Run(base, time.perf_counter() + 120, 1000, 60.0)
    reader = Reader(run, tokens["read"], 0, 0)
    for _ in range(len(reader.routes()) + 1):
        reader.step()
    reader.http.close()
    sql_client = Sql(run, tokens["query"], 0, 0)
    sql_client.step()
    sql_client.http.close()


def run_backend(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Set up, load for `--duration` seconds, check; the figures of one backend."""
    home = Path(tempfile.mkdtemp(prefix=f"opsledger-load-{name}-"))
    pg: Postgres | None = None
    server: Server | None = None
    figures: dict[str, Any] = {"backend": name, "home": str(home)}
    try:
        database_url = None
        if name == "postgresql":
            pg = Postgres(args.pg_url)
            database_url = pg.start()
            figures["postgresql"] = pg.version
        extra = dict(kv.split("=", 1) for kv in args.server_env)
        server = Server(home, database_url, extra)
        print(f"\n== {name}: home {home}", flush=True)
        print(f"  demo: {server.prepare()}", flush=True)
        server.start()
        ready_s = server.wait_ready(args.ready_timeout)
        assert server.proc is not None
        print(
            f"  server pid {server.proc.pid} on {server.base}, ready and caught up in "
            f"{ready_s:.1f} s; warming up ...",
            flush=True,
        )
        warm_up(server.base, server.tokens)
        head0 = ledger_head(server.ledger_url)
        figures |= load(server, args, head0)
        return figures
    except BaseException:
        if server is not None:
            print(f"\n  server log tail ({server.log_path}):\n{server.log_tail()}", flush=True)
        raise
    finally:
        if server is not None:
            server.stop()
        if pg is not None:
            pg.stop()
        if args.keep:
            print(f"  kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


def load(server: Server, args: argparse.Namespace, head0: int) -> dict[str, Any]:
    """Run every client until the deadline, then check the ledger from `head0` on; figures."""
    assert server.proc is not None
    t_start = time.perf_counter()
    run = Run(server.base, t_start + args.duration, args.max_requests, args.timeout)
    rss = RssSampler(server.proc.pid, args.rss_interval, run)
    rss.sample()  # the start: after the warm-up, before the load
    tok = server.tokens
    ingest = [Ingest(run, tok["write"], k, args.seed, args) for k in range(args.ingest_clients)]
    webhooks = [
        Webhooks(run, tok["write"], k, args.seed, args.webhook_pause)
        for k in range(args.webhook_clients)
    ]
    readers = [Reader(run, tok["read"], k, args.seed) for k in range(args.readers)]
    sqls = [Sql(run, tok["query"], k, args.seed) for k in range(args.sql_clients)]
    clients: list[Client] = [*ingest, *webhooks, *readers, *sqls]
    print(
        f"  load: {len(ingest)} ingest, {len(readers)} readers, {len(sqls)} SQL, "
        f"{len(webhooks)} webhook clients for {args.duration:.0f} s ...",
        flush=True,
    )
    rss.start()
    for c in clients:
        c.start()
    progress_at = t_start + args.progress
    while any(c.is_alive() for c in clients):
        time.sleep(0.5)
        if time.perf_counter() >= progress_at:
            progress_at += args.progress
            results = list(run.results)
            bad = sum(1 for r in results if not r.status.startswith("2"))
            s = rss.samples[-1]
            print(
                f"    {time.perf_counter() - t_start:5.0f} s: {len(results)} requests, "
                f"{bad} not 2xx, server RSS {s.main_kb / 1024:.0f} MiB (tree "
                f"{s.tree_kb / 1024:.0f} MiB, {s.processes} processes), "
                f"load average {load_average()}",
                flush=True,
            )
    t_end = time.perf_counter()
    rss.halt.set()
    rss.join()
    rss.sample()
    seconds = min(t_end, run.deadline) - t_start
    script_errors = [c.error for c in clients if c.error]

    # the projections catching up with what the load wrote (information)
    lag_s: float | None = None
    t0 = time.perf_counter()
    with httpx.Client(
        base_url=server.base, timeout=10.0, headers={"Authorization": f"Bearer {tok['read']}"}
    ) as http:
        while time.perf_counter() - t0 < args.catch_up_timeout:
            try:
                ps = http.get("/v1/projections").json()["projections"]
                if max(p["lag"] for p in ps) == 0:
                    lag_s = time.perf_counter() - t0
                    break
            except (httpx.TransportError, KeyError, ValueError):
                pass
            time.sleep(0.5)

    # the ledger against what the clients were told was recorded
    tallies = [c.tally for c in ingest] + [w.tally for w in webhooks]
    sent: set[Key] = set().union(*(t.sent for t in tallies))
    uncertain: set[Key] = set().union(*(t.uncertain for t in tallies)) - sent
    sources = [c.source for c in ingest] + ([AM_SOURCE, PD_SOURCE] if webhooks else [])
    pairs, others = ledger_pairs(server.ledger_url, sources, head0)
    stored = set(pairs)
    missing = sent - stored
    extra = stored - sent - uncertain
    accepted = sum(t.accepted for t in tallies)
    ledger = {
        "distinct_sent": len(sent),
        "ledger_rows": len(pairs),
        "ledger_distinct": len(stored),
        "missing": len(missing),
        "extra": len(extra),
        "doubled": len(pairs) - len(stored),
        "uncertain_sent": len(uncertain),
        "uncertain_stored": len(stored & uncertain),
        "accepted_in_200": accepted,
        "duplicates_in_200": sum(t.duplicates for t in tallies),
        "other_sources_after_start": others,
        "missing_examples": sorted(missing)[:5],
        "extra_examples": sorted(extra)[:5],
    }
    ledger["pass"] = (
        not missing
        and not extra
        and len(pairs) == len(stored) == len(sent) + len(stored & uncertain)
        and accepted == len(sent)
        and others == 0
    )

    results = run.results
    routes = route_table(results, seconds)
    statuses = Counter(r.status for r in results)
    ingest_rs = [r for r in results if r.kind == "ingest"]
    window = (
        min((r.start for r in ingest_rs), default=t_start),
        max((r.start + r.seconds for r in ingest_rs), default=t_start),
    )
    reads = [
        r.seconds
        for r in results
        if r.kind == "read"
        and (r.status.isdigit() or r.status == "timeout")  # a timeout counts as its wait
        and window[0] <= r.start <= window[1]
    ]
    read_p99 = percentiles(reads)[2]
    sql_p99 = percentiles([r.seconds for r in results if r.kind == "sql" and r.status.isdigit()])[2]
    # A sample is one instant: it holds whatever the requests in flight hold then (a forecast
    # of every PVC holds a month of samples for a second). Growth is judged on the median of
    # the samples over a minute (or a tenth of the run, if shorter) at each point.
    span = min(RSS_WINDOW_S, seconds / 10)
    start_s = rss.around(t_start, t_start + span)
    mid_s = rss.around(t_start + (seconds - span) / 2, t_start + (seconds + span) / 2)
    end_s = rss.around(t_start + seconds - span, t_start + seconds)
    instants = [rss.at(t_start + f * seconds).main_kb for f in (0.0, 0.5, 1.0)]
    ratio = end_s.main_kb / mid_s.main_kb if mid_s.main_kb else float("inf")
    tree_ratio = end_s.tree_kb / mid_s.tree_kb if mid_s.tree_kb else float("inf")
    n5xx = sum(n for s, n in statuses.items() if s.isdigit() and int(s) >= 500)
    no_answer = sum(n for s, n in statuses.items() if not s.isdigit())
    unexpected_4xx = sum(n for s, n in statuses.items() if s.isdigit() and 400 <= int(s) < 500)
    counted = [a for a in run.anomalies if "expected accepted" in a or "expected appended" in a]
    log = server.log_text()
    problems = LogProblems.of(log)
    targets = [
        ("responses >= 500", str(n5xx), f"= {TARGET_5XX}", n5xx <= TARGET_5XX),
        (
            "server RSS end / middle",
            f"{ratio:.3f}",
            f"<= {TARGET_RSS_RATIO}",
            ratio <= TARGET_RSS_RATIO,
        ),
        (
            "p99 of reads while ingest runs",
            f"{read_p99 * 1000:.0f} ms",
            f"< {TARGET_READ_P99_S * 1000:.0f} ms",
            read_p99 < TARGET_READ_P99_S,
        ),
        (
            "ledger holds exactly the events sent",
            f"{ledger['ledger_distinct']}/{ledger['distinct_sent']}",
            "equal",
            ledger["pass"],
        ),
    ]
    checks = [
        ("timeouts and transport errors", str(no_answer), "= 0", no_answer == 0),
        ("4xx responses", str(unexpected_4xx), "= 0", unexpected_4xx == 0),
        ("answers counting other than the batch", str(len(counted)), "= 0", not counted),
        ("errors in the server log", str(problems.error_count), "= 0", not problems.errors),
        ("script errors", str(len(script_errors)), "= 0", not script_errors),
    ]
    samples = sum(c.tally.samples for c in ingest)
    ingest_events = sum(c.tally.accepted for c in ingest)
    return {
        "duration_s": seconds,
        "clients": {
            "ingest": len(ingest),
            "readers": len(readers),
            "sql": len(sqls),
            "webhooks": len(webhooks),
        },
        "requests": len(results),
        "requests_per_s": len(results) / seconds,
        "statuses": dict(sorted(statuses.items())),
        "routes": routes,
        "ingest": {
            "events_accepted": ingest_events,
            "events_per_s": ingest_events / seconds,
            "samples": samples,
            "samples_per_s": samples / seconds,
            "duplicates_answered": sum(c.tally.duplicates for c in ingest),
        },
        "read_p99_while_ingest_ms": read_p99 * 1000,
        "reads_while_ingest": len(reads),
        "sql_p99_ms": sql_p99 * 1000,
        "rss_kib": {
            "start": start_s.main_kb,
            "middle": mid_s.main_kb,
            "end": end_s.main_kb,
            "end_over_middle": ratio,
            "tree_start": start_s.tree_kb,
            "tree_middle": mid_s.tree_kb,
            "tree_end": end_s.tree_kb,
            "tree_end_over_middle": tree_ratio,
            "max": max(s.main_kb for s in rss.samples),
            "window_s": span,
            "instant_start_middle_end": instants,
            "series": [
                (round(s.t - t_start, 1), s.main_kb, s.tree_kb, s.processes) for s in rss.samples
            ],
        },
        "projection_catch_up_after_load_s": lag_s,
        "ledger": ledger,
        "targets": [{"name": n, "measured": m, "goal": g, "pass": ok} for n, m, g, ok in targets],
        "checks": [{"name": n, "measured": m, "goal": g, "pass": ok} for n, m, g, ok in checks],
        "anomalies": run.anomalies[:50],
        "server_log_errors": problems.errors,
        "server_log_warning_count": problems.warning_count,
        "server_log_warnings": problems.warnings,
        "script_errors": script_errors,
        "server_log_tail": log_tail(log),
    }


# -- printing ---------------------------------------------------------------------------------


def print_backend(f: dict[str, Any]) -> bool:
    name = f["backend"]
    pg = f" (PostgreSQL {f['postgresql']})" if "postgresql" in f else ""
    c = f["clients"]
    print(
        f"\n== {name}{pg}: {f['duration_s']:.0f} s, {c['ingest']} ingest, {c['readers']} "
        f"readers, {c['sql']} SQL, {c['webhooks']} webhook clients; {f['requests']} requests, "
        f"{f['requests_per_s']:.1f} req/s"
    )
    head = (
        f"  {'route':<42} {'count':>7} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'max ms':>8}  not 2xx"
    )
    print(head)
    print("  " + "-" * (len(head) - 2))
    for r in f["routes"]:
        bad = {s: n for s, n in r["statuses"].items() if not s.startswith("2")}
        bad_s = " ".join(f"{s}x{n}" for s, n in bad.items()) or "-"
        print(
            f"  {r['route']:<42} {r['count']:>7} {r['per_s']:>7.2f} {r['p50_ms']:>8.1f} "
            f"{r['p95_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['max_ms']:>8.1f}  {bad_s}"
        )
    print(f"  statuses: {' '.join(f'{s}x{n}' for s, n in f['statuses'].items())}")
    i = f["ingest"]
    print(
        f"  ingest: {i['events_accepted']} events accepted ({i['events_per_s']:.0f}/s), "
        f"{i['samples']} samples ({i['samples_per_s']:.0f}/s), "
        f"{i['duplicates_answered']} duplicates answered"
    )
    m = f["rss_kib"]
    instants = ", ".join(f"{kb / 1024:.0f}" for kb in m["instant_start_middle_end"])
    print(
        f"  server RSS MiB, median of {m['window_s']:.0f} s of samples: start "
        f"{m['start'] / 1024:.0f}, middle {m['middle'] / 1024:.0f}, end {m['end'] / 1024:.0f} "
        f"(single samples {instants}; max {m['max'] / 1024:.0f}); with its children: "
        f"{m['tree_start'] / 1024:.0f}, {m['tree_middle'] / 1024:.0f}, "
        f"{m['tree_end'] / 1024:.0f} (end / middle {m['tree_end_over_middle']:.3f})"
    )
    print(
        f"  reads while ingest ran: {f['reads_while_ingest']}, p99 "
        f"{f['read_p99_while_ingest_ms']:.0f} ms; SQL p99 {f['sql_p99_ms']:.0f} ms; "
        f"{f['server_log_warning_count']} warning runs in the server log"
    )
    lag = f["projection_catch_up_after_load_s"]
    print(
        "  projections caught up "
        + (
            f"{lag:.1f} s after the load"
            if lag is not None
            else "NOT within the wait after the load"
        )
    )
    lg = f["ledger"]
    print(
        f"  ledger: {lg['distinct_sent']} distinct events answered 200, {lg['ledger_rows']} rows "
        f"of the load's sources ({lg['ledger_distinct']} distinct); missing {lg['missing']}, "
        f"extra {lg['extra']}, doubled {lg['doubled']}; accepted in answers "
        f"{lg['accepted_in_200']}, duplicates in answers {lg['duplicates_in_200']}; "
        f"unanswered events {lg['uncertain_sent']} ({lg['uncertain_stored']} stored); "
        f"other sources since the start {lg['other_sources_after_start']}"
    )
    if lg["missing_examples"] or lg["extra_examples"]:
        print(f"    missing e.g. {lg['missing_examples']}; extra e.g. {lg['extra_examples']}")
    ok = True
    for title, items in (("targets", f["targets"]), ("checks", f["checks"])):
        print(f"  {title}")
        for t in items:
            print(
                f"    {t['name']:<40} {t['measured']:>14}  {t['goal']:<10} "
                f"{'PASS' if t['pass'] else 'FAIL'}"
            )
            ok = ok and t["pass"]
    if f["anomalies"]:
        print(f"  first anomalies ({len(f['anomalies'])} shown):")
        for a in f["anomalies"][:15]:
            print(f"    {a}")
    for e in f["script_errors"]:
        print(f"  script error: {e}")
    for what in ("errors", "warnings"):
        if f[f"server_log_{what}"]:
            print(f"  {what} in the server log (distinct, most frequent first):")
            for block in f[f"server_log_{what}"]:
                print("    " + block[-3000:].replace("\n", "\n    "))
    if not ok:
        tail = f["server_log_tail"][-3000:].replace("\n", "\n    ")
        print(f"  server log tail (without the 200 OK access lines):\n    {tail}")
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--ingest-clients", type=int, default=8)
    parser.add_argument("--readers", type=int, default=8)
    parser.add_argument("--sql-clients", type=int, default=2)
    parser.add_argument("--webhook-clients", type=int, default=1)
    parser.add_argument(
        "--webhook-pause",
        type=float,
        default=0.2,
        help="seconds a webhook client waits between deliveries",
    )
    parser.add_argument("--nodes", type=int, default=30, help="nodes per ingest cluster")
    parser.add_argument("--pvcs", type=int, default=10, help="PVCs per ingest cluster")
    parser.add_argument("--scrapes", type=int, default=2, help="metric scrapes per batch")
    parser.add_argument(
        "--redeliver",
        type=float,
        default=0.1,
        help="share of ingest requests that carry re-deliveries",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout (s)")
    parser.add_argument(
        "--max-requests",
        type=int,
        default=2_000_000,
        help="stop every client once this many requests were sent",
    )
    parser.add_argument("--rss-interval", type=float, default=2.0)
    parser.add_argument("--progress", type=float, default=30.0, help="seconds between notes")
    parser.add_argument("--ready-timeout", type=float, default=300.0)
    parser.add_argument(
        "--catch-up-timeout",
        type=float,
        default=120.0,
        help="seconds to wait for the projections after the load",
    )
    parser.add_argument(
        "--pg-url",
        help="an existing PostgreSQL server to create a database on, "
        "e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for the CLI and the server (repeatable), "
        "e.g. OPSLEDGER_LOG_LEVEL=warning",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary homes")
    args = parser.parse_args(argv)
    for kv in args.server_env:
        if "=" not in kv:
            parser.error(f"--server-env wants NAME=VALUE, got {kv!r}")

    print(
        f"opsledger load benchmark  python {platform.python_version()}  "
        f"sqlite {sqlite3.sqlite_version}  cpus {os.cpu_count()}  {platform.machine()}  "
        f"load average {load_average()}",
        flush=True,
    )
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    all_figures = []
    ok = True
    for b in backends:
        figures = run_backend(b, args)
        all_figures.append(figures)
        ok = print_backend(figures) and ok
    if args.json:
        args.json.write_text(json.dumps(all_figures, indent=2, default=str))
        print(f"\nfigures written to {args.json}")
    print(f"\n{'PASS' if ok else 'FAIL'}; load average at the end {load_average()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
