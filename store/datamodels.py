"""Pydantic models of each event type's `data`, as fixed by the contract (v1)."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from store.timefmt import (
    DATE_PATTERN,
    MAX_YEAR,
    MIN_YEAR,
    MONTH_PATTERN,
    RFC3339_PATTERN,
    TimeFormatError,
    duration_seconds,
    parse_rfc3339_us,
)

Severity = Literal["P0", "P1", "P2", "P3"]
FindingSeverity = Literal["CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL"]
FindingStatus = Literal["ACTIVE", "ARCHIVED", "RESOLVED"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

Name = Annotated[str, StringConstraints(min_length=1, max_length=253)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
IncidentId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
#: The longest SLA target: a year.
MAX_TARGET_MINUTES: Final = 366 * 24 * 60
#: The largest amount of money one event may carry (a day's spend of one service, a month's
#: budget): far above any real bill, and far enough below float64's range that sums and
#: month-end projections of many of them stay finite.
MAX_AMOUNT: Final = 1e12


def _rfc3339(value: str) -> str:
    try:
        parse_rfc3339_us(value)
    except TimeFormatError as exc:
        raise ValueError(str(exc)) from None
    return value


def _iso_date(value: str) -> str:
    try:
        date.fromisoformat(value)
    except ValueError:
        raise ValueError("must be a date YYYY-MM-DD") from None
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("must be a date YYYY-MM-DD")
    if not MIN_YEAR <= int(value[:4]) <= MAX_YEAR:
        raise ValueError(f"must be a date from {MIN_YEAR} to {MAX_YEAR}")
    return value


def _iso_month(value: str) -> str:
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", value):
        raise ValueError("must be a month YYYY-MM")
    if not MIN_YEAR <= int(value[:4]) <= MAX_YEAR:
        raise ValueError(f"must be a month from {MIN_YEAR} to {MAX_YEAR}")
    return value


# The validators decide; the schemas tell clients (and OpenAPI) the same rule.
Timestamp = Annotated[
    str,
    AfterValidator(_rfc3339),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": RFC3339_PATTERN}),
]
IsoDate = Annotated[
    str,
    AfterValidator(_iso_date),
    WithJsonSchema({"type": "string", "format": "date", "pattern": DATE_PATTERN}),
]
IsoMonth = Annotated[
    str, AfterValidator(_iso_month), WithJsonSchema({"type": "string", "pattern": MONTH_PATTERN})
]
Amount = Annotated[float, Field(ge=-MAX_AMOUNT, le=MAX_AMOUNT)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class MetricSamples(_Strict):
    """`opsledger.metric.samples`: gauge samples (validated by a fast path, documented here)."""

    samples: list[dict[str, Any]] = Field(min_length=1)


class _ObjectRef(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    kind: str | None = None
    name: str | None = None
    namespace: str | None = None


class _Metadata(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    name: Name
    namespace: str | None = None


class KubernetesEvent(BaseModel):
    """`opsledger.k8s.event`: a core/v1 Event (or events.k8s.io/v1) object as the API returns it."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)
    metadata: _Metadata
    involvedObject: _ObjectRef | None = None
    regarding: _ObjectRef | None = None
    reason: str | None = None
    message: str | None = None
    type: Literal["Normal", "Warning"] | None = None
    count: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _has_object(self) -> KubernetesEvent:
        if self.involvedObject is None and self.regarding is None:
            raise ValueError("needs involvedObject (core/v1) or regarding (events.k8s.io/v1)")
        return self


class Allocatable(_Strict):
    """A node's allocatable resources."""

    cpu_cores: float = Field(ge=0)
    memory_bytes: int = Field(ge=0)
    pods: int = Field(ge=0)


class NodeStatus(_Strict):
    """`opsledger.k8s.node.status`: a node's readiness and shape, sent on change."""

    node: Name
    ready: bool
    reason: Text | None = None
    nodepool: Name | None = None
    zone: Name | None = None
    instance_type: Name | None = None
    allocatable: Allocatable


class PodStatus(_Strict):
    """`opsledger.k8s.pod.status`: a pod's phase, reason and restarts, sent on change."""

    namespace: Name
    pod: Name
    phase: Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"]
    reason: Text | None = None
    restarts: int = Field(ge=0)
    node: Name | None = None
    owner: Name | None = None


class NodePoolLimits(_Strict):
    """A NodePool's `spec.limits`: the most capacity Karpenter may provision for it."""

    cpu_cores: float | None = Field(default=None, ge=0, le=1e9)
    memory_bytes: int | None = Field(default=None, ge=0)


class NodePoolResources(_Strict):
    """A NodePool's `status.resources`: the capacity of the nodes it has provisioned."""

    cpu_cores: float | None = Field(default=None, ge=0, le=1e9)
    memory_bytes: int | None = Field(default=None, ge=0)
    nodes: int | None = Field(default=None, ge=0)


class NodePoolStatus(_Strict):
    """`opsledger.k8s.nodepool.status`: a Karpenter / EKS Auto Mode NodePool, sent on change."""

    nodepool: Name
    deleted: bool = False
    limits: NodePoolLimits | None = None
    resources: NodePoolResources | None = None
    zones: list[Name] | None = Field(default=None, max_length=64)


