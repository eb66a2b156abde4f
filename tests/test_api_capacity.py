"""`/v1/capacity/trends` and `/v1/projections` over a real ledger, projector and read model."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from support.beds import Bed, bed_settings, make_bed
from support.capacity import (
    CORRECTED,
    GIB,
    NODES,
    STEPS,
    T0,
    correction_event,
    node_cpu,
    node_mem,
    ns_cpu,
    ns_cpu_requests,
    ns_pods,
    rfc,
    samples_events,
)
from support.cli import OPSLEDGER
from support.servers import announce_file, serve_in_thread

from analytics.capacity.projection import CapacityProjection
from analytics.capacity.trends import POINT_FIELDS
from api.app import create_app
from store.keys import create_key, list_keys
from store.settings import Settings

BATCH = "application/cloudevents-batch+json"


def hourly(values: list[float]) -> list[list[float]]:
    return [values[h * 12 : h * 12 + 12] for h in range(STEPS // 12)]


def p95(values: list[float]) -> float:
    return float(np.percentile(values, 95, method="linear"))


# -- the test bed ----------------------------------------------------------------------------


def trends(bed: Bed, key_scope: str = "read", **params: Any) -> httpx.Response:
    """GET /v1/capacity/trends with a key of `key_scope`."""
    return bed.client.get("/v1/capacity/trends", params=params, headers=bed.headers(key_scope))


def series_of(bed: Bed, **params: Any) -> list[dict[str, Any]]:
    params = {"from": rfc(T0), "to": rfc(T0 + timedelta(days=1)), **params}
    r = trends(bed, **params)
    assert r.status_code == 200, r.text
    return r.json()["series"]


def settings_for(tmp_path: Path) -> Settings:
    """A bed's settings whose read model only moves on ingest and explicit catch-ups."""
    return bed_settings(
        tmp_path, read_model_path=tmp_path / "rm.duckdb", projection_interval_seconds=3600
    )


def capacity(states: list[dict[str, Any]]) -> dict[str, Any]:
    """The capacity projection's state among all the projections'."""
    (state,) = [s for s in states if s["name"] == "capacity"]
    return state


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    """The app with its projector, the samples posted and projected (lag 0)."""
    tmp = tmp_path_factory.mktemp("capacity")
    with make_bed(tmp, read_model_path=tmp / "rm.duckdb", projection_interval_seconds=3600) as b:
        for body in (samples_events(), [correction_event()]):
            r = b.client.post("/v1/events", json=body, headers=b.headers("write", BATCH))
            assert r.status_code == 200, r.text
        head = r.json()["last_position"]
        states = b.wait_caught_up(head)
        assert capacity(states)["position"] == head == 7
        yield b


# -- values ----------------------------------------------------------------------------------


def test_hourly_cluster_cpu_usage_is_the_mean_of_per_timestamp_sums(bed: Bed) -> None:
    (series,) = series_of(bed, metric="cpu", scope="cluster", step="1h", cluster="c1")
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
    n1 = series_of(bed, metric="cpu", scope="node", step="1h", cluster="c1")[0]
    assert n1["key"]["node"] == "n1"
    assert n1["points"][0]["usage_max"] == CORRECTED[3]
    (daily,) = series_of(bed, metric="cpu", scope="cluster", step="1d", cluster="c1")
    assert [p["t"] for p in daily["points"]] == ["2026-10-14T00:00:00Z"]
    assert daily["points"][0]["usage_avg"] == pytest.approx(sum(sums) / STEPS)


def test_nodepool_utilization_sums_members_before_the_ratio(bed: Bed) -> None:
    series = series_of(bed, metric="cpu", scope="nodepool", step="1h", cluster="c1")
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
    series = series_of(bed, metric="cpu", scope="namespace", step="1h", cluster="c1")
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
    (cluster,) = series_of(bed, metric="cpu", scope="cluster", step="1h", cluster="c1")
    assert cluster["points"][2]["commitment_avg"] == pytest.approx((6 + 2 + 10 + 2) / alloc)


