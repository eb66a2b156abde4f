"""Daily spend per service from Cost Explorer, and the monthly budget (config or AWS Budgets).

Cost: a day is recorded once, when it has *settled* (its end is at least `settle` ago), as
one `opsledger.cost.daily` event per service with the id `<date>/<service>`. Days are never
fetched again after the cursor passes them, so a later restatement by AWS is not recorded
(and cannot be counted twice); today's and yesterday's partial figures are never recorded.

EC2 compute per instance type is the same question asked another way, by its own collector:
`ingest.collectors.aws.cost_instance_types`.

Budget: one `opsledger.budget.set` event per month, and one more each time the amount or
currency changes, with ids `<YYYY-MM>/<n>`.
"""

from __future__ import annotations

import calendar
import hashlib
import logging
import math
import re
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import Field, field_validator, model_validator

from ingest.collectors.aws.common import (
    SOURCE_PREFIX,
    ClientSettings,
    SourceConfig,
    aws_time_us,
    check_region,
    make_event,
    now_us,
)
from ingest.collectors.runtime import Sink, parse_duration
from store.contract import MAX_ID_LENGTH
from store.datamodels import Currency
from store.event_types import EventType
from store.timefmt import datetime_to_us

if TYPE_CHECKING:
    from mypy_boto3_ce.type_defs import GetCostAndUsageRequestTypeDef, GroupTypeDef

log = logging.getLogger("opsledger.collectors.aws.cost")

COST_NAME: Final = "aws/cost"
COST_SOURCE: Final = SOURCE_PREFIX + "cost"
BUDGET_NAME: Final = "aws/budget"
BUDGET_SOURCE: Final = SOURCE_PREFIX + "budget"
DAY_US: Final = 86_400_000_000
CostMetric = Literal[
    "UnblendedCost", "BlendedCost", "AmortizedCost", "NetUnblendedCost", "NetAmortizedCost"
]
_ACCOUNT_RE = re.compile(r"^\d{12}$")
_BUDGET_NAME_RE = re.compile(r"^[^:\\]{1,100}$")


class CostExplorerConfig(SourceConfig):
    """Cost Explorer's daily spend per service, and of EC2 compute per instance type."""

    interval: str = Field(
        "6h", description="time between scheduled runs (each run is 1+ paid call)"
    )
    backfill: str = Field("35d", description="how far back the first run reaches")
    metric: CostMetric = Field("UnblendedCost", description="the Cost Explorer metric recorded")
    settle: str = Field(
        "1d", description="record a day only once its end is this long ago (late charges)"
    )
    instance_types: bool = Field(
        True, description="also record EC2 compute spend and hours per instance type"
    )
    instance_type_regions: list[str] | None = Field(
        None, description="count only EC2 usage in these regions (default: every region)"
    )

    @field_validator("backfill", "settle")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("instance_type_regions")
    @classmethod
    def _regions(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("name at least one region, or leave it out for every region")
        return sorted({check_region(v) for v in value})

    @property
    def backfill_days(self) -> int:
        """The back-fill window in whole days."""
        return math.ceil(parse_duration(self.backfill) / 86_400)


class BudgetConfig(SourceConfig):
    """The monthly budget: a fixed amount here, or a monthly COST budget of AWS Budgets."""

    interval: str = Field("1d", description="time between scheduled runs")
    monthly_amount: float | None = Field(None, ge=0, description="the budget of every month")
    currency: Currency = Field("USD", description="the currency of `monthly_amount`")
    account_id: str | None = Field(None, description="AWS Budgets: the account owning the budget")
    budget_name: str | None = Field(None, description="AWS Budgets: the budget's name")

    @field_validator("account_id")
    @classmethod
    def _account(cls, value: str | None) -> str | None:
        if value is not None and not _ACCOUNT_RE.match(value):
            raise ValueError("must be a 12-digit AWS account id")
        return value

    @field_validator("budget_name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not _BUDGET_NAME_RE.match(value):
            raise ValueError("must be a budget name (1-100 characters, no ':' or '\\')")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> BudgetConfig:
        from_aws = self.account_id is not None or self.budget_name is not None
        if from_aws and (self.account_id is None or self.budget_name is None):
            raise ValueError("AWS Budgets needs both account_id and budget_name")
        if from_aws == (self.monthly_amount is not None):
            raise ValueError("set either monthly_amount or account_id and budget_name")
        return self

    @property
    def from_aws(self) -> bool:
        """Whether the amount is read from AWS Budgets."""
        return self.budget_name is not None


def _day_start_us(d: date) -> int:
    return datetime_to_us(datetime(d.year, d.month, d.day, tzinfo=UTC))


def _utc_date(us: int) -> date:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)).date()


