"""Cost amounts out of range in an old ledger: the report and /metrics say so, never 500 or +Inf.

The contract bounds an amount to ±1e12 (store/datamodels.py MAX_AMOUNT), but a ledger written
before holds whatever it took: these tests append such events as the ledger stores them,
bypassing only the contract, then read the month's report and scrape /metrics of a real app.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from support.beds import Bed, make_bed
from support.payloads import cloudevent

from analytics.cost.projection import CostProjection, month_cost
from analytics.readmodel.model import ReadModel
from analytics.readmodel.runner import Runner
from api.report.fmt import OUT_OF_RANGE, money
from store.contract import Event
from store.datamodels import MAX_AMOUNT
from store.ledger import Ledger
from store.migrate import upgrade
from store.timefmt import parse_rfc3339_us

HUGE = 1.7e308  # twice this is inf in float64
_ids = iter(range(10**6))


def unchecked(event_type: str, data: dict[str, Any], time: str) -> Event:
    """An event as `Ledger.append` stores it, built without the contract's checks."""
    digest = hashlib.blake2b(orjson.dumps([event_type, data]), digest_size=16).digest()
    return Event(
        "//old-collector/cost",
        f"old-{next(_ids)}",
        event_type,
        parse_rfc3339_us(time),
        None,
        None,
        data,
        None,
        digest,
    )


def cost_day(day: str, service: str, amount: float) -> Event:
    data = {"date": day, "service": service, "amount": amount, "currency": "USD"}
    return unchecked("opsledger.cost.daily", data, f"{day}T23:00:00Z")


def budget(month: str, amount: float) -> Event:
    data = {"month": month, "amount": amount, "currency": "USD"}
    return unchecked("opsledger.budget.set", data, f"{month}-01T00:00:00Z")


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    with make_bed(tmp_path, projection_interval_seconds=3600, metrics_cache_seconds=0) as b:
        yield b


def caught_up(bed: Bed) -> None:
    """Fold in what was appended behind the server's back (no ingest told it)."""
    r = bed.client.post("/v1/projections/catch-up", headers=bed.headers("admin"))
    assert r.status_code == 200, r.text
    assert all(p["lag"] == 0 for p in r.json()["projections"]), r.text


def text_of(page: str, section: str) -> str:
    """The visible text of one `<section id=...>` of the report."""
    start = page.index(f'id="{section}"')
    end = page.index("</section>", start)
    return html.unescape(re.sub(r"<[^>]+>", " ", page[start:end]))


def report(bed: Bed, month: str) -> str:
    r = bed.client.get(f"/reports/capacity/{month}", headers=bed.headers("read"))
    assert r.status_code == 200, r.text[:2000]
    return r.text


def scrape(bed: Bed) -> dict[str, float]:
    r = bed.client.get("/metrics", headers=bed.headers("read"))
    assert r.status_code == 200, r.text
    out = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_the_report_marks_an_overflowing_month_out_of_range(bed: Bed) -> None:
    bed.ledger.append(
        [
            cost_day("2026-10-01", "Amazon EC2", HUGE),
            cost_day("2026-10-02", "Amazon EC2", HUGE),
            cost_day("2026-10-02", "Amazon EKS", 72.5),
            budget("2026-10", 10_000.0),
        ]
    )
    caught_up(bed)
    page = report(bed, "2026-10")
    cost = text_of(page, "cost")
    assert not re.search(r"\b(inf|nan)\b", cost + text_of(page, "summary"), re.I)
    assert "Spend out of range" in " ".join(cost.split())
    assert "2 daily amounts" in cost and "1,000,000,000,000" in cost
    rows = re.sub(r"\s+", " ", cost)
    assert "2026-10-01 Amazon EC2 out of range" in rows
    assert "2026-10-02 Amazon EC2 out of range" in rows
    # The other service's spend is a real sum and still shows.
    assert "Amazon EKS 72 USD" in rows
    start = page.index('id="cost"')
    assert "<svg" not in page[start : page.index("</section>", start)]  # no made-up chart
    summary = " ".join(text_of(page, "summary").split())
    assert "Spend against budget out of range 2 recorded amounts" in summary


