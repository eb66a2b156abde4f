"""Request and response bodies of the incident and SLA routes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from store.datamodels import IncidentId, Name, Severity, Text, Timestamp


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class OpenIncident(_Body):
    """Open an incident; `at` back-fills one that started earlier."""

    title: Text
    severity: Severity
    cluster: Name
    namespace: Name | None = None
    service: Name | None = None
    incident_id: IncidentId | None = Field(
        None, description="Your own id (e.g. a ticket number); default `INC-<date>-<random>`."
    )
    at: Timestamp | None = Field(None, description="When it opened (RFC 3339); default now.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "title": "API 5xx above 2 % on checkout",
                    "severity": "P1",
                    "cluster": "prod-use1",
                    "namespace": "payments",
                    "service": "checkout",
                }
            ]
        }
    )


class IncidentAction(_Body):
    """Who did it, and when (default now)."""

    by: Name | None = None
    at: Timestamp | None = None


class IncidentPatch(_Body):
    """Change the severity, add a note and/or link the post-mortem, in one atomic append."""

    severity: Severity | None = None
    note: str | None = Field(None, min_length=1, max_length=65_536)
    postmortem_url: str | None = Field(None, pattern=r"^https?://\S+$", max_length=2048)
    at: Timestamp | None = None


class Incident(BaseModel):
    """An incident as it stands."""

    model_config = ConfigDict(extra="allow")

    incident_id: str
    title: str | None
    severity: str | None
    severity_max: str | None
    cluster: str | None
    namespace: str | None
    service: str | None
    status: str = Field(description="open, acknowledged, mitigated or resolved.")
    opened_at: str | None
    acknowledged_at: str | None
    mitigated_at: str | None
    resolved_at: str | None = Field(description="The final resolution; null while open.")
    reopens: int
    postmortem_url: str | None
    version: int = Field(description="The stream version: send it back as `If-Match`.")


class IncidentList(BaseModel):
    """A page of incidents, newest opening first."""

    items: list[dict[str, Any]]
    total: int


class Summary(BaseModel):
    """Mean, median, p90 (seconds) and how many incidents lack the milestone."""

    mean: float | None
    median: float | None
    p90: float | None
    missing: int


class MetricsGroup(BaseModel):
    """One group's incident count and durations."""

    key: dict[str, str | None]
    count: int
    mtta: Summary
    mttm: Summary
    mttr: Summary


class MetricsResponse(BaseModel):
    """MTTA / MTTM / MTTR per group over the incidents opened in the window."""

    groups: list[MetricsGroup]


class BreachSummary(BaseModel):
    """Breach counts of one severity (the most severe level the incidents held)."""

    severity: str
    incidents: int
    response_breaches: int
    resolution_breaches: int
    breach_rate: float | None = Field(description="Incidents with a response breach ÷ incidents.")


class Breach(BaseModel):
    """A missed response or resolution target."""

    incident_id: str
    severity: str = Field(description="The level whose target applied.")
    kind: str = Field(description="response or resolution.")
    due_at: str
    met_at: str | None = Field(description="The first ack / final resolution; null while open.")
    overrun_seconds: float
    open: bool


class BreachesResponse(BaseModel):
    """SLA breaches of the incidents opened in the window, judged as of `as_of`."""

    as_of: str
    summary: list[BreachSummary]
    items: list[Breach]


class PolicyResponse(BaseModel):
    """An SLA policy with every default filled in, and since when it is in force."""

    policy: dict[str, Any]
    effective_from: str | None
    position: int | None = None