def _cost_id(day: date, service: str) -> str:
    """`<date>/<service>`, the service hashed in the rare case the id would be too long."""
    out = f"{day.isoformat()}/{service}"
    if len(out) <= MAX_ID_LENGTH:
        return out
    return f"{day.isoformat()}/sha256:{hashlib.sha256(service.encode()).hexdigest()[:32]}"


def parse_amount(text: Any) -> float:
    """A finite amount from Cost Explorer's or Budgets' decimal text, or ValueError."""
    try:
        value = Decimal(str(text))
    except InvalidOperation:
        raise ValueError(f"not an amount: {text!r}") from None
    if not value.is_finite():
        raise ValueError(f"not a finite amount: {text!r}")
    return float(value)


class CostCollector:
    """Records settled days of Cost Explorer spend per service; see the module docstring.

    Subclasses ask another question of the same days (`_request`, `_item`) under their own
    name, source and cursor: `ingest.collectors.aws.cost_instance_types`.
    """

    NAME: str = COST_NAME
    SOURCE: str = COST_SOURCE
    EVENT_TYPE: EventType = EventType.COST_DAILY

    def __init__(
        self,
        settings: ClientSettings,
        cfg: CostExplorerConfig,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = self.NAME
        self.source = self.SOURCE
        self.interval_seconds = parse_duration(cfg.interval)
        self.settings = settings
        self.cfg = cfg
        self.settle_us = int(parse_duration(cfg.settle) * 1_000_000)
        self.clock = clock

    def window(self, cursor: dict[str, Any] | None) -> tuple[date, date]:
        """[start, end): from the cursor's next day (or the back-fill) to the first unsettled."""
        now = now_us(self.clock)
        # Day D has settled when D + 1 day + settle <= now, i.e. D < the date of now - settle.
        end = _utc_date(now - self.settle_us)
        if cursor is None:
            return _utc_date(now) - timedelta(days=self.cfg.backfill_days), end
        return date.fromisoformat(str(cursor["next_date"])), end

    def collect(self, sink: Sink) -> None:
        """Fetch [cursor, last settled day], then commit day by day with the cursor after it."""
        start, end = self.window(sink.cursor())
        if start >= end:
            return
        days = self._fetch(start, end)
        log.info("%s: %d day(s) with spend in [%s, %s)", self.name, len(days), start, end)
        for day in sorted(days):
            raws = []
            for key, fields in sorted(days[day].items()):
                raw = make_event(
                    source=self.source,
                    event_id=_cost_id(day, key),
                    event_type=self.EVENT_TYPE,
                    # The day's spend is a fact once the day is over.
                    time_us=_day_start_us(day + timedelta(days=1)),
                    cluster=None,
                    data={"date": day.isoformat(), **fields},
                )
                if raw is not None:
                    raws.append(raw)
            sink.emit(raws, {"next_date": (day + timedelta(days=1)).isoformat()})
        if not days or max(days) + timedelta(days=1) < end:
            sink.emit([], {"next_date": end.isoformat()})

    def _request(self, start: date, end: date) -> GetCostAndUsageRequestTypeDef:
        """The first page's request: DAILY, the configured metric, grouped by SERVICE."""
        return {
            "TimePeriod": {"Start": start.isoformat(), "End": end.isoformat()},
            "Granularity": "DAILY",
            "Metrics": [self.cfg.metric],
            "GroupBy": [{"Type": "DIMENSION", "Key": "SERVICE"}],
        }

    def _item(self, group: GroupTypeDef) -> tuple[str, dict[str, Any]] | None:
        """(key of the id, `data` less its date) of one group of a day, None to skip it."""
        keys = group.get("Keys") or []
        metric = (group.get("Metrics") or {}).get(self.cfg.metric)
        if not keys or metric is None:
            return None
        service = str(keys[0])[:253]
        amount = parse_amount(metric.get("Amount", "0"))
        return service, {
            "service": service,
            "amount": amount,
            "currency": str(metric.get("Unit") or "USD"),
        }

    def _fetch(self, start: date, end: date) -> dict[date, dict[str, dict[str, Any]]]:
        """Every page of the window, merged per day (a page may end inside a day's groups)."""
        client = self.settings.client("ce")
        request = self._request(start, end)
        days: dict[date, dict[str, dict[str, Any]]] = {}
        tokens: set[str] = set()
        while True:
            page = client.get_cost_and_usage(**request)
            for result in page.get("ResultsByTime", []):
                day = date.fromisoformat(result["TimePeriod"]["Start"][:10])
                if not start <= day < end:  # never record a day outside the window
                    continue
                for group in result.get("Groups", []):
                    item = self._item(group)
                    if item is not None:
                        days.setdefault(day, {})[item[0]] = item[1]
            token = page.get("NextPageToken")
            if not token or token in tokens:
                break
            tokens.add(token)
            request["NextPageToken"] = token
        return days


class BudgetCollector:
    """Records the month's budget once, and again on each change; see the module docstring."""

    def __init__(
        self,
        settings: ClientSettings,
        cfg: BudgetConfig,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = BUDGET_NAME
        self.source = BUDGET_SOURCE
        self.interval_seconds = parse_duration(cfg.interval)
        self.settings = settings
        self.cfg = cfg
        self.clock = clock

    def collect(self, sink: Sink) -> None:
        """Emit the current month's budget if the month is new or the amount changed."""
        cursor = sink.cursor() or {}
        now = now_us(self.clock)
        today = _utc_date(now)
        first = today.replace(day=1)
        month = f"{first:%Y-%m}"
        amount, currency, changed_us = self._current(first)
        if cursor.get("month") == month:
            if cursor.get("amount") == amount and cursor.get("currency") == currency:
                return
            seq = int(cursor.get("seq", 0)) + 1
            # A change takes effect when it was made (AWS Budgets says when), else now.
            at = min(max(changed_us if changed_us is not None else now, _day_start_us(first)), now)
        else:
            # The month's first figure applies from its first day.
            seq, at = 1, _day_start_us(first)
        raw = make_event(
            source=self.source,
            event_id=f"{month}/{seq}",
            event_type=EventType.BUDGET_SET,
            time_us=at,
            cluster=None,
            data={"month": month, "amount": amount, "currency": currency},
        )
        if raw is None:
            raise ValueError(f"the budget {amount} {currency} is not a contract budget")
        cursor_out = {"month": month, "seq": seq, "amount": amount, "currency": currency}
        sink.emit([raw], cursor_out)

    def _current(self, first: date) -> tuple[float, str, int | None]:
        """(amount, currency, when it last changed or None) of the month starting `first`."""
        if not self.cfg.from_aws:
            assert self.cfg.monthly_amount is not None
            return float(self.cfg.monthly_amount), self.cfg.currency, None
        assert self.cfg.account_id is not None and self.cfg.budget_name is not None
        client = self.settings.client("budgets")
        budget = client.describe_budget(
            AccountId=self.cfg.account_id, BudgetName=self.cfg.budget_name
        )["Budget"]
        if budget.get("BudgetType") != "COST" or budget.get("TimeUnit") != "MONTHLY":
            raise ValueError(
                f"budget {self.cfg.budget_name!r} is a {budget.get('TimeUnit')} "
                f"{budget.get('BudgetType')} budget; only MONTHLY COST budgets are supported"
            )
        # A planned budget names each month's amount by the month's start (Unix seconds).
        key = str(calendar.timegm(first.timetuple()))
        spend = (budget.get("PlannedBudgetLimits") or {}).get(key) or budget.get("BudgetLimit")
        if spend is None:
            raise ValueError(f"budget {self.cfg.budget_name!r} has no limit for {first:%Y-%m}")
        updated = budget.get("LastUpdatedTime")
        return (
            parse_amount(spend["Amount"]),
            str(spend["Unit"]),
            None if updated is None else aws_time_us(updated),
        )
