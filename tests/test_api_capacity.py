"""`/v1/capacity/trends` and `/v1/projections` over a real ledger, projector and read model."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from payloads import OPSLEDGER, cloudevent, sample

from analytics.capacity.projection import CapacityProjection
from api.app import create_app
from store.keys import create_key, list_keys
from store.ledger import Ledger
from store.migrate import upgrade
from store.settings import Settings

BATCH = "application/cloudevents-batch+json"
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
POINT_FIELDS = (
    "usage_avg",
    "usage_p95",
    "usage_max",
    "requests_avg",
    "allocatable_avg",
    "utilization_avg",
    "utilization_p95",
    "commitment_avg",
)


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


def hourly(values: list[float]) -> list[list[float]]:
    return [values[h * 12 : h * 12 + 12] for h in range(STEPS // 12)]


def p95(values: list[float]) -> float:
    return float(np.percentile(values, 95, method="linear"))


# -- the test bed ----------------------------------------------------------------------------


@dataclass
class Bed:
    client: TestClient
    ledger: Ledger
    tokens: dict[str, str]

    def auth(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[scope]}"}

    def trends(self, key_scope: str = "read", **params: Any) -> httpx.Response:
        """GET /v1/capacity/trends with a key of `key_scope`."""
        return self.client.get("/v1/capacity/trends", params=params, headers=self.auth(key_scope))

    def series(self, **params: Any) -> list[dict[str, Any]]:
        params = {"from": rfc(T0), "to": rfc(T0 + timedelta(days=1)), **params}
        r = self.trends(**params)
        assert r.status_code == 200, r.text
        return r.json()["series"]


def settings_for(tmp_path: Path) -> Settings:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    return Settings(
        database_url=url,
        home=tmp_path,
        read_model_path=tmp_path / "rm.duckdb",
        projection_interval_seconds=3600,
    )


def capacity(states: list[dict[str, Any]]) -> dict[str, Any]:
    """The capacity projection's state among all the projections'."""
    (state,) = [s for s in states if s["name"] == "capacity"]
    return state


def wait_for_lag_0(get: Any, head: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Poll GET /v1/projections until every projection has folded in `head`."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = get()
        assert r.status_code == 200, r.text
        states = r.json()["projections"]
        if states and all(s["lag"] == 0 and s["head"] >= head for s in states):
            return states
        assert time.monotonic() < deadline, f"projections still behind: {states}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    """The app with its projector, the samples posted and projected (lag 0)."""
    settings = settings_for(tmp_path_factory.mktemp("capacity"))
    app = create_app(settings)
    ledger: Ledger = app.state.ledger
    tokens = {s: create_key(ledger.engine, f"test-{s}", s)[1] for s in ("read", "write", "admin")}
    with TestClient(app) as client:
        b = Bed(client, ledger, tokens)
        for body in (samples_events(), [correction_event()]):
            r = client.post(
                "/v1/events", json=body, headers={**b.auth("write"), "Content-Type": BATCH}
            )
            assert r.status_code == 200, r.text
        head = r.json()["last_position"]
        states = wait_for_lag_0(lambda: client.get("/v1/projections", headers=b.auth("read")), head)
        assert capacity(states)["position"] == head == 7
        yield b


# -- values ----------------------------------------------------------------------------------


def test_hourly_cluster_cpu_usage_is_the_mean_of_per_timestamp_sums(bed: Bed) -> None:
    (series,) = bed.series(metric="cpu", scope="cluster", step="1h", cluster="c1")
    assert series["key"] == {"cluster": "c1"}
    sums = [sum(node_cpu("c1", n, i) for n in NODES["c1"]) for i in range(STEPS)]
    alloc = sum(a for _, a, _ in NODES["c1"].values())
    assert [p["t"] for p in series["points"]] == [
        "2026-10-14T00:00:00Z",
        "2026-10-14T01:00:00Z",
        "2026-10-14T02:00:00Z",
    ]
    for point, hour in zip(series["points"], hourly(sums), strict=True):
        assert point["usage_avg"] == pytest.approx(sum(hour) / 12)
        assert point["usage_p95"] == pytest.approx(p95(hour))
        assert point["usage_max"] == pytest.approx(max(hour))
        assert point["allocatable_avg"] == pytest.approx(alloc)
        assert point["utilization_avg"] == pytest.approx(sum(hour) / 12 / alloc)
        assert point["utilization_p95"] == pytest.approx(p95([u / alloc for u in hour]))
    # n1 at 00:25Z was sampled twice: 0.1, then 3.9 in a later event. The later one counts.
    n1 = bed.series(metric="cpu", scope="node", step="1h", cluster="c1")[0]
    assert n1["key"]["node"] == "n1"
    assert n1["points"][0]["usage_max"] == CORRECTED[3]
    (daily,) = bed.series(metric="cpu", scope="cluster", step="1d", cluster="c1")
    assert [p["t"] for p in daily["points"]] == ["2026-10-14T00:00:00Z"]
    assert daily["points"][0]["usage_avg"] == pytest.approx(sum(sums) / STEPS)


def test_nodepool_utilization_sums_members_before_the_ratio(bed: Bed) -> None:
    series = bed.series(metric="cpu", scope="nodepool", step="1h", cluster="c1")
    assert [s["key"] for s in series] == [
        {"cluster": "c1", "nodepool": "general"},
        {"cluster": "c1", "nodepool": "memory"},
    ]
    members = {"general": ("n1", "n2"), "memory": ("n3",)}
    for s in series:
        nodes = members[s["key"]["nodepool"]]
        alloc = sum(NODES["c1"][n][1] for n in nodes)
        ratios = [sum(node_cpu("c1", n, i) for n in nodes) / alloc for i in range(STEPS)]
        for point, hour in zip(s["points"], hourly(ratios), strict=True):
            assert point["utilization_avg"] == pytest.approx(sum(hour) / 12)
            assert point["utilization_p95"] == pytest.approx(p95(hour))
            assert point["requests_avg"] is None
            assert point["commitment_avg"] is None
    # (n1 + n2) / (4 + 8), not the mean of n1 / 4 and n2 / 8.
    general = series[0]["points"][0]["utilization_avg"]
    mean_of_ratios = (
        sum((node_cpu("c1", "n1", i) / 4 + node_cpu("c1", "n2", i) / 8) / 2 for i in range(12)) / 12
    )
    assert general != pytest.approx(mean_of_ratios)


def test_namespace_commitment_is_requests_over_cluster_allocatable(bed: Bed) -> None:
    series = bed.series(metric="cpu", scope="namespace", step="1h", cluster="c1")
    assert [s["key"] for s in series] == [
        {"cluster": "c1", "namespace": "db"},
        {"cluster": "c1", "namespace": "web"},
    ]
    alloc = sum(a for _, a, _ in NODES["c1"].values())
    for s in series:
        ns = s["key"]["namespace"]
        for hour, point in enumerate(s["points"]):
            steps = range(hour * 12, hour * 12 + 12)
            assert point["requests_avg"] == pytest.approx(ns_cpu_requests(ns, hour * 12))
            assert point["allocatable_avg"] == pytest.approx(alloc)
            assert point["commitment_avg"] == pytest.approx(ns_cpu_requests(ns, hour * 12) / alloc)
            usage = [ns_cpu(ns, i) for i in steps]
            assert point["usage_avg"] == pytest.approx(sum(usage) / 12)
            assert point["utilization_avg"] == pytest.approx(sum(usage) / 12 / alloc)
    # The cluster's commitment sums the namespaces' requests.
    (cluster,) = bed.series(metric="cpu", scope="cluster", step="1h", cluster="c1")
    assert cluster["points"][2]["commitment_avg"] == pytest.approx((6 + 2 + 10 + 2) / alloc)


def test_counts_pods_and_nodes(bed: Bed) -> None:
    (pods,) = bed.series(metric="pods", scope="cluster", step="1h", cluster="c1")
    assert pods["points"][0]["usage_max"] == max(
        ns_pods("web", i) + ns_pods("db", i) for i in range(12)
    )
    (nodes,) = bed.series(metric="nodes", scope="cluster", step="1d", cluster="c1")
    assert nodes["points"][0]["usage_avg"] == 3
    pools = bed.series(metric="nodes", scope="nodepool", step="1d", cluster="c1")
    assert [s["points"][0]["usage_avg"] for s in pools] == [2, 1]
    # No per-node or per-pool pod counts, no per-namespace node counts: empty, not an error.
    for metric, scope in (("pods", "node"), ("pods", "nodepool"), ("nodes", "namespace")):
        assert bed.series(metric=metric, scope=scope, step="1h") == []


# -- shape -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "scope", "key", "null_fields"),
    [
        ("cpu", "cluster", {"cluster"}, set()),
        ("memory", "nodepool", {"cluster", "nodepool"}, {"requests_avg", "commitment_avg"}),
        ("cpu", "node", {"cluster", "nodepool", "node"}, {"requests_avg", "commitment_avg"}),
        ("memory", "namespace", {"cluster", "namespace"}, set()),
        (
            "pods",
            "namespace",
            {"cluster", "namespace"},
            {
                "requests_avg",
                "allocatable_avg",
                "utilization_avg",
                "utilization_p95",
                "commitment_avg",
            },
        ),
    ],
)
def test_shape_per_scope(
    bed: Bed, metric: str, scope: str, key: set[str], null_fields: set[str]
) -> None:
    series = bed.series(metric=metric, scope=scope, step="1h")
    assert series
    for s in series:
        assert set(s["key"]) == key
        assert all(s["key"].values())
        assert len(s["points"]) == 3
        for p in s["points"]:
            assert set(p) == {"t", *POINT_FIELDS}
            assert {f for f in POINT_FIELDS if p[f] is None} == null_fields, p


def test_node_series(bed: Bed) -> None:
    series = bed.series(metric="memory", scope="node", step="1d")
    assert [s["key"] for s in series] == [
        {"cluster": "c1", "nodepool": "general", "node": "n1"},
        {"cluster": "c1", "nodepool": "general", "node": "n2"},
        {"cluster": "c1", "nodepool": "memory", "node": "n3"},
        {"cluster": "c2", "nodepool": "general", "node": "m1"},
    ]
    point = series[2]["points"][0]
    mem = [node_mem("n3", i) for i in range(STEPS)]
    assert point["usage_avg"] == pytest.approx(sum(mem) / STEPS)
    assert point["allocatable_avg"] == 128 * GIB
    assert point["utilization_p95"] == pytest.approx(p95([m / (128 * GIB) for m in mem]))


def test_from_to_is_half_open_on_the_bucket_start(bed: Bed) -> None:
    def starts(**window: str) -> list[str]:
        (s,) = bed.series(metric="cpu", scope="cluster", step="1h", cluster="c1", **window)
        return [p["t"] for p in s["points"]]

    assert starts(**{"from": "2026-10-14T01:00:00Z", "to": "2026-10-14T02:00:00Z"}) == [
        "2026-10-14T01:00:00Z"
    ]
    assert starts(**{"from": "2026-10-14T00:30:00Z", "to": "2026-10-14T02:00:00.000001Z"}) == [
        "2026-10-14T01:00:00Z",
        "2026-10-14T02:00:00Z",
    ]
    # Offsets are honoured: 21:00-04:00 is 01:00Z.
    assert starts(**{"from": "2026-10-13T21:00:00-04:00", "to": "2026-10-15T00:00:00Z"}) == [
        "2026-10-14T01:00:00Z",
        "2026-10-14T02:00:00Z",
    ]
    # The last bucket starts at 02:00Z: nothing starts at or after 03:00Z.
    assert bed.series(**{"from": "2026-10-14T03:00:00Z"}) == []


def test_cluster_filter(bed: Bed) -> None:
    assert [s["key"] for s in bed.series(scope="cluster", step="1h")] == [
        {"cluster": "c1"},
        {"cluster": "c2"},
    ]
    (c2,) = bed.series(scope="cluster", step="1h", cluster="c2")
    assert c2["key"] == {"cluster": "c2"}
    assert c2["points"][0]["usage_avg"] == pytest.approx(
        sum(node_cpu("c2", "m1", i) for i in range(12)) / 12
    )
    assert bed.series(scope="cluster", step="1h", cluster="nope") == []


def test_defaults_are_cpu_cluster_daily_over_the_last_30_days(bed: Bed) -> None:
    if datetime.now(UTC) < T0 + timedelta(days=31):
        pytest.skip("the test data lies within the last 30 days")
    r = bed.trends()
    assert r.status_code == 200, r.text
    assert r.json() == {"series": []}
    for to, days in (
        ("2026-11-13T00:00:00Z", ["2026-10-14T00:00:00Z"]),
        ("2026-11-14T00:00:00Z", []),
    ):
        r = bed.trends(cluster="c1", to=to)
        assert r.status_code == 200, r.text
        assert [p["t"] for s in r.json()["series"] for p in s["points"]] == days


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"metric": "disk"}, "query.metric"),
        ({"scope": "pod"}, "query.scope"),
        ({"step": "5m"}, "query.step"),
        ({"from": "yesterday"}, "query.from"),
        ({"from": "2026-10-14T00:00:00"}, "query.from"),  # no offset
        ({"to": "2026-13-01T00:00:00Z"}, "query.to"),
        ({"from": "2026-10-14T01:00:00Z", "to": "2026-10-14T01:00:00Z"}, "query.from"),
        ({"from": "2026-10-14T02:00:00Z", "to": "2026-10-14T01:00:00Z"}, "query.from"),
        ({"from": "2020-01-01T00:00:00Z", "to": "2026-10-14T00:00:00Z"}, "query.from"),
    ],
)
def test_bad_parameters_are_422_naming_the_field(
    bed: Bed, params: dict[str, str], field: str
) -> None:
    r = bed.trends(**params)
    assert r.status_code == 422, r.text
    body = r.json()
    assert [e["field"] for e in body["errors"]] == [field], body


# -- keys ------------------------------------------------------------------------------------


def test_keys_and_scopes(bed: Bed) -> None:
    c = bed.client
    assert bed.trends("read").status_code == 200
    assert c.get("/v1/capacity/trends").status_code == 401
    assert c.get("/v1/projections").status_code == 401
    bogus = {"Authorization": "Bearer olk_nope"}
    assert c.get("/v1/capacity/trends", headers=bogus).status_code == 401
    assert c.get("/v1/projections", headers=bed.auth("read")).status_code == 200
    for path in ("/v1/projections/catch-up", "/v1/projections/rebuild"):
        assert c.post(path).status_code == 401
        for scope in ("read", "write"):
            r = c.post(path, headers=bed.auth(scope))
            assert r.status_code == 403, r.text
            assert "'admin' scope" in r.json()["detail"]


def test_catch_up_with_admin(bed: Bed) -> None:
    r = bed.client.post("/v1/projections/catch-up", headers=bed.auth("admin"))
    assert r.status_code == 200, r.text
    states = r.json()["projections"]
    assert capacity(states) == {
        "name": "capacity",
        "version": CapacityProjection.version,
        "position": 7,
        "head": 7,
        "lag": 0,
        "poisoned": 0,
        "poisoned_events": [],
        "last_error": None,
    }
    assert all(s["lag"] == 0 for s in states)


def flat(results: list[list[dict[str, Any]]]) -> list[tuple[tuple[Any, ...], float]]:
    """((query, series key, bucket, field), value) of every non-null figure of every result."""
    return [
        ((n, tuple(s["key"].items()), p["t"], f), p[f])
        for n, series in enumerate(results)
        for s in series
        for p in s["points"]
        for f in POINT_FIELDS
        if p[f] is not None
    ]


def test_rebuild_replays_to_identical_values(bed: Bed) -> None:
    queries = [
        {"metric": m, "scope": s, "step": st}
        for m in ("cpu", "memory", "pods", "nodes")
        for s in ("cluster", "nodepool", "node", "namespace")
        for st in ("1h", "1d")
    ]
    before = flat([bed.series(**q) for q in queries])
    assert len(before) > 500
    for params in ({"name": "capacity"}, {}):
        r = bed.client.post("/v1/projections/rebuild", params=params, headers=bed.auth("admin"))
        assert r.status_code == 200, r.text
        states = r.json()["projections"]
        assert all(s["lag"] == 0 for s in states), states
        assert capacity(states)["position"] == 7
        after = flat([bed.series(**q) for q in queries])
        assert [where for where, _ in after] == [where for where, _ in before]
        # DuckDB sums doubles in no fixed order: a replay may differ in the last bit or two.
        assert [v for _, v in after] == pytest.approx([v for _, v in before], rel=1e-12)


def test_rebuild_of_an_unknown_projection_is_422(bed: Bed) -> None:
    r = bed.client.post(
        "/v1/projections/rebuild", params={"name": ["capacity", "bogus"]}, headers=bed.auth("admin")
    )
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["query.name"]
    assert "'bogus'" in r.json()["errors"][0]["reason"]


def test_503_without_the_read_model(tmp_path: Path) -> None:
    app = create_app(settings_for(tmp_path), projections=False)
    _, token = create_key(app.state.ledger.engine, "r", "read")
    with TestClient(app) as client:
        for path in ("/v1/capacity/trends", "/v1/projections"):
            r = client.get(path, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 503, r.text
            assert "read model" in r.json()["detail"]
    assert not (tmp_path / "rm.duckdb").exists()


# -- the CLI while a server holds the read model ---------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def announce_file(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where `opsledger serve` announces itself for these settings (as api/cli/app.py names it)."""
    from store.settings import get_settings

    monkeypatch.setenv("OPSLEDGER_DATABASE_URL", str(settings.database_url))
    monkeypatch.setenv("OPSLEDGER_READ_MODEL_PATH", str(settings.read_model))
    get_settings.cache_clear()
    try:
        return get_settings().server_file
    finally:
        get_settings.cache_clear()


