"""The month's spend forecast: weekday means over 56 days of history, the 80 % band, statuses."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.beds import Bed, make_bed
from support.payloads import cloudevent

from analytics.cost.forecast import forecast
from analytics.cost.projection import CostProjection
from analytics.readmodel.model import ReadModel
from analytics.readmodel.runner import Runner
from store.contract import validate_events
from store.ledger import Ledger
from store.migrate import upgrade

_ids = iter(range(10**6))


def cost(day: date, service: str, amount: float) -> dict[str, Any]:
    data = {"date": day.isoformat(), "service": service, "amount": amount, "currency": "USD"}
    return cloudevent("opsledger.cost.daily", data, id=f"c-{next(_ids)}", cluster=None)


def budget(month: str, amount: float) -> dict[str, Any]:
    data = {"month": month, "amount": amount, "currency": "USD"}
    return cloudevent("opsledger.budget.set", data, id=f"b-{next(_ids)}", cluster=None)


@pytest.fixture
def fold(tmp_path: Path) -> Iterator[Any]:
    """Append CloudEvents to a SQLite ledger and fold them into a read model: its cursor."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    ledger = Ledger.from_url(url)
    model = ReadModel(tmp_path / "rm.duckdb")

    def run(raws: list[dict[str, Any]]) -> Any:
        ledger.append(validate_events(raws))
        Runner(ledger, model, [CostProjection()]).catch_up()
        return model.cursor()

    try:
        yield run
    finally:
        model.close()
        ledger.engine.dispose()