def test_counts_pods_and_nodes(bed: Bed) -> None:
    (pods,) = series_of(bed, metric="pods", scope="cluster", step="1h", cluster="c1")
    assert pods["points"][0]["usage_max"] == max(
        ns_pods("web", i) + ns_pods("db", i) for i in range(12)
    )
    (nodes,) = series_of(bed, metric="nodes", scope="cluster", step="1d", cluster="c1")
    assert nodes["points"][0]["usage_avg"] == 3
    pools = series_of(bed, metric="nodes", scope="nodepool", step="1d", cluster="c1")
    assert [s["points"][0]["usage_avg"] for s in pools] == [2, 1]
    # No per-node or per-pool pod counts, no per-namespace node counts: empty, not an error.
    for metric, scope in (("pods", "node"), ("pods", "nodepool"), ("nodes", "namespace")):
        assert series_of(bed, metric=metric, scope=scope, step="1h") == []


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
    series = series_of(bed, metric=metric, scope=scope, step="1h")
    assert series
    for s in series:
        assert set(s["key"]) == key
        assert all(s["key"].values())
        assert len(s["points"]) == 3
        for p in s["points"]:
            assert set(p) == {"t", *POINT_FIELDS}
            assert {f for f in POINT_FIELDS if p[f] is None} == null_fields, p


def test_node_series(bed: Bed) -> None:
    series = series_of(bed, metric="memory", scope="node", step="1d")
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
        (s,) = series_of(bed, metric="cpu", scope="cluster", step="1h", cluster="c1", **window)
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
    assert series_of(bed, **{"from": "2026-10-14T03:00:00Z"}) == []


def test_cluster_filter(bed: Bed) -> None:
    assert [s["key"] for s in series_of(bed, scope="cluster", step="1h")] == [
        {"cluster": "c1"},
        {"cluster": "c2"},
    ]
    (c2,) = series_of(bed, scope="cluster", step="1h", cluster="c2")
    assert c2["key"] == {"cluster": "c2"}
    assert c2["points"][0]["usage_avg"] == pytest.approx(
        sum(node_cpu("c2", "m1", i) for i in range(12)) / 12
    )
    assert series_of(bed, scope="cluster", step="1h", cluster="nope") == []


def test_defaults_are_cpu_cluster_daily_over_the_last_30_days(bed: Bed) -> None:
    if datetime.now(UTC) < T0 + timedelta(days=31):
        pytest.skip("the test data lies within the last 30 days")
    r = trends(bed)
    assert r.status_code == 200, r.text
    assert r.json() == {"series": []}
    for to, days in (
        ("2026-11-13T00:00:00Z", ["2026-10-14T00:00:00Z"]),
        ("2026-11-14T00:00:00Z", []),
    ):
        r = trends(bed, cluster="c1", to=to)
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
    r = trends(bed, **params)
    assert r.status_code == 422, r.text
    body = r.json()
    assert [e["field"] for e in body["errors"]] == [field], body


# -- keys ------------------------------------------------------------------------------------


def test_keys_and_scopes(bed: Bed) -> None:
    c = bed.client
    assert trends(bed, "read").status_code == 200
    assert c.get("/v1/capacity/trends").status_code == 401
    assert c.get("/v1/projections").status_code == 401
    bogus = {"Authorization": "Bearer olk_nope"}
    assert c.get("/v1/capacity/trends", headers=bogus).status_code == 401
    assert c.get("/v1/projections", headers=bed.headers("read")).status_code == 200
    for path in ("/v1/projections/catch-up", "/v1/projections/rebuild"):
        assert c.post(path).status_code == 401
        for scope in ("read", "write"):
            r = c.post(path, headers=bed.headers(scope))
            assert r.status_code == 403, r.text
            assert "'admin' scope" in r.json()["detail"]


def test_catch_up_with_admin(bed: Bed) -> None:
    r = bed.client.post("/v1/projections/catch-up", headers=bed.headers("admin"))
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
    before = flat([series_of(bed, **q) for q in queries])
    assert len(before) > 500
    for params in ({"name": "capacity"}, {}):
        r = bed.client.post("/v1/projections/rebuild", params=params, headers=bed.headers("admin"))
        assert r.status_code == 200, r.text
        states = r.json()["projections"]
        assert all(s["lag"] == 0 for s in states), states
        assert capacity(states)["position"] == 7
        after = flat([series_of(bed, **q) for q in queries])
        assert [where for where, _ in after] == [where for where, _ in before]
        # DuckDB sums doubles in no fixed order: a replay may differ in the last bit or two.
        assert [v for _, v in after] == pytest.approx([v for _, v in before], rel=1e-12)


def test_rebuild_of_an_unknown_projection_is_422(bed: Bed) -> None:
    r = bed.client.post(
        "/v1/projections/rebuild",
        params={"name": ["capacity", "bogus"]},
        headers=bed.headers("admin"),
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


@pytest.mark.slow
def test_cli_delegates_to_the_server_holding_the_read_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(tmp_path)
    app = create_app(settings)
    engine = app.state.ledger.engine
    announce = announce_file(settings, monkeypatch)
    with serve_in_thread(app, announce=announce) as url:
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