Cidr = Annotated[
    str,
    StringConstraints(
        pattern=r"^((25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(25[0-5]|2[0-4]\d|1?\d?\d)/(3[0-2]|[12]?\d)$"
    ),
]


class SubnetStatus(_Strict):
    """`opsledger.network.subnet.status`: one of a cluster's subnets and its free addresses."""

    subnet_id: Name
    deleted: bool = False
    zone: Name | None = None
    cidr: Cidr | None = None
    available_ips: int | None = Field(default=None, ge=0, le=2**32)
    total_ips: int | None = Field(default=None, ge=0, le=2**32)
    vpc_id: Name | None = None

    @model_validator(mode="after")
    def _present_needs_figures(self) -> SubnetStatus:
        if not self.deleted:
            missing = [f for f in ("zone", "cidr", "available_ips") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"a subnet that is not deleted needs {', '.join(missing)}")
        if (
            self.available_ips is not None
            and self.total_ips is not None
            and self.available_ips > self.total_ips
        ):
            raise ValueError("available_ips is more than total_ips")
        return self


class Finding(_Strict):
    """`opsledger.finding`: a GuardDuty or Security Hub finding, as of its last update."""

    provider: Name
    finding_id: Text
    title: Text
    finding_type: Text
    severity: FindingSeverity
    resource: Text | None = None
    namespace: Name | None = None
    status: FindingStatus
    first_seen: Timestamp
    last_seen: Timestamp

    @model_validator(mode="after")
    def _ordered(self) -> Finding:
        if parse_rfc3339_us(self.last_seen) < parse_rfc3339_us(self.first_seen):
            raise ValueError("last_seen is before first_seen")
        return self


class IncidentOpened(_Strict):
    """`opsledger.incident.opened`."""

    incident_id: IncidentId
    title: Text
    severity: Severity
    namespace: Name | None = None
    service: Name | None = None


class IncidentMilestone(_Strict):
    """`opsledger.incident.acknowledged`, `.mitigated`, `.resolved`, `.reopened`."""

    incident_id: IncidentId
    by: Name | None = None


class IncidentSeverityChanged(_Strict):
    """`opsledger.incident.severity_changed`."""

    incident_id: IncidentId
    severity: Severity


class IncidentAnnotated(_Strict):
    """`opsledger.incident.annotated`."""

    incident_id: IncidentId
    note: Annotated[str, StringConstraints(min_length=1, max_length=65_536)]


class IncidentPostmortemLinked(_Strict):
    """`opsledger.incident.postmortem_linked`."""

    incident_id: IncidentId
    url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=2048)]


class CostDaily(_Strict):
    """`opsledger.cost.daily`: one service's spend on one day."""

    date: IsoDate
    service: Name
    amount: Amount
    currency: Currency


class CostInstanceTypeDaily(_Strict):
    """`opsledger.cost.instance_type.daily`: EC2 spend and usage hours of one instance type."""

    date: IsoDate
    instance_type: Name
    amount: Amount
    usage_hours: float = Field(ge=0, le=1e9)
    currency: Currency


class BudgetSet(_Strict):
    """`opsledger.budget.set`: the budget of one month."""

    month: IsoMonth
    amount: Amount = Field(ge=0)
    currency: Currency


def _duration(value: str) -> str:
    if value == "next_business_day":
        return value
    try:
        minutes = duration_seconds(value, "mhd", digits=6) / 60
    except ValueError:
        minutes = 0
    if 0 < minutes <= MAX_TARGET_MINUTES:
        return value
    raise ValueError(
        'must be a positive duration up to 366d like "15m", "1h", "2d", or "next_business_day"'
    )


Target = Annotated[
    str,
    AfterValidator(_duration),
    WithJsonSchema({"type": "string", "pattern": r"^([0-9]{1,6}[mhd]|next_business_day)$"}),
]


def _workdays() -> list[Weekday]:
    return ["mon", "tue", "wed", "thu", "fri"]


def _seed_response_targets() -> dict[Severity, str]:
    # The seed runbook's "Incident Response" targets.
    return {"P0": "15m", "P1": "1h", "P2": "4h", "P3": "next_business_day"}


Clock = Annotated[str, StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]


class BusinessHours(_Strict):
    """The working week of an SLA policy."""

    days: list[Weekday] = Field(default_factory=_workdays, min_length=1, max_length=7)
    start: Clock = "09:00"
    end: Clock = "17:00"

    @model_validator(mode="after")
    def _ordered(self) -> BusinessHours:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class SlaPolicy(_Strict):
    """`opsledger.sla.policy_set`: the SLA policy document, in force from the event's time."""

    timezone: str = "UTC"
    business_hours: BusinessHours = Field(default_factory=BusinessHours)
    holidays: list[IsoDate] = Field(default_factory=list, max_length=1000)
    response: dict[Severity, Target] = Field(default_factory=_seed_response_targets)
    resolution: dict[Severity, Target] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("is not an IANA time zone name") from None
        return value
