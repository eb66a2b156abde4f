"""The monthly capacity report's figures as frozen values: what `report_data.gather()` returns.

Instants are naive UTC datetimes (the read model's convention) and stay datetimes until the
page prints them. Ratios are shares (0.853 is 85.3 %), durations seconds, sizes bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Final, Literal

from analytics.capacity.trends import Resource
from analytics.outputs.report_decisions import (
    Decisions,
    Network,
    Rightsizing,
    Showback,
    SpendForecast,
)
from store.timefmt import MAX_YEAR, MIN_YEAR, naive_iso

MONTH_RE: Final = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")

#: An instant and the value a series has there.
Point = tuple[datetime, float]


class ReportError(ValueError):
    """A report that cannot be made: a malformed or unfinished month, an unknown cluster."""


class UnknownCluster(ReportError):
    """The read model holds nothing about the cluster asked for."""


@dataclass(frozen=True, slots=True)
class Month:
    """A calendar month in UTC, the one before it, and the next review's as-of instant."""

    name: str
    start: datetime
    end: datetime
    previous_start: datetime
    next_end: datetime

    @classmethod
    def parse(cls, text: str) -> Month:
        """A month from YYYY-MM (ReportError otherwise)."""
        m = MONTH_RE.match(text)
        if m is None:
            raise ReportError(f"month must be YYYY-MM, got {text[:40]!r}")
        if not MIN_YEAR <= int(m.group(1)) <= MAX_YEAR:
            raise ReportError(f"month {text} is out of range {MIN_YEAR}-01 .. {MAX_YEAR}-12")
        try:
            start = datetime(int(m.group(1)), int(m.group(2)), 1)
            end = _next_month(start)
            return cls(text, start, end, _previous_month(start), _next_month(end))
        except (ValueError, OverflowError):  # year 0, or no month after 9999-12
            raise ReportError(f"month {text} is out of range") from None

    @property
    def previous_name(self) -> str:
        """YYYY-MM of the month before."""
        return self.previous_start.strftime("%Y-%m")

    @property
    def horizon_days(self) -> float:
        """Days from this month's end to the next review's (the end of the next month)."""
        return (self.next_end - self.end).total_seconds() / 86400

    def check_ended(self, now: datetime) -> None:
        """Refuse a month that has not ended by `now` (naive UTC): its figures would move."""
        if self.end > now:
            raise ReportError(
                f"month {self.name} has not ended yet; a report covers a whole month "
                f"(available from {naive_iso(self.end)})"
            )


def _next_month(d: datetime) -> datetime:
    return (d.replace(day=1) + timedelta(days=32)).replace(day=1)


def _previous_month(d: datetime) -> datetime:
    return (d.replace(day=1) - timedelta(days=1)).replace(day=1)


def last_complete_month(now: datetime) -> str:
    """YYYY-MM of the last month that ended by `now` (naive UTC)."""
    return _previous_month(now).strftime("%Y-%m")


# -- capacity -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MonthStats:
    """Mean and peak of a month of hourly averages, and the hours above 85 %."""

    mean: float | None
    peak: float | None
    peak_at: datetime | None
    hours_above: int


@dataclass(frozen=True, slots=True)
class PoolUtilization:
    """One node pool's hourly utilisation of a resource."""

    nodepool: str | None
    utilization: tuple[Point, ...]
    month: MonthStats


@dataclass(frozen=True, slots=True)
class NamespaceLayer:
    """A namespace's daily share of the cluster, or the sum of the namespaces ranked below."""

    name: str
    #: How many namespaces it sums; 0 for a single namespace.
    other: int
    values: tuple[float, ...]
    mean: float


@dataclass(frozen=True, slots=True)
class NamespaceStacks:
    """Daily shares per namespace, the biggest first, one value per day of the month."""

    days: tuple[datetime, ...]
    utilization: tuple[NamespaceLayer, ...]
    commitment: tuple[NamespaceLayer, ...]


@dataclass(frozen=True, slots=True)
class ResourceTrends:
    """A month of one resource (CPU or memory) in one cluster."""

    resource: Resource
    utilization: tuple[Point, ...]
    commitment: tuple[Point, ...]
    utilization_month: MonthStats
    commitment_month: MonthStats
    pools: tuple[PoolUtilization, ...]
    namespaces: NamespaceStacks


@dataclass(frozen=True, slots=True)
class NamespaceMeans:
    """Month averages of a namespace's daily shares of the cluster."""

    namespace: str
    cpu_commitment: float | None
    cpu_utilization: float | None
    memory_commitment: float | None
    memory_utilization: float | None


@dataclass(frozen=True, slots=True)
class PoolCount:
    """Hourly average node count of one node pool."""

    nodepool: str | None
    points: tuple[Point, ...]


@dataclass(frozen=True, slots=True)
class Counts:
    """Hourly average nodes (per node pool and in all) and pods."""

    nodes_by_pool: tuple[PoolCount, ...]
    nodes: tuple[Point, ...]
    pods: tuple[Point, ...]