def test_a_restated_day_brings_the_month_back(bed: Bed) -> None:
    bed.ledger.append([cost_day("2026-10-01", "Amazon EC2", -HUGE)])
    caught_up(bed)
    assert "Spend out of range" in " ".join(text_of(report(bed, "2026-10"), "cost").split())
    # What the report advises: record the right amount, through the contract this time.
    fix = cloudevent(
        "opsledger.cost.daily",
        {"date": "2026-10-01", "service": "Amazon EC2", "amount": 310.5, "currency": "USD"},
        id="restated",
        cluster=None,
        time="2026-10-05T00:00:00Z",
    )
    assert bed.post_events(fix).status_code == 200
    caught_up(bed)
    cost = " ".join(text_of(report(bed, "2026-10"), "cost").split())
    assert OUT_OF_RANGE not in cost and "310 USD spent" in cost


def test_a_budget_out_of_range_is_not_checked(bed: Bed) -> None:
    bed.ledger.append([cost_day("2026-10-01", "Amazon EKS", 100.0), budget("2026-10", HUGE)])
    caught_up(bed)
    page = report(bed, "2026-10")
    cost = " ".join(text_of(page, "cost").split())
    assert "100 USD spent" in cost and "budget set for this month is out of range" in cost
    assert "within budget" not in cost and "over budget (more" not in cost


def test_metrics_leave_overflowing_figures_out_and_count_them(bed: Bed) -> None:
    month = datetime.now(UTC).strftime("%Y-%m")
    day = f"{month}-01"
    bed.ledger.append(
        [
            cost_day(day, "Amazon EC2", HUGE),
            cost_day(day, "Amazon S3", HUGE),
            budget(month, 10_000.0),
        ]
    )
    caught_up(bed)
    got = scrape(bed)
    assert not any(v != v or abs(v) == float("inf") for v in got.values()), got
    assert got["opsledger_cost_out_of_range_amounts"] == 2.0
    assert not any(
        k.startswith(("opsledger_cost_month_spend", "opsledger_cost_month_proj")) for k in got
    )
    assert "opsledger_cost_over_budget" not in got  # unknown, so not claimed either way
    assert got['opsledger_cost_month_budget{currency="USD"}'] == 10_000.0
    assert not any(k.startswith("opsledger_metrics_errors") for k in got)

    bed.ledger.append([cost_day(day, "Amazon EC2", 50.0), cost_day(day, "Amazon S3", 25.0)])
    caught_up(bed)
    got = scrape(bed)
    assert got["opsledger_cost_out_of_range_amounts"] == 0.0
    assert got['opsledger_cost_month_spend{currency="USD"}'] == 75.0
    assert got["opsledger_cost_over_budget"] in (0.0, 1.0)


def test_amounts_at_the_bound_still_add_up(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    ledger = Ledger.from_url(url)
    services = ("a", "b", "c")
    ledger.append(
        [cost_day(f"2026-10-{d:02d}", s, MAX_AMOUNT) for d in range(1, 32) for s in services]
        + [cost_day("2026-10-01", "d", -MAX_AMOUNT), cost_day("2026-10-02", "e", MAX_AMOUNT * 1.5)]
    )
    model = ReadModel(tmp_path / "rm.duckdb")
    try:
        Runner(ledger, model, [CostProjection()]).catch_up()
        got = month_cost(model.cursor(), "2026-10", date(2026, 10, 31))
    finally:
        model.close()
    # One amount past the bound: only sums it enters are unknown.
    assert got["out_of_range"] == {
        "amounts": [{"date": "2026-10-02", "service": "e"}],
        "budget": False,
    }
    assert got["spend_to_date"] is None and got["projected"] is None
    by = {s["service"]: s["amount"] for s in got["by_service"]}
    assert by == {
        "a": 31 * MAX_AMOUNT,
        "b": 31 * MAX_AMOUNT,
        "c": 31 * MAX_AMOUNT,
        "d": -MAX_AMOUNT,
        "e": None,
    }
    daily = {d["date"]: d["amount"] for d in got["daily"]}
    assert daily["2026-10-01"] == 2 * MAX_AMOUNT and daily["2026-10-02"] is None


def test_money_never_prints_a_non_finite_amount() -> None:
    assert money(float("inf"), "USD") == OUT_OF_RANGE
    assert money(float("-inf"), "USD") == OUT_OF_RANGE
    assert money(float("nan"), None) == OUT_OF_RANGE
    assert money(None, "USD") == "–"
    assert money(1.7e308, "USD").endswith("USD")  # finite: printed, however absurd
