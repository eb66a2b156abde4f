"""The cost projection: latest amount per day and service, run-rate projection, budget rule."""

from __future__ import annotations

import random
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from support.payloads import cloudevent

from analytics.cost.projection import CostProjection, month_cost
from analytics.readmodel.model import ReadModel
from analytics.readmodel.runner import Runner
from store.contract import validate_events
from store.ledger import Ledger


def cost(i: int, day: str, service: str, amount: float) -> dict[str, Any]:
    data = {"date": day, "service": service, "amount": amount, "currency": "USD"}
    return cloudevent("opsledger.cost.daily", data, id=f"c-{i}", cluster=None)


def budget(i: int, month: str, amount: float) -> dict[str, Any]:
    data = {"month": month, "amount": amount, "currency": "USD"}
    return cloudevent("opsledger.budget.set", data, id=f"b-{i}", cluster=None)


def project(
    ledger: Ledger, tmp_path: Path, raws: list[dict[str, Any]], pages: int = 1
) -> ReadModel:
    for k in range(pages):
        chunk = raws[k::pages]
        if chunk:
            ledger.append(validate_events(chunk))
    model = ReadModel(tmp_path / "rm.duckdb")
    Runner(ledger, model, [CostProjection()]).catch_up()
    return model


def test_month_to_date_spend_is_projected_at_the_run_rate(ledger: Ledger, tmp_path: Path) -> None:
    rng = random.Random(5)
    raws, spend = [], {}
    for day in range(1, 11):  # Oct 1..10
        for service in ("Amazon EKS", "Amazon EC2", "Amazon S3"):
            amount = round(rng.uniform(10, 500), 2)
            raws.append(cost(len(raws), f"2026-10-{day:02d}", service, amount))
            spend[(day, service)] = amount
    # A restated day: the amount recorded last wins.
    raws.append(cost(len(raws), "2026-10-03", "Amazon EC2", 999.0))
    spend[(3, "Amazon EC2")] = 999.0
    raws.append(cost(len(raws), "2026-11-01", "Amazon EC2", 50.0))  # another month
    raws += [budget(0, "2026-10", 9000.0), budget(1, "2026-10", 10_000.0)]
    model = project(ledger, tmp_path, raws)
    try:
        got = month_cost(model.cursor(), "2026-10", date(2026, 10, 26))
    finally:
        model.close()
    total = sum(spend.values())
    assert got["spend_to_date"] == pytest.approx(total, rel=1e-12)
    assert got["days_elapsed"] == 10 and got["days_in_month"] == 31
    assert got["projected"] == pytest.approx(total / 10 * 31, rel=1e-12)
    assert got["budget"] == 10_000.0
    assert got["over_budget"] is (total / 10 * 31 > 11_000.0)
    assert [d["date"] for d in got["daily"]] == [f"2026-10-{d:02d}" for d in range(1, 11)]
    ec2 = next(s for s in got["by_service"] if s["service"] == "Amazon EC2")
    assert ec2["amount"] == pytest.approx(
        sum(a for (_, s), a in spend.items() if s == "Amazon EC2")
    )


@pytest.mark.parametrize(("daily", "over"), [(354.83, False), (354.84, True)])
def test_over_budget_means_more_than_ten_percent_over(
    ledger: Ledger, tmp_path: Path, daily: float, over: bool
) -> None:
    # 31 × 354.83 = 10999.73 (≤ 11000, within 10 %); 31 × 354.84 = 11000.04 (over).
    raws = [cost(d, f"2026-10-{d:02d}", "Amazon EKS", daily) for d in range(1, 32)]
    model = project(ledger, tmp_path, [*raws, budget(0, "2026-10", 10_000.0)], pages=3)
    try:
        got = month_cost(model.cursor(), "2026-10", date(2026, 11, 1))
    finally:
        model.close()
    assert got["over_budget"] is over and got["days_elapsed"] == 31


def test_a_month_without_data(ledger: Ledger, tmp_path: Path) -> None:
    model = project(ledger, tmp_path, [budget(0, "2026-12", 5.0)])
    try:
        got = month_cost(model.cursor(), "2026-12", date(2026, 12, 31))
    finally:
        model.close()
    assert got["spend_to_date"] == 0 and got["projected"] is None and got["over_budget"] is False
    assert got["budget"] == 5.0 and got["currency"] == "USD"