@dataclass(frozen=True, slots=True)
class HotRun:
    """A sustained run above 85 % of a cluster or node pool (analytics.capacity.hotspots)."""

    cluster: str | None
    scope: str
    nodepool: str | None
    node: str | None
    resource: str
    start: datetime
    end: datetime
    duration_seconds: float
    utilization_avg: float
    utilization_max: float
    samples: int


@dataclass(frozen=True, slots=True)
class NodeRuns:
    """The sustained runs of single nodes of one node pool and resource, summed."""

    nodepool: str
    resource: str
    runs: int
    nodes: int
    seconds: float
    longest_seconds: float
    peak: float
    #: When any node of the pool ran hot: the runs, merged where they overlap.
    intervals: tuple[tuple[datetime, datetime], ...]


@dataclass(frozen=True, slots=True)
class Sustained:
    """Cluster and node pool runs in full; node runs summed per node pool and resource."""

    runs: tuple[HotRun, ...]
    node_runs: tuple[NodeRuns, ...]


@dataclass(frozen=True, slots=True)
class ZoneLoss:
    """What is left of a pool's (or cluster's) allocatable without its largest zone."""

    #: Allocatable per zone; None holds the nodes without a zone (never lost).
    zones: tuple[tuple[str | None, float], ...]
    largest_zone: str | None
    largest_zone_allocatable: float
    allocatable_without_largest_zone: float
    commitment_without_largest_zone: float | None
    #: The requests fit without the largest zone; None when the requests are unknown.
    survives: bool | None


@dataclass(frozen=True, slots=True)
class NodePoolLimit:
    """A NodePool's limit of a resource and when the pool's requests reach it."""

    limit: float
    days_to_limit: float | None
    eta_limit: datetime | None


@dataclass(frozen=True, slots=True)
class Headroom:
    """A cluster's or node pool's level, trend and days to 85 % (analytics.capacity.headroom)."""

    cluster: str
    nodepool: str | None
    resource: str
    basis: Literal["requests", "usage"]
    commitment: float | None
    utilization: float | None
    level: float
    allocatable: float
    largest_node_allocatable: float
    growth_per_day: float
    days_to_85: float | None
    eta_85: datetime | None
    days_to_85_n_minus_1: float | None
    eta_85_n_minus_1: datetime | None
    #: The containers' requests on the pool's nodes (the cluster's: all of them), latest day.
    requests: float | None
    commitment_by_requests: float | None
    requests_growth_per_day: float | None
    days_to_85_by_requests: float | None
    days_to_85_by_requests_n_minus_1: float | None
    zone_loss: ZoneLoss | None
    #: Node pools with a NodePool limit of the resource only.
    nodepool_limit: NodePoolLimit | None


@dataclass(frozen=True, slots=True)
class ClusterCapacity:
    """Trends, sustained runs and headroom of one cluster over the month."""

    cluster: str
    #: CPU, then memory.
    resources: tuple[ResourceTrends, ...]
    namespace_means: tuple[NamespaceMeans, ...]
    counts: Counts
    sustained: Sustained
    headroom: tuple[Headroom, ...]


# -- storage ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PvcForecast:
    """One PVC's forecast as of the month's end (analytics.storage.projection)."""

    cluster: str
    namespace: str
    pvc: str
    used_bytes: float | None
    capacity_bytes: float | None
    used_ratio: float | None
    growth_bytes_per_day: float | None
    days_to_85: float | None
    days_to_90: float | None
    days_to_full: float | None
    eta_90: datetime | None
    #: The 80 % interval of the 90 % date.
    eta_90_low: datetime | None
    eta_90_high: datetime | None
    method: str
    status: str


@dataclass(frozen=True, slots=True)
class PvcFan:
    """A PVC whose forecast is drawn, with the highest used bytes per 2-hour bucket before."""

    forecast: PvcForecast
    history: tuple[Point, ...]


@dataclass(frozen=True, slots=True)
class Storage:
    """Every PVC's forecast, ranked by days to 90 %, and the ones drawn."""

    count: int
    ranked: tuple[PvcForecast, ...]
    fans: tuple[PvcFan, ...]
    before_next_review: tuple[PvcForecast, ...]


# -- findings -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FindingCounts:
    """Findings first seen in the month, resolved in it, and open at its end."""

    opened: int
    resolved: int
    open: int


@dataclass(frozen=True, slots=True)
class SeverityFindings:
    """FindingCounts of one severity."""

    severity: str
    counts: FindingCounts


@dataclass(frozen=True, slots=True)
class OpenFinding:
    """A critical or high finding still active at the month's end."""

    provider: str | None
    finding_id: str | None
    title: str | None
    severity: str
    resource: str | None
    namespace: str | None
    first_seen: datetime | None
    age_days: float | None


