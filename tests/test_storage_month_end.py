"""Month-end storage forecasts kept by the storage projection: the same figures as a fit."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.payloads import cloudevent, sample

from analytics.outputs.report_data import gather
from analytics.outputs.report_model import Month
from analytics.readmodel.model import ReadModel
from analytics.readmodel.registry import default_projections
from analytics.readmodel.runner import Runner
from analytics.storage.projection import StorageProjection, forecasts, month_end_forecasts
from api.report.html import render
from store.contract import Event, validate_event
from store.ledger import Ledger

GIB = 2.0**30
START = datetime(2026, 9, 20)
DAYS = 41  # to 31 October
OCT, NOV, DEC = datetime(2026, 10, 1), datetime(2026, 11, 1), datetime(2026, 12, 1)
LATER = datetime(2026, 11, 26, 9)
# (cluster, labels, capacity GiB, fill at START, growth per day) of each volume.
VOLUMES: list[tuple[str, dict[str, str], float, float, float]] = [
    ("eks-a", {"namespace": "db", "persistentvolumeclaim": "data-0"}, 100, 0.40, 0.012),
    ("eks-a", {"namespace": "db", "persistentvolumeclaim": "data-1"}, 50, 0.70, 0.004),
    ("eks-a", {"namespace": "logs", "persistentvolumeclaim": "data-0"}, 200, 0.20, 0.0),
    ("eks-b", {"namespace": "db", "persistentvolumeclaim": "data-0"}, 20, 0.55, 0.009),
    # A claim its collector labels without a namespace.
    ("eks-b", {"persistentvolumeclaim": "scratch"}, 10, 0.30, 0.006),
]
JUST_BEFORE = timedelta(microseconds=1)


def rfc(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def day_events(seed: int = 0) -> list[Event]:
    """One samples event per cluster and day: used and capacity every 30 minutes."""
    rng = random.Random(seed)
    out = []
    for d in range(DAYS):
        for cluster in ("eks-a", "eks-b"):
            rows = []
            for c, labels, cap_gib, fill, growth in VOLUMES:
                if c != cluster:
                    continue
                cap = cap_gib * GIB
                for k in range(48):
                    t = START + timedelta(days=d, minutes=30 * k)
                    level = fill + growth * (d + k / 48) + rng.gauss(0, 0.002)
                    rows += [
                        sample("pvc_used_bytes", labels, rfc(t), round(level * cap)),
                        sample("pvc_capacity_bytes", labels, rfc(t), cap),
                    ]
            raw = cloudevent(
                "opsledger.metric.samples",
                {"samples": rows},
                id=f"{cluster}/day-{d}",
                time=rows[-1]["ts"],
                cluster=cluster,
                source="test/storage",
            )
            out.append(validate_event(raw, 0))
    return out


def late_event(t: datetime, used_ratio: float, n: int = 16) -> Event:
    """n late scrapes of data-1 (and of a claim first seen then) every 30 minutes from `t`."""
    rows = []
    for labels, cap in (
        ({"namespace": "db", "persistentvolumeclaim": "data-1"}, 50 * GIB),
        ({"namespace": "db", "persistentvolumeclaim": "late-0"}, 30 * GIB),
    ):
        for k in range(n):
            ts = rfc(t + timedelta(minutes=30 * k))
            rows += [
                sample("pvc_used_bytes", labels, ts, round(used_ratio * cap)),
                sample("pvc_capacity_bytes", labels, ts, cap),
            ]
    raw = cloudevent(
        "opsledger.metric.samples",
        {"samples": rows},
        id=f"late/{rfc(t)}",
        time=rows[-1]["ts"],
        cluster="eks-a",
        source="test/storage",
    )
    return validate_event(raw, 0)


def fitted(model: ReadModel, boundary: datetime, cluster: str | None = None) -> list[Any]:
    """forecasts() as the report asks for them: just before the month end, to the next."""
    horizon = (boundary + timedelta(days=32)).replace(day=1) - boundary
    return forecasts(model.cursor(), boundary - JUST_BEFORE, cluster=cluster, horizon=horizon)


def kept_rows(model: ReadModel) -> list[tuple[Any, ...]]:
    return model.cursor().execute("SELECT * FROM pvc_month_end ORDER BY ALL").fetchall()


def settled(model: ReadModel) -> list[datetime]:
    rows = model.cursor().execute("SELECT boundary FROM pvc_month_end_settled ORDER BY 1")
    return [r[0] for r in rows.fetchall()]


def fixed(now: datetime) -> Callable[[], datetime]:
    """A clock that stands still at `now`."""
    return lambda: now


def storage_runner(ledger: Ledger, model: ReadModel, now: datetime) -> Runner:
    return Runner(ledger, model, [StorageProjection()], clock=fixed(now))


@pytest.fixture
def model(tmp_path: Path) -> Any:
    m = ReadModel(tmp_path / "read.duckdb")
    yield m
    m.close()


@pytest.mark.slow
def test_each_ended_month_is_kept_and_equals_a_fit(ledger: Ledger, model: ReadModel) -> None:
    ledger.append(day_events())
    storage_runner(ledger, model, LATER).catch_up()
    # Samples from September and October: the ends of both are kept; December is to come.
    assert settled(model) == [OCT, NOV]
    con = model.cursor()
    for boundary in (OCT, NOV):
        want = fitted(model, boundary)
        assert len(want) == len(VOLUMES)
        assert month_end_forecasts(con, boundary) == want
        for cluster in ("eks-a", "eks-b"):
            assert month_end_forecasts(con, boundary, cluster) == fitted(model, boundary, cluster)
    n = con.execute("SELECT boundary, count(*) FROM pvc_month_end GROUP BY 1 ORDER BY 1")
    assert n.fetchall() == [(OCT, len(VOLUMES)), (NOV, len(VOLUMES))]
    scratch = [f for f in month_end_forecasts(con, NOV) if f["pvc"] == "scratch"]
    assert [(f["cluster"], f["namespace"]) for f in scratch] == [("eks-b", "")]
    assert month_end_forecasts(con, DEC) == fitted(model, DEC)  # not kept: fitted on request


@pytest.mark.slow
def test_a_month_is_kept_only_once_it_has_ended(ledger: Ledger, model: ReadModel) -> None:
    ledger.append(day_events())
    storage_runner(ledger, model, datetime(2026, 10, 31, 23, 59)).catch_up()
    assert settled(model) == [OCT] and kept_rows(model)
    # No new event, but the clock passed the month's end: the next catch-up keeps it.
    storage_runner(ledger, model, NOV).catch_up()
    assert settled(model) == [OCT, NOV]
    assert month_end_forecasts(model.cursor(), NOV) == fitted(model, NOV)


@pytest.mark.slow
def test_late_samples_make_kept_forecasts_stale_until_refitted(
    ledger: Ledger, model: ReadModel
) -> None:
    ledger.append(day_events())
    runner = storage_runner(ledger, model, LATER)
    runner.catch_up()
    con = model.cursor()
    before = {f["pvc"]: f for f in month_end_forecasts(con, NOV) if f["namespace"] == "db"}
    ledger.append([late_event(datetime(2026, 10, 31, 12), 0.95)])
    # Folded in, but the catch-up stops before settling (max_batches): the kept forecast of
    # data-1 is stale, and late-0 is new. Reads fit just those two again.
    runner.catch_up(max_batches=1)
    stale = con.execute("SELECT boundary, cluster, namespace, pvc FROM pvc_month_end_stale")
    assert sorted(stale.fetchall()) == [
        (NOV, "eks-a", "db", "data-1"),
        (NOV, "eks-a", "db", "late-0"),
    ]
    got = month_end_forecasts(con, NOV)
    assert got == fitted(model, NOV)
    after = {f["pvc"]: f for f in got if f["namespace"] == "db" and f["cluster"] == "eks-a"}
    assert after["data-1"]["status"] == "critical" and before["data-1"]["status"] != "critical"
    assert after["late-0"]["used_ratio"] == pytest.approx(0.95)
    runner.catch_up()
    assert con.execute("SELECT count(*) FROM pvc_month_end_stale").fetchone() == (0,)
    assert month_end_forecasts(con, NOV) == fitted(model, NOV)
    assert len(month_end_forecasts(con, NOV)) == len(VOLUMES) + 1
    # A sample after the month's end changes nothing kept for it.
    kept = kept_rows(model)
    ledger.append([late_event(datetime(2026, 11, 2), 0.10)])
    runner.catch_up()
    assert kept_rows(model) == kept
    # One scrape spanning the month's end (a collector back-filling): its October half is late.
    ledger.append([late_event(datetime(2026, 10, 31, 20), 0.99)])
    runner.catch_up(max_batches=1)
    stale = con.execute("SELECT DISTINCT boundary, pvc FROM pvc_month_end_stale ORDER BY ALL")
    assert stale.fetchall() == [(NOV, "data-1"), (NOV, "late-0")]
    assert month_end_forecasts(con, NOV) == fitted(model, NOV)
    runner.catch_up()
    assert kept_rows(model) != kept and month_end_forecasts(con, NOV) == fitted(model, NOV)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("late", "stale_ends"),
    [
        # Within the 35-day look-back of both October's and November's forecasts: the
        # second sample is at 27 September 00:00, exactly 35 days before 1 November.
        (datetime(2026, 9, 26, 23, 30), [OCT, NOV]),
        (datetime(2026, 9, 29, 12), [OCT, NOV]),
        # 26 September 23:00 and 23:30: more than 35 days before 1 November.
        (datetime(2026, 9, 26, 23), [OCT]),
    ],
)
def test_a_late_sample_is_stale_for_every_month_end_whose_window_holds_it(
    ledger: Ledger, model: ReadModel, late: datetime, stale_ends: list[datetime]
) -> None:
    ledger.append(day_events())
    runner = storage_runner(ledger, model, LATER)
    runner.catch_up()
    ledger.append([late_event(late, 0.95, n=2)])
    runner.catch_up(max_batches=1)
    con = model.cursor()
    stale = con.execute("SELECT DISTINCT boundary FROM pvc_month_end_stale ORDER BY 1")
    assert [r[0] for r in stale.fetchall()] == stale_ends
    for boundary in (OCT, NOV):
        assert month_end_forecasts(con, boundary) == fitted(model, boundary)
    runner.catch_up()
    for boundary in (OCT, NOV):
        assert month_end_forecasts(con, boundary) == fitted(model, boundary)
    ends = con.execute("SELECT DISTINCT boundary FROM pvc_month_end WHERE pvc = 'late-0'")
    assert sorted(r[0] for r in ends.fetchall()) == stale_ends


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
def test_catch_up_in_any_pages_and_clocks_equals_a_rebuild(
    ledger: Ledger, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    events = day_events(seed)
    events += [late_event(datetime(2026, 9, 30, 20), 0.9), late_event(datetime(2026, 10, 30), 0.5)]
    # Mostly in order, some days sent late.
    events.sort(key=lambda e: e.time_us + rng.randrange(0, 6) * 86_400_000_000)
    model = ReadModel(tmp_path / "incremental.duckdb")
    projection = StorageProjection()
    clocks = sorted(START + timedelta(days=rng.uniform(0, 70)) for _ in range(6))
    fed = 0
    try:
        for now in [*clocks, LATER]:
            k = rng.randint(1, max(1, len(events) - fed))
            ledger.append(events[fed : fed + k])
            fed += k
            projection.batch_events = rng.randint(1, 8)
            runner = Runner(ledger, model, [projection], clock=fixed(now))
            runner.catch_up(max_batches=rng.choice([1, 3, None]))
        ledger.append(events[fed:])
        Runner(ledger, model, [projection], clock=fixed(LATER)).catch_up()
        reference = ReadModel(":memory:")
        try:
            Runner(ledger, reference, [StorageProjection()], clock=fixed(LATER)).rebuild()
            assert settled(model) == settled(reference) == [OCT, NOV]
            assert kept_rows(model) == kept_rows(reference)
        finally:
            reference.close()
    finally:
        model.close()


@pytest.mark.slow
def test_the_report_is_the_same_whether_the_month_end_is_kept_or_fitted(
    ledger: Ledger, tmp_path: Path
) -> None:
    ledger.append(day_events())
    month = Month.parse("2026-10")
    pages = []
    for name, now in (("kept", LATER), ("fitted", datetime(2026, 10, 31, 23))):
        model = ReadModel(tmp_path / f"{name}.duckdb")
        try:
            Runner(ledger, model, default_projections(), clock=fixed(now)).catch_up()
            assert (NOV in settled(model)) == (name == "kept")
            data = gather(model.cursor(), ledger, month)
            assert data.storage.count == len(VOLUMES)
            pages.append(render(data))
        finally:
            model.close()
    assert pages[0] == pages[1]
