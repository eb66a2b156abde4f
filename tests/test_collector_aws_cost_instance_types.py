"""EC2 spend and hours per instance type from Cost Explorer, through moto and real ledgers.

moto's Cost Explorer answers GetCostAndUsage from a queue of results the test sets
(`/moto-api/static/ce/cost-and-usage-results`); a recording proxy in front of it shows the
requests the collector made. The crash test SIGKILLs a worker between two days' commits.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from support.aws_doubles import (
    Ec2Pager,
    epoch,
    fake_aws_env,
    fixed,
    kill,
    moto_server,
    post_json,
    reset_moto,
    start_worker,
)

from ingest.collectors.aws.collectors import AwsConfig, build
from ingest.collectors.aws.cost import CostCollector
from ingest.collectors.aws.cost_instance_types import InstanceTypeCostCollector
from ingest.collectors.runtime import run_once
from store.collectors import load_cursor
from store.ledger import Ledger, RecordedEvent

NAME = "aws/cost-instance-types"
TYPE = "opsledger.cost.instance_type.daily"
TYPES = ("m6i.2xlarge", "r6i.xlarge", "c6i.4xlarge")
#: On-demand hourly prices in us-gov-west-1 (USD), for figures that look like a real bill.
PRICE = {"m6i.2xlarge": 0.48, "r6i.xlarge": 0.3024, "c6i.4xlarge": 0.816}


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_aws_env(monkeypatch, tmp_path)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """One moto server for the module."""
    with moto_server() as url:
        yield url


@pytest.fixture
def ce(moto_url: str) -> Iterator[Ec2Pager]:
    """A fresh moto behind a recording proxy."""
    reset_moto(moto_url)
    proxy = Ec2Pager(moto_url)
    try:
        yield proxy
    finally:
        proxy.close()


def hours_of(day: int, i: int) -> float:
    """Instance hours of type i on 2026-10-<day>."""
    return 24.0 * (i + 1) + day


def group(
    instance_type: str,
    amount: float,
    hours: float,
    unit: str = "Hrs",
    metric: str = "UnblendedCost",
) -> dict[str, Any]:
    """One INSTANCE_TYPE group with the cost metric and UsageQuantity."""
    return {
        "Keys": [instance_type],
        "Metrics": {
            metric: {"Amount": f"{amount:.10f}", "Unit": "USD"},
            "UsageQuantity": {"Amount": f"{hours:.10f}", "Unit": unit},
        },
    }


def ce_day(
    day: int, *, bump: float = 0.0, types: tuple[str, ...] = TYPES, metric: str = "UnblendedCost"
) -> dict[str, Any]:
    """2026-10-<day> grouped by instance type, with the charges of no instance type."""
    start = f"2026-10-{day:02d}"
    end = datetime.fromtimestamp(epoch(start + "T00:00:00Z") + 86400, UTC).strftime("%Y-%m-%d")
    groups = [
        group(t, hours_of(day, i) * PRICE[t] + bump, hours_of(day, i), metric=metric)
        for i, t in enumerate(TYPES)
        if t in types
    ]
    groups.append(group("NoInstanceType", 3.5, 0.0, unit="N/A", metric=metric))
    return {"TimePeriod": {"Start": start, "End": end}, "Total": {}, "Groups": groups}


def seed(url: str, *results: dict[str, Any]) -> None:
    """Queue GetCostAndUsage answers, in the order the requests will come."""
    post_json(f"{url}/moto-api/static/ce/cost-and-usage-results", {"results": list(results)})


def config(url: str, **section: Any) -> AwsConfig:
    """Cost Explorer for a GovCloud account: billing in the standard partition, via `url`."""
    return AwsConfig.model_validate(
        {
            "region": "us-gov-west-1",
            "cost_explorer": {
                "region": "us-east-1",
                "endpoint_url": url,
                "backfill": "10d",
                **section,
            },
        }
    )


def collector(url: str, now: str, **section: Any) -> InstanceTypeCostCollector:
    """The instance-type collector of the section, its clock stopped at `now`."""
    (c,) = [c for c in build(config(url, **section), None) if c.name == NAME]
    assert isinstance(c, InstanceTypeCostCollector)
    c.clock = fixed(now)
    return c


def recorded(ledger: Ledger) -> list[RecordedEvent]:
    """Every instance-type cost event, in ledger order."""
    return [e for e in ledger.iter_all() if e.type == TYPE]


@pytest.mark.slow
def test_settled_days_per_instance_type_once(
    ce: Ec2Pager, moto_url: str, sqlite_ledger: Ledger
) -> None:
    # The first page ends inside 10-08 (one type of three), the second carries the rest and
    # 10-13, which is not settled at 05:00 on 10-14 and must not be recorded yet.
    page1 = {
        "ResultsByTime": [*(ce_day(d) for d in range(4, 8)), ce_day(8, types=TYPES[:1])],
        "NextPageToken": "page-2",
    }
    page2 = {
        "ResultsByTime": [
            ce_day(8, types=TYPES[1:]),
            *(ce_day(d) for d in range(9, 13)),
            ce_day(13, bump=-100),
        ]
    }
    seed(moto_url, page1, page2, {"ResultsByTime": [ce_day(13)]})

    first = run_once(sqlite_ledger, collector(ce.url, "2026-10-14T05:00:00Z"))
    assert (first.error, first.appended) == (None, 27)  # 10-04 .. 10-12, 3 types each
    assert load_cursor(sqlite_ledger.engine, NAME) == {"next_date": "2026-10-13"}
    requests = [json.loads(c["body"]) for c in ce.calls]
    assert len(requests) == 2 and requests[1]["NextPageToken"] == "page-2"
    assert requests[0] == {
        "TimePeriod": {"Start": "2026-10-04", "End": "2026-10-13"},
        "Granularity": "DAILY",
        "Filter": {
            "Dimensions": {"Key": "SERVICE", "Values": ["Amazon Elastic Compute Cloud - Compute"]}
        },
        "Metrics": ["UnblendedCost", "UsageQuantity"],
        "GroupBy": [{"Type": "DIMENSION", "Key": "INSTANCE_TYPE"}],
    }
    # Billing is in the standard partition: signed for us-east-1's Cost Explorer.
    assert all("/us-east-1/ce/aws4_request" in c["auth"] for c in ce.calls)

    same_day = run_once(sqlite_ledger, collector(ce.url, "2026-10-14T23:00:00Z"))
    assert (same_day.error, same_day.appended, len(ce.calls)) == (None, 0, 2)  # no call
    later = run_once(sqlite_ledger, collector(ce.url, "2026-10-15T05:00:00Z"))
    assert (later.error, later.appended) == (None, 3)

    counts = Counter((e.data["date"], e.data["instance_type"]) for e in recorded(sqlite_ledger))
    assert len(counts) == 30 and set(counts.values()) == {1}
    assert "NoInstanceType" not in {t for _, t in counts}
    by_key = {(e.data["date"], e.data["instance_type"]): e for e in recorded(sqlite_ledger)}
    m6i = by_key[("2026-10-08", "m6i.2xlarge")]
    assert m6i.id == "2026-10-08/m6i.2xlarge"
    assert m6i.source == "opsledger/collector/aws/cost-instance-types"
    assert m6i.cluster is None and m6i.time_us == int(epoch("2026-10-09T00:00:00Z") * 1e6)
    assert dict(m6i.data or {}) == {
        "date": "2026-10-08",
        "instance_type": "m6i.2xlarge",
        "amount": pytest.approx(32 * 0.48),
        "usage_hours": 32.0,
        "currency": "USD",
    }
    c6i = by_key[("2026-10-13", "c6i.4xlarge")]  # the settled figures, not the partial ones
    assert (c6i.data["amount"], c6i.data["usage_hours"]) == (pytest.approx(85 * 0.816), 85.0)


@pytest.mark.slow
def test_sigkill_between_days_then_rerun_records_each_day_once(
    ce: Ec2Pager, moto_url: str, backend_url: str, ledger: Ledger
) -> None:
    # The killed run gets 10-04 .. 10-12; the rerun (from 10-05) gets figures that restate
    # 10-04, which must neither be recorded again nor conflict.
    seed(
        moto_url,
        {"ResultsByTime": [ce_day(d) for d in range(4, 13)]},
        {"ResultsByTime": [ce_day(d, bump=0.5) for d in range(4, 13)]},
    )
    proc = start_worker(backend_url, config(ce.url), NAME, "2026-10-14T05:00:00Z", pause_after=1)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().split() == ["committed", "3", "0"]
        assert proc.stdout.readline().strip() == "paused"
    finally:
        kill(proc)
    assert load_cursor(ledger.engine, NAME) == {"next_date": "2026-10-05"}

    rerun = run_once(ledger, collector(ce.url, "2026-10-14T05:00:00Z"))
    assert (rerun.error, rerun.appended) == (None, 24)
    counts = Counter((e.data["date"], e.data["instance_type"]) for e in recorded(ledger))
    assert len(counts) == 27 and set(counts.values()) == {1}
    amounts = {
        (e.data["date"], e.data["instance_type"]): e.data["amount"] for e in recorded(ledger)
    }
    assert amounts[("2026-10-04", "m6i.2xlarge")] == pytest.approx(28 * 0.48)  # as first recorded
    assert amounts[("2026-10-05", "m6i.2xlarge")] == pytest.approx(29 * 0.48 + 0.5)  # the rerun's


@pytest.mark.slow
def test_regions_filter_and_usage_not_in_hours(
    ce: Ec2Pager, moto_url: str, sqlite_ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    day = ce_day(12, metric="AmortizedCost")
    day["Groups"][1]["Metrics"]["UsageQuantity"]["Unit"] = "vCPU-Hours"
    seed(moto_url, {"ResultsByTime": [day]})
    c = collector(
        ce.url,
        "2026-10-14T05:00:00Z",
        backfill="2d",
        metric="AmortizedCost",
        instance_type_regions=["us-gov-west-1", "us-gov-east-1"],
    )
    with caplog.at_level(logging.WARNING, logger="opsledger.collectors.aws.cost"):
        result = run_once(sqlite_ledger, c)
    assert (result.error, result.appended) == (None, 2)
    assert {e.data["instance_type"] for e in recorded(sqlite_ledger)} == {TYPES[0], TYPES[2]}
    assert "skipped r6i.xlarge, its usage is in 'vCPU-Hours'" in caplog.text
    (asked,) = [json.loads(x["body"]) for x in ce.calls]
    assert asked["Metrics"] == ["AmortizedCost", "UsageQuantity"]
    assert asked["Filter"] == {
        "And": [
            {
                "Dimensions": {
                    "Key": "SERVICE",
                    "Values": ["Amazon Elastic Compute Cloud - Compute"],
                }
            },
            {"Dimensions": {"Key": "REGION", "Values": ["us-gov-east-1", "us-gov-west-1"]}},
        ]
    }


def test_on_by_default_with_the_cost_section_and_its_settings() -> None:
    cfg = AwsConfig.model_validate(
        {
            "region": "us-gov-west-1",
            "cost_explorer": {"region": "us-east-1"},
        }
    )
    per_service, per_type = build(cfg, None)
    assert isinstance(per_service, CostCollector)
    assert isinstance(per_type, InstanceTypeCostCollector)
    assert (per_type.name, per_type.interval_seconds) == (NAME, 21600)
    assert (per_type.settings.region, per_type.settings.partition) == ("us-east-1", "aws")
    client = per_type.settings.client("ce")
    assert client.meta.endpoint_url == "https://ce.us-east-1.amazonaws.com"

    off = AwsConfig.model_validate(
        {"region": "us-east-1", "cost_explorer": {"instance_types": False}}
    )
    assert [c.name for c in build(off, None)] == ["aws/cost"]


@pytest.mark.parametrize(
    ("section", "complaint"),
    [
        ({"instance_type_regions": []}, "at least one region"),
        ({"instance_type_regions": ["gov-west"]}, "not an AWS region"),
        ({"instance_types": "sometimes"}, "instance_types"),
    ],
)
def test_bad_instance_type_settings_are_refused(section: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        AwsConfig.model_validate({"region": "us-east-1", "cost_explorer": section})