def oracle(daily: dict[date, float], month: str, as_of: datetime) -> dict[str, Any]:
    """design §6 written again: D(d) per day → spent, forecast and the 80 % band."""
    year, mon = int(month[:4]), int(month[5:7])
    first = date(year, mon, 1)
    last = (date(year + mon // 12, mon % 12 + 1, 1)) - timedelta(days=1)
    days = {d: v for d, v in daily.items() if d < as_of.date()}
    in_month = [d for d in days if first <= d <= last]
    spent = sum(days[d] for d in in_month)
    start = max(in_month) + timedelta(days=1) if in_month else first
    remaining = [start + timedelta(days=i) for i in range((last - start).days + 1)]
    history = sorted(d for d in days if start - timedelta(days=56) <= d < start)
    values = np.array([days[d] for d in history])
    mu = {}
    for w in range(7):
        same = [days[d] for d in history if d.weekday() == w]
        mu[w] = float(np.mean(same)) if same else float(np.mean(values))
    total = spent + sum(mu[r.weekday()] for r in remaining)
    residuals = np.array([days[d] - mu[d.weekday()] for d in history])
    sigma = float(np.std(residuals, ddof=1)) if len(history) >= 2 else 0.0
    half = 1.2815515655446004 * sigma * math.sqrt(len(remaining))
    return {
        "spent": spent,
        "days": len(in_month),
        "remaining": len(remaining),
        "forecast": total,
        "low": total - half,
        "high": total + half,
    }


def weekly_history(rng: random.Random, first: date, last: date) -> dict[date, float]:
    """Weekdays cost about 100, weekends about 40: a shape a run rate gets wrong."""
    out = {}
    d = first
    while d <= last:
        base = 40.0 if d.weekday() >= 5 else 100.0
        out[d] = round(base + rng.uniform(-8, 8), 2)
        d += timedelta(days=1)
    return out


def test_forecast_is_weekday_aware_and_matches_the_oracle(fold: Any) -> None:
    rng = random.Random(12)
    daily = weekly_history(rng, date(2026, 8, 20), date(2026, 10, 12))
    raws = []
    for d, v in daily.items():
        # Split over two services: D(d) is their sum.
        raws += [cost(d, "Amazon EC2", round(v * 0.75, 2)), cost(d, "Amazon EKS", 0.0)]
        raws.append(cost(d, "Amazon S3", round(v - round(v * 0.75, 2), 2)))
    con = fold(raws)
    as_of = datetime(2026, 10, 15, 9, 30)
    got = forecast(con, "2026-10", as_of)
    want = oracle(daily, "2026-10", as_of)
    assert got["as_of"] == "2026-10-15T09:30:00Z"
    assert got["month"] == "2026-10" and got["currency"] == "USD"
    # Data through the 12th: the 13th is the first remaining day, not as_of's date.
    assert got["days_with_data"] == 12 == want["days"]
    assert got["remaining_days"] == 19 == want["remaining"]
    assert got["spent_to_date"] == pytest.approx(want["spent"], rel=1e-12)
    assert got["forecast"] == pytest.approx(want["forecast"], rel=1e-12)
    assert got["low"] == pytest.approx(want["low"], rel=1e-12)
    assert got["high"] == pytest.approx(want["high"], rel=1e-12)
    assert got["low"] < got["forecast"] < got["high"]
    # October 2026 has 22 weekdays and 9 weekend days: about 22·100 + 9·40 = 2560, far from
    # the run rate over the first 12 days.
    assert got["forecast"] == pytest.approx(2560, rel=0.03)
    assert got["budget"] is None and got["status"] == "no_budget"
    assert got["expansions"] == [] and got["out_of_range"] == []


def test_known_figures_by_hand(fold: Any) -> None:
    # History: Mondays 10, every other day 20, over the 56 days before 2026-11-03 (a Tuesday);
    # November 1 and 2 are spent: 30 + 40. Remaining: Nov 3..30 = 28 days, 4 of each weekday.
    daily = {}
    d = date(2026, 9, 8)
    while d < date(2026, 11, 1):
        daily[d] = 10.0 if d.weekday() == 0 else 20.0
        d += timedelta(days=1)
    daily[date(2026, 11, 1)], daily[date(2026, 11, 2)] = 30.0, 40.0
    con = fold([cost(day, "Amazon EC2", v) for day, v in daily.items()])
    got = forecast(con, "2026-11", datetime(2026, 11, 20))
    # History before the 3rd: Sep 8 .. Nov 2, 56 days. Monday mean: 10 (Sep 14 .. Oct 26) and
    # Nov 2 (40): (7·10 + 40) / 8 = 13.75; Sunday: (7·20 + 30) / 8 = 21.25; others 20.
    assert got["spent_to_date"] == 70.0 and got["days_with_data"] == 2
    assert got["remaining_days"] == 28
    assert got["forecast"] == pytest.approx(70 + 4 * 13.75 + 4 * 21.25 + 20 * 20)
    # Residuals: Mondays 7 × (−3.75) and one +26.25; Sundays 7 × (−1.25) and one +8.75.
    residuals = [-3.75] * 7 + [26.25] + [-1.25] * 7 + [8.75] + [0.0] * 40
    sigma = float(np.std(residuals, ddof=1))
    half = 1.2815515655446004 * sigma * math.sqrt(28)
    assert got["high"] - got["forecast"] == pytest.approx(half)
    assert got["forecast"] - got["low"] == pytest.approx(half)


@pytest.mark.parametrize(
    ("amount", "status"),
    [
        (None, "no_budget"),
        # forecast 31 × 100 = 3100 with σ = 0: over when 3100 > 1.1 × budget.
        (2800.0, "over_budget"),
        (2900.0, "within_budget"),
    ],
)
def test_status_against_the_budget_without_spread(
    fold: Any, amount: float | None, status: str
) -> None:
    d, raws = date(2026, 9, 1), []
    while d < date(2026, 10, 1):
        raws.append(cost(d, "Amazon EC2", 100.0))
        d += timedelta(days=1)
    if amount is not None:
        raws.append(budget("2026-10", amount))
    got = forecast(fold(raws), "2026-10", datetime(2026, 10, 1))
    assert got["forecast"] == pytest.approx(3100.0)
    assert got["low"] == got["high"] == pytest.approx(3100.0)
    assert got["spent_to_date"] == 0 and got["days_with_data"] == 0
    assert got["budget"] == amount and got["status"] == status


def test_at_risk_when_only_the_band_passes_the_budget(fold: Any) -> None:
    # Alternating 90/110 by week: σ > 0, forecast ≈ 3100 ≤ 1.1 × 2820 = 3102, high above it.
    d, raws = date(2026, 8, 6), []
    while d < date(2026, 10, 1):
        raws.append(cost(d, "Amazon EC2", 90.0 if (d.toordinal() // 7) % 2 else 110.0))
        d += timedelta(days=1)
    raws.append(budget("2026-10", 2820.0))
    got = forecast(fold(raws), "2026-10", datetime(2026, 10, 1))
    assert got["forecast"] <= 2820.0 * 1.1 < got["high"]
    assert got["status"] == "at_risk"


def test_a_month_with_no_data(fold: Any) -> None:
    con = fold([budget("2027-01", 500.0), cost(date(2026, 1, 1), "Amazon EC2", 5.0)])
    got = forecast(con, "2027-01", datetime(2027, 2, 3))
    assert got["as_of"] == "2027-02-01T00:00:00Z"  # clamped to the month end
    assert got["spent_to_date"] == 0 and got["days_with_data"] == 0
    assert got["remaining_days"] == 31
    assert got["forecast"] is None and got["low"] is None and got["high"] is None
    assert got["budget"] == 500.0 and got["status"] == "no_data"
    got = forecast(con, "2026-03", datetime(2026, 3, 10))
    assert got["forecast"] is None and got["status"] == "no_budget"


def test_restated_days_keep_the_amount_recorded_last(fold: Any) -> None:
    d, raws = date(2026, 9, 1), []
    while d < date(2026, 10, 4):
        raws.append(cost(d, "Amazon EC2", 50.0))
        d += timedelta(days=1)
    fold(raws)
    # Cost Explorer restates the last days: Oct 2 and 3 again, and Sep 30 in history.
    con = fold(
        [
            cost(date(2026, 10, 2), "Amazon EC2", 80.0),
            cost(date(2026, 10, 3), "Amazon EC2", 70.0),
            cost(date(2026, 9, 30), "Amazon EC2", 64.0),
        ]
    )
    got = forecast(con, "2026-10", datetime(2026, 10, 20))
    assert got["spent_to_date"] == 50.0 + 80.0 + 70.0
    daily = {date(2026, 9, 1) + timedelta(days=i): 50.0 for i in range(33)}
    daily |= {date(2026, 10, 2): 80.0, date(2026, 10, 3): 70.0, date(2026, 9, 30): 64.0}
    want = oracle(daily, "2026-10", datetime(2026, 10, 20))
    assert got["forecast"] == pytest.approx(want["forecast"], rel=1e-12)
    assert got["high"] == pytest.approx(want["high"], rel=1e-12)


def test_days_on_or_after_as_of_are_not_known_yet(fold: Any) -> None:
    raws = [cost(date(2026, 9, 1) + timedelta(days=i), "Amazon EC2", 10.0) for i in range(45)]
    con = fold(raws)  # Sep 1 .. Oct 15
    got = forecast(con, "2026-10", datetime(2026, 10, 5, 23, 59))
    assert got["days_with_data"] == 4 and got["spent_to_date"] == 40.0
    assert got["remaining_days"] == 27 and got["forecast"] == pytest.approx(310.0)
    # A month in the future: its days and as_of's own are unknown; history before as_of counts.
    got = forecast(con, "2026-12", datetime(2026, 10, 10))
    assert got["days_with_data"] == 0 and got["forecast"] == pytest.approx(310.0)


def test_expansions_are_listed_as_given(fold: Any) -> None:
    con = fold([cost(date(2026, 9, 30), "Amazon EC2", 10.0)])
    wanted = [{"target": "prod/general", "monthly_cost": 280.32}]
    got = forecast(con, "2026-10", datetime(2026, 10, 2), wanted)
    assert got["expansions"] == wanted


# -- the route -------------------------------------------------------------------------------


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    with make_bed(tmp_path, projection_interval_seconds=3600) as b:
        yield b


def test_the_route_answers_the_forecast(bed: Bed) -> None:
    raws = [cost(date(2026, 9, 1) + timedelta(days=i), "Amazon EC2", 10.0) for i in range(40)]
    r = bed.post_events([*raws, budget("2026-10", 250.0)])
    assert r.status_code == 200, r.text
    bed.caught_up()
    r = bed.get("/v1/cost/forecast", month="2026-10", as_of="2026-10-11T00:00:00+02:00")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["as_of"] == "2026-10-10T22:00:00Z"
    assert body["spent_to_date"] == 90.0 and body["forecast"] == pytest.approx(310.0)
    assert body["status"] == "over_budget" and body["expansions"] == []
    assert set(body) >= {
        "month", "as_of", "currency", "spent_to_date", "days_with_data", "remaining_days",
        "forecast", "low", "high", "budget", "status", "expansions",
    }  # fmt: skip
    r = bed.get("/v1/cost/forecast", month="2026-10")
    assert r.status_code == 200 and r.json()["month"] == "2026-10"
    # Without a month: as_of's.
    r = bed.get("/v1/cost/forecast", as_of="2026-10-11T00:00:00Z")
    assert r.status_code == 200 and r.json()["month"] == "2026-10"
    assert r.json()["forecast"] == pytest.approx(310.0)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"month": "2026-13"}, "query.month"),
        ({"month": "October"}, "query.month"),
        ({"month": "2026-10", "as_of": "yesterday"}, "query.as_of"),
        ({"month": "2026-10", "as_of": "2200-01-01T00:00:00Z"}, "query.as_of"),
    ],
)
def test_bad_parameters_are_422_naming_the_field(
    bed: Bed, params: dict[str, str], field: str
) -> None:
    r = bed.get("/v1/cost/forecast", **params)
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == [field]


def test_keys(bed: Bed) -> None:
    assert bed.client.get("/v1/cost/forecast", params={"month": "2026-10"}).status_code == 401
    bogus = {"Authorization": "Bearer olk_nope"}
    r = bed.client.get("/v1/cost/forecast", params={"month": "2026-10"}, headers=bogus)
    assert r.status_code == 401
    # Every scope covers read: no key is refused with 403 here.
    for scope in ("read", "write", "admin", "query"):
        assert bed.get("/v1/cost/forecast", scope, month="2026-10").status_code == 200
