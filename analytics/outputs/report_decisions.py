"""The report's decisions, rightsizing, subnet addresses, showback and spend forecast as frozen
values: the parts of `report_model.Report` that issue 12 added (gathered by
`report_decisions_data`).

Instants are naive UTC datetimes, dates are dates, money is in `currency` (None: unknown).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

# -- decisions ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """One ranked action (analytics.decisions): what to do, by when, why, and what it costs."""

    rank: int
    kind: str
    target: str
    #: None: now.
    by: date | None
    evidence: str
    monthly_savings: float | None
    monthly_cost: float | None
    currency: str | None
    #: The report section that holds its figures (an element id of the page).
    section: str
    #: Why a kind that has money has none here (an unpriced instance type, no storage price).
    cost_reason: str | None


@dataclass(frozen=True, slots=True)
class Decisions:
    """The month's actions, ranked: now first, then by date, then by money."""

    as_of: datetime
    horizon_days: float
    items: tuple[Decision, ...]


# -- rightsizing --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RightsizingRow:
    """A container's requests against its usage over the look-back (analytics.cost.savings)."""

    cluster: str
    namespace: str
    workload_kind: str
    workload: str
    container: str
    status: str
    reason: str
    pods_avg: float | None
    cpu_request_cores: float | None
    cpu_recommended_cores: float | None
    memory_request_bytes: float | None
    memory_recommended_bytes: float | None
    cpu_reclaim_cores: float | None
    memory_reclaim_bytes: float | None
    monthly_savings: float | None
    currency: str | None


@dataclass(frozen=True, slots=True)
class StatusCount:
    """How many containers have one rightsizing status."""

    status: str
    containers: int


@dataclass(frozen=True, slots=True)
class Rightsizing:
    """The containers with the most to save, and every under-requested one (both capped)."""

    lookback_days: float
    containers: int
    by_status: tuple[StatusCount, ...]
    #: Σ monthly_savings of the over-requested containers whose savings are known (None when
    #: none is, or they are in several currencies).
    over_savings: float | None
    currency: str | None
    top: tuple[RightsizingRow, ...]
    under: tuple[RightsizingRow, ...]
    #: Under-requested containers in all (more than `under` when the list was capped).
    under_count: int


# -- subnet addresses ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ZoneAddresses:
    """A zone's free subnet addresses against its pod trend (analytics.capacity.network)."""

    cluster: str
    zone: str
    subnets: int
    available_ips: int
    pods: float | None
    pods_per_day: float | None
    days_to_exhaustion: float | None
    eta: datetime | None


@dataclass(frozen=True, slots=True)
class SubnetAddresses:
    """One subnet's latest status and the days its zone has left."""

    cluster: str
    subnet_id: str
    vpc_id: str | None
    zone: str
    cidr: str | None
    available_ips: int
    total_ips: int | None
    days_to_exhaustion: float | None
    eta: datetime | None
    observed_at: datetime


@dataclass(frozen=True, slots=True)
class Network:
    """Every zone with subnets, and every subnet, as of the month's end."""

    zones: tuple[ZoneAddresses, ...]
    subnets: tuple[SubnetAddresses, ...]


# -- showback and the spend forecast ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShowbackRow:
    """A namespace's share of its cluster's node cost in the month, or the cluster's idle."""

    cluster: str
    #: None for the idle row.
    namespace: str | None
    idle: bool
    cpu_cost: float | None
    memory_cost: float | None
    cost: float | None
    share: float | None
    #: Why a namespace is not costed (None when it is).
    reason: str | None


@dataclass(frozen=True, slots=True)
class Unpriced:
    """Nodes of one instance type that have no price, and why."""

    instance_type: str | None
    nodes: int
    reason: str | None


@dataclass(frozen=True, slots=True)
class ShowbackTotal:
    """A cluster's node cost in the month (its priced node-hours) and its unpriced nodes."""

    cluster: str
    cost: float | None
    currency: str | None
    unpriced: tuple[Unpriced, ...]


@dataclass(frozen=True, slots=True)
class Showback:
    """The month's node cost per namespace (analytics.cost.showback), idle last per cluster."""

    currency: str | None
    rows: tuple[ShowbackRow, ...]
    totals: tuple[ShowbackTotal, ...]


@dataclass(frozen=True, slots=True)
class SpendForecast:
    """The month's spend forecast by weekday means, with its 80 % band (analytics.cost)."""

    currency: str | None
    spent_to_date: float | None
    days_with_data: int
    remaining_days: int
    forecast: float | None
    low: float | None
    high: float | None
    budget: float | None
    status: str
