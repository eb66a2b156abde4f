"""Sustained runs, growth, headroom and PVC forecasts, from hand-made samples with known answers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.beds import Bed, make_bed

from store.contract import batch_from_columns, samples_event

CLUSTER = "c1"
STEP = 300  # seconds between samples
T0 = int(datetime(2026, 9, 1, tzinfo=UTC).timestamp())
DAY = 86_400


def add(bed: Bed, event_id: str, series: list[tuple[str, dict[str, str]]], cols: list[Any]) -> None:
    """Append one samples event from (series index, ts seconds, value) columns."""
    sidx, ts, values = (np.asarray(c) for c in cols)
    batch = batch_from_columns(series, sidx, (ts * 1_000_000).astype(np.int64), values)
    bed.ledger.append(
        [samples_event("test/samples", event_id, int(ts.min()) * 10**6, CLUSTER, batch)]
    )


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    """A ledger, the app with its projector (catching up only when told), keys."""
    with make_bed(tmp_path, projection_interval_seconds=3600) as b:
        yield b


def node_series(node: str, pool: str) -> list[tuple[str, dict[str, str]]]:
    labels = {"node": node, "nodepool": pool, "zone": "z1"}
    return [("node_cpu_usage_cores", labels), ("node_cpu_allocatable_cores", labels)]


def utilisation_run(bed: Bed, event_id: str, start: int, profile: list[float]) -> None:
    """One node (alone in pool p1) at the given utilisation per 5-minute sample, 10 cores."""
    ts = np.array([start + i * STEP for i in range(len(profile))], dtype=np.int64)
    n = len(ts)
    cols = [
        np.concatenate([np.zeros(n, int), np.ones(n, int)]),
        np.concatenate([ts, ts]),
        np.concatenate([np.array(profile) * 10.0, np.full(n, 10.0)]),
    ]
    add(bed, event_id, node_series("n1", "p1"), cols)


def test_sustained_runs_need_an_hour_above_85_and_break_on_gaps(bed: Bed) -> None:
    # 0-70 min hot (15 samples: a 70 min run), 75-100 cool, 105-155 hot (50 min: too short).
    profile = [0.9] * 15 + [0.5] * 6 + [0.95] * 11 + [0.4] * 4
    utilisation_run(bed, "a", T0, profile)
    # Next day: hot 0-40 min, a 20-minute hole, hot again 60-100 min: two short runs, none kept.
    utilisation_run(bed, "b1", T0 + DAY, [0.9] * 9)
    utilisation_run(bed, "b2", T0 + DAY + 3600, [0.9] * 9)
    bed.caught_up()
    r = bed.client.get(
        "/v1/capacity/sustained",
        params={"from": "2026-09-01T00:00:00Z", "to": "2026-09-03T00:00:00Z"},
        headers=bed.headers("read"),
    )
    assert r.status_code == 200, r.text
    runs = r.json()["runs"]
    scopes = sorted((x["scope"], x["resource"]) for x in runs)
    assert scopes == [("cluster", "cpu"), ("node", "cpu"), ("nodepool", "cpu")]
    for run in runs:
        assert run["start"] == "2026-09-01T00:00:00Z"
        assert run["end"] == "2026-09-01T01:10:00Z"
        assert run["duration_seconds"] == 4200.0
        assert run["samples"] == 15
        assert run["utilization_avg"] == pytest.approx(0.9)
    empty = bed.client.get(
        "/v1/capacity/sustained",
        params={"from": "2026-09-02T00:00:00Z", "to": "2026-09-03T00:00:00Z"},
        headers=bed.headers("read"),
    )
    assert empty.json()["runs"] == []


def test_growth_compares_month_averages(bed: Bed) -> None:
    # September at 2 cores used, October at 3: +50 %; allocatable 10 both months.
    for day in range(61):
        used = 2.0 if day < 30 else 3.0
        start = T0 + day * DAY
        utilisation_run(bed, f"d{day}", start, [used / 10.0] * 3)
    bed.caught_up()
    r = bed.client.get(
        "/v1/capacity/growth",
        params={"month": "2026-10", "metric": "cpu", "scope": "nodepool"},
        headers=bed.headers("read"),
    )
    assert r.status_code == 200, r.text
    [item] = r.json()["items"]
    assert item["key"] == {"cluster": CLUSTER, "nodepool": "p1"}
    assert item["usage"]["month"] == pytest.approx(3.0)
    assert item["usage"]["previous_month"] == pytest.approx(2.0)
    assert item["usage"]["growth"] == pytest.approx(0.5)
    assert item["allocatable"]["growth"] == pytest.approx(0.0)
    bad = bed.client.get(
        "/v1/capacity/growth", params={"month": "2026-13"}, headers=bed.headers("read")
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "query.month"


def test_headroom_extrapolates_the_daily_trend(bed: Bed) -> None:
    # Two nodes of 10 cores in p1; each uses 4 + 0.1/day cores: the pool grows 0.2 a day from 8.
    labels = [*node_series("n1", "p1"), *node_series("n2", "p1")]
    for day in range(20):
        ts = np.array([T0 + day * DAY + i * STEP for i in range(3)], dtype=np.int64)
        used = 4.0 + 0.1 * day
        cols = [
            np.repeat(np.arange(4), 3),
            np.tile(ts, 4),
            np.repeat([used, 10.0, used, 10.0], 3),
        ]
        add(bed, f"h{day}", labels, cols)
    bed.caught_up()
    r = bed.client.get(
        "/v1/capacity/headroom",
        params={"as_of": "2026-09-21T00:00:00Z"},
        headers=bed.headers("read"),
    )
    assert r.status_code == 200, r.text
    items = {(i["nodepool"], i["resource"]): i for i in r.json()["items"]}
    pool = items[("p1", "cpu")]
    assert pool["basis"] == "usage"
    assert pool["level"] == pytest.approx(11.8)  # the last day: 2 x 5.9
    assert pool["growth_per_day"] == pytest.approx(0.2)
    # 85 % of 20 cores is 17: (17 - 11.8) / 0.2 = 26 days; N-1 leaves 10 cores: 8.5 is passed.
    assert pool["days_to_85"] == pytest.approx(26.0)
    assert pool["days_to_85_n_minus_1"] == 0.0
    assert pool["largest_node_allocatable"] == 10.0
    assert pool["eta_85"].startswith("2026-10-17T")


def pvc_series(name: str) -> list[tuple[str, dict[str, str]]]:
    labels = {"namespace": "db", "persistentvolumeclaim": name}
    return [("pvc_used_bytes", labels), ("pvc_capacity_bytes", labels)]


def test_storage_forecast_of_a_steady_volume(bed: Bed) -> None:
    # 100 GiB volume at 50 %, growing 1 GiB a day for 14 days, hourly samples.
    gib = 2**30
    hours = np.arange(14 * 24, dtype=np.int64)
    ts = T0 + hours * 3600
    used = 50 * gib + hours / 24 * gib
    cols = [
        np.concatenate([np.zeros(len(ts), int), np.ones(len(ts), int)]),
        np.concatenate([ts, ts]),
        np.concatenate([used, np.full(len(ts), 100.0 * gib)]),
    ]
    add(bed, "pvc", pvc_series("data-0"), cols)
    bed.caught_up()
    as_of = "2026-09-15T00:00:00Z"  # just after the last sample (14 days, 63.96 GiB)
    r = bed.client.get("/v1/storage/forecast", params={"as_of": as_of}, headers=bed.headers("read"))
    assert r.status_code == 200, r.text
    [item] = r.json()["items"]
    assert item["pvc"] == "data-0" and item["method"] != "predict_linear"
    assert item["growth_bytes_per_day"] == pytest.approx(gib, rel=0.05)
    # From about 64 GiB at 1 GiB/day: 90 % (90 GiB) in about 26 days.
    assert item["days_to_90"] == pytest.approx(26.0, abs=1.5)
    assert item["status"] == "forecast"
    assert item["eta_90_low"] <= item["eta_90"] <= item["eta_90_high"]

    earlier = bed.client.get(
        "/v1/storage/forecast",
        params={"as_of": "2026-09-08T00:00:00Z"},
        headers=bed.headers("read"),
    ).json()["items"][0]
    assert earlier["used_bytes"] < item["used_bytes"]  # only samples up to as_of
    assert earlier["days_to_90"] > item["days_to_90"]

    linear = bed.client.get(
        "/v1/storage/forecast",
        params={"as_of": as_of, "method": "predict_linear", "window": "1d"},
        headers=bed.headers("read"),
    ).json()["items"][0]
    assert linear["method"] == "predict_linear"
    assert linear["growth_bytes_per_day"] == pytest.approx(gib, rel=1e-6)

    bad = bed.client.get(
        "/v1/storage/forecast", params={"window": "soon"}, headers=bed.headers("read")
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "query.window"


def test_forecasts_as_of_now_are_reused_for_a_while_and_computed_one_at_a_time(
    bed: Bed,
) -> None:
    gib = 2**30
    now = int(time.time()) // STEP * STEP
    ts = now - np.arange(7 * 24, dtype=np.int64)[::-1] * 3600
    used = 50 * gib + np.arange(len(ts)) / 24 * gib
    cols = [
        np.concatenate([np.zeros(len(ts), int), np.ones(len(ts), int)]),
        np.concatenate([ts, ts]),
        np.concatenate([used, np.full(len(ts), 100.0 * gib)]),
    ]
    add(bed, "pvc-now", pvc_series("data-0"), cols)
    bed.caught_up()

    def forecast(**params: str) -> dict[str, Any]:
        r = bed.client.get("/v1/storage/forecast", params=params, headers=bed.headers("read"))
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    first = forecast()
    assert [i["pvc"] for i in first["items"]] == ["data-0"]
    # A volume appears: the forecast as of now is the one computed moments ago (its `as_of`
    # says so), while one as of an explicit time sees the new volume at once.
    add(bed, "pvc-new", pvc_series("data-1"), cols)
    bed.caught_up()
    time.sleep(1.1)  # as_of has second resolution
    again = forecast()
    assert again == first
    explicit = forecast(as_of=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert {i["pvc"] for i in explicit["items"]} == {"data-0", "data-1"}
    # Other parameters are another forecast.
    other = forecast(namespace="db")
    assert {i["pvc"] for i in other["items"]} == {"data-0", "data-1"}
    assert other["as_of"] > first["as_of"]

    # Concurrent requests are answered from one computation at a time, all the same.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: forecast(horizon="7d"), range(8)))
    assert all(a == answers[0] for a in answers)


def test_forecast_cache_off_computes_every_time(tmp_path: Path) -> None:
    with make_bed(tmp_path, projection_interval_seconds=3600, forecast_cache_seconds=0) as bed:
        client, headers = bed.client, bed.headers("read")
        first = client.get("/v1/storage/forecast", headers=headers).json()
        time.sleep(1.1)
        second = client.get("/v1/storage/forecast", headers=headers).json()
        assert second["as_of"] > first["as_of"]