@dataclass(frozen=True, slots=True)
class Findings:
    """Findings per severity, and the critical and high ones open at the month's end."""

    by_severity: tuple[SeverityFindings, ...]
    total: FindingCounts
    open_items: tuple[OpenFinding, ...]
    open_critical_high: int


# -- incidents ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Durations:
    """Mean, median and p90 of a figure (seconds), and the incidents without it."""

    mean: float | None
    median: float | None
    p90: float | None
    missing: int


@dataclass(frozen=True, slots=True)
class IncidentFigures:
    """Incidents, MTTA, MTTR and SLA breaches of one severity (None: all of them)."""

    severity: str | None
    incidents: int
    mtta: Durations | None
    mttr: Durations | None
    response_breaches: int
    resolution_breaches: int
    breach_rate: float | None


@dataclass(frozen=True, slots=True)
class Breach:
    """A response or resolution SLA missed, or still open at the month's end."""

    incident_id: str
    title: str | None
    cluster: str | None
    severity: str
    kind: str
    due_at: datetime
    met_at: datetime | None
    overrun_seconds: float
    open: bool


@dataclass(frozen=True, slots=True)
class Unresolved:
    """An incident opened in the month and not resolved by its end."""

    incident_id: str
    title: str | None
    severity: str
    status: str
    opened_at: datetime


@dataclass(frozen=True, slots=True)
class Postmortem:
    """A post-mortem linked by the month's end."""

    incident_id: str
    title: str | None
    url: str


@dataclass(frozen=True, slots=True)
class IncidentPeriod:
    """Incidents opened in [start, end), judged as of `end`; the lists for the report's month."""

    start: datetime
    end: datetime
    by_severity: tuple[IncidentFigures, ...]
    total: IncidentFigures
    breaches: tuple[Breach, ...] = ()
    unresolved: tuple[Unresolved, ...] = ()
    postmortems: tuple[Postmortem, ...] = ()


@dataclass(frozen=True, slots=True)
class Incidents:
    """The month and the one before it, each judged as of its own end."""

    month: IncidentPeriod
    previous: IncidentPeriod


# -- cost ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DaySpend:
    """A day's spend; None where an amount out of range enters the sum."""

    day: date
    amount: float | None


@dataclass(frozen=True, slots=True)
class ServiceSpend:
    """A service's spend over the month; None where an amount out of range enters the sum."""

    service: str
    amount: float | None


@dataclass(frozen=True, slots=True)
class AmountOutOfRange:
    """A recorded daily amount no real bill has (analytics.cost.projection.in_range)."""

    day: date
    service: str


@dataclass(frozen=True, slots=True)
class Cost:
    """The month's spend to its end, its run-rate projection and its budget."""

    currency: str | None
    spend_to_date: float | None
    days_elapsed: int
    days_in_month: int
    projected: float | None
    budget: float | None
    projected_vs_budget: float | None
    over_budget: bool
    daily: tuple[DaySpend, ...]
    by_service: tuple[ServiceSpend, ...]
    amounts_out_of_range: tuple[AmountOutOfRange, ...]
    budget_out_of_range: bool


# -- the executive summary ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ThresholdReason:
    """A level at or past 85 % (`now`, `n1_now`), or reaching it within the horizon."""

    kind: Literal["now", "reaches", "n1_now", "n1"]
    days: float


@dataclass(frozen=True, slots=True)
class HotReason:
    """Sustained runs above 85 % in the month."""

    runs: int
    longest_seconds: float
    kind: Literal["sustained"] = "sustained"


Reason = ThresholdReason | HotReason


@dataclass(frozen=True, slots=True)
class Expansion:
    """A node pool (or cluster) to expand before the next review, and why."""

    cluster: str
    nodepool: str | None
    resource: str
    basis: Literal["requests", "usage"]
    level: float | None
    #: The trend as a share of the allocatable per day.
    growth_per_day: float | None
    reasons: tuple[Reason, ...]
    by_days: float
    by: datetime


@dataclass(frozen=True, slots=True)
class PvcDue:
    """A PVC at 90 %, or forecast to reach it before the next review."""

    forecast: PvcForecast
    #: Its median forecast (not only the interval's early end) is before the next review.
    likely: bool


@dataclass(frozen=True, slots=True)
class Summary:
    """What to expand and by when."""

    expand: tuple[Expansion, ...]
    pvcs: tuple[PvcDue, ...]


@dataclass(frozen=True, slots=True)
class Report:
    """Every figure of the report for one month (and one cluster, or all), as of its end."""

    month: Month
    cluster: str | None
    ledger_position: int
    clusters: tuple[str, ...]
    capacity: tuple[ClusterCapacity, ...]
    storage: Storage
    findings: Findings
    incidents: Incidents
    cost: Cost
    summary: Summary
    decisions: Decisions
    rightsizing: Rightsizing
    network: Network
    showback: Showback
    forecast: SpendForecast