def test_cli_delegates_to_the_server_holding_the_read_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(tmp_path)
    app = create_app(settings)
    engine = app.state.ledger.engine
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    announce = announce_file(settings, monkeypatch)
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        url = f"http://127.0.0.1:{port}"
        announce.write_text(f'{{"url": "{url}", "pid": {os.getpid()}}}')
        _, write = create_key(engine, "w", "write")
        r = httpx.post(
            url + "/v1/events",
            json=samples_events()[:3],
            headers={"Authorization": f"Bearer {write}", "Content-Type": BATCH},
        )
        assert r.status_code == 200, r.text

        env = {k: v for k, v in os.environ.items() if not k.startswith("OPSLEDGER_")}
        env |= {
            "OPSLEDGER_HOME": str(tmp_path / "home"),
            "OPSLEDGER_DATABASE_URL": str(settings.database_url),
            "OPSLEDGER_READ_MODEL_PATH": str(settings.read_model),
            "COLUMNS": "200",
        }

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [str(OPSLEDGER), *args], capture_output=True, text=True, env=env, timeout=60
            )

        for args in (
            ["projections", "status"],
            ["project"],
            ["projections", "rebuild", "capacity"],
        ):
            proc = cli(*args)
            assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
            row = next(line for line in proc.stdout.splitlines() if "capacity" in line)
            cells = [c.strip() for c in row.split("│")[1:6]]
            version = str(CapacityProjection.version)
            assert cells[:2] == ["capacity", version] and cells[3] == "3", proc.stdout
            if args != ["projections", "status"]:  # caught up in the server before it answers
                assert cells == ["capacity", version, "3", "3", "0"], proc.stdout
        # Each run went through the server with its own admin key, revoked afterwards.
        delegates = [k for k in list_keys(engine, include_revoked=True) if k.name == "cli-delegate"]
        assert len(delegates) == 3
        assert all(k.scope == "admin" and k.revoked_at_us for k in delegates)
        assert not [k for k in list_keys(engine) if k.name == "cli-delegate"]

        # Without the announcement, the CLI says why it cannot reach the read model.
        announce.unlink()
        proc = cli("projections", "status")
        assert proc.returncode == 1, proc.stdout
        assert "no server announced itself" in proc.stderr
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        announce.unlink(missing_ok=True)
    assert not thread.is_alive()
