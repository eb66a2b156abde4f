"""Response bodies and OpenAPI examples of the HTTP API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

EXAMPLE_EVENT: dict[str, Any] = {
    "specversion": "1.0",
    "id": "inc-2026-10-014-opened",
    "source": "opsledger/cli",
    "type": "opsledger.incident.opened",
    "time": "2026-10-14T03:12:00-04:00",
    "cluster": "enhanced-eks-cluster",
    "datacontenttype": "application/json",
    "data": {
        "incident_id": "INC-2026-10-014",
        "title": "checkout 5xx above 2%",
        "severity": "P1",
        "namespace": "checkout",
        "service": "checkout-api",
    },
}
EXAMPLE_SAMPLES: dict[str, Any] = {
    "specversion": "1.0",
    "id": "prom-enhanced-eks-cluster-1791950400",
    "source": "opsledger/collector/prometheus",
    "type": "opsledger.metric.samples",
    "time": "2026-10-14T04:00:00Z",
    "cluster": "enhanced-eks-cluster",
    "data": {
        "samples": [
            {
                "name": "node_cpu_usage_cores",
                "labels": {
                    "node": "ip-10-0-12-34.us-gov-west-1.compute.internal",
                    "nodepool": "general-purpose",
                    "zone": "us-gov-west-1a",
                },
                "ts": "2026-10-14T04:00:00Z",
                "value": 5.42,
            },
            {
                "name": "pvc_used_bytes",
                "labels": {"namespace": "payments", "persistentvolumeclaim": "data-postgres-0"},
                "ts": 1791950400,
                "value": 81604378624,
            },
        ]
    },
}


class AppendResponse(BaseModel):
    """The outcome of `POST /v1/events`."""

    accepted: int = Field(description="Events newly written.")
    duplicates: int = Field(description="Events already recorded with identical content.")
    first_position: int | None = Field(description="Position of the first new event, or null.")
    last_position: int | None = Field(description="Position of the last new event, or null.")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {"accepted": 2, "duplicates": 0, "first_position": 41, "last_position": 42}
            ]
        }
    }


class ProblemItem(BaseModel):
    """One bad field of one event."""

    index: int | None = Field(None, description="Index of the event in the batch (0 for one).")
    field: str = Field(description="Dotted path of the field, e.g. `data.samples[3].value`.")
    reason: str = Field(description="Why it was refused.")


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body: a message and, for validation errors, the fields at fault."""

    detail: str
    errors: list[ProblemItem] = Field(default_factory=list)

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "detail": "1 invalid event(s); nothing was written",
                    "errors": [
                        {"index": 3, "field": "time", "reason": "must be RFC 3339 with an offset"}
                    ],
                }
            ]
        }
    }


class ConflictItem(BaseModel):
    """An event whose (source, id) is recorded, or earlier in the batch, with other content."""

    index: int = Field(description="Index of the event in the request.")
    source: str
    id: str
    position: int | None = Field(
        description="Position where the pair is recorded; null when it conflicts with an "
        "earlier event of the same request."
    )
    first_index: int | None = Field(
        None, description="Index of the earlier event of the same request with other content."
    )


class ConflictResponse(ErrorResponse):
    """409: some (source, id) pairs are recorded, or earlier in the batch, with other content."""

    conflicts: list[ConflictItem]


class EventsPage(BaseModel):
    """A page of `GET /v1/events`."""

    events: list[dict[str, Any]] = Field(
        description="CloudEvents with `position`, `recordedat` and, for streams, `stream` and "
        "`streamversion` extension attributes."
    )
    next_after: int = Field(description="Pass as `after` to get the next page.")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "events": [
                        {
                            **EXAMPLE_EVENT,
                            "position": 41,
                            "recordedat": "2026-10-14T07:12:03Z",
                            "stream": "incident/INC-2026-10-014",
                            "streamversion": 1,
                        }
                    ],
                    "next_after": 41,
                }
            ]
        }
    }


class Health(BaseModel):
    """Liveness and readiness."""

    status: str
    detail: str | None = None


class TrendPoint(BaseModel):
    """One bucket of a capacity series; fields that do not apply are null."""

    t: str = Field(description="Bucket start (UTC); the bucket is [t, t + step).")
    usage_avg: float | None = None
    usage_p95: float | None = None
    usage_max: float | None = None
    requests_avg: float | None = None
    allocatable_avg: float | None = None
    utilization_avg: float | None = None
    utilization_p95: float | None = None
    commitment_avg: float | None = None


class TrendSeries(BaseModel):
    """The points of one scope member."""

    key: dict[str, str | None] = Field(
        description="cluster, plus nodepool / node / namespace as the scope needs."
    )
    points: list[TrendPoint]


class TrendsResponse(BaseModel):
    """`GET /v1/capacity/trends`."""

    series: list[TrendSeries]

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "series": [
                        {
                            "key": {
                                "cluster": "enhanced-eks-cluster",
                                "nodepool": "general-purpose",
                            },
                            "points": [
                                {
                                    "t": "2026-10-14T00:00:00Z",
                                    "usage_avg": 101.2,
                                    "usage_p95": 118.9,
                                    "usage_max": 121.4,
                                    "requests_avg": None,
                                    "allocatable_avg": 248.0,
                                    "utilization_avg": 0.408,
                                    "utilization_p95": 0.479,
                                    "commitment_avg": None,
                                }
                            ],
                        }
                    ]
                }
            ]
        }
    }


class PoisonedEventState(BaseModel):
    """An event the projection could not apply: skipped, with the error it raised."""

    position: int = Field(description="The event's ledger position.")
    type: str
    id: str
    source: str
    error_type: str = Field(description="The exception's class, e.g. `KeyError`.")
    error: str = Field(description="The error's first line.")
    at: str = Field(description="When it was skipped (RFC 3339, UTC).")


class ProjectionErrorState(BaseModel):
    """The projection's last failed catch-up that no event was to blame for."""

    stage: Literal["read", "apply", "settle"]
    position: int = Field(description="The checkpoint when it failed.")
    error_type: str
    error: str = Field(description="The error's first line.")
    at: str = Field(description="When it failed (RFC 3339, UTC).")


class ProjectionState(BaseModel):
    """A projection's checkpoint against the ledger head, and what it could not apply."""

    name: str
    version: int
    position: int
    head: int
    lag: int
    poisoned: int = Field(description="Events skipped because the projection cannot apply them.")
    poisoned_events: list[PoisonedEventState] = Field(
        description="The latest poisoned events (10 at most), newest position first."
    )
    last_error: ProjectionErrorState | None = Field(
        description="Set while the projection's catch-ups fail; null once one goes through."
    )


class ProjectionsResponse(BaseModel):
    """`GET /v1/projections`."""

    projections: list[ProjectionState]


class ForecastItem(BaseModel):
    """One PVC's forecast."""

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
    eta_90: str | None
    eta_90_low: str | None
    eta_90_high: str | None
    method: str
    status: Literal["critical", "warning", "forecast", "ok", "insufficient_data"]


class ForecastResponse(BaseModel):
    """`GET /v1/storage/forecast`: soonest to reach 90 % first."""

    as_of: str
    items: list[ForecastItem]

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "as_of": "2026-11-26T00:00:00Z",
                    "items": [
                        {
                            "cluster": "enhanced-eks-cluster",
                            "namespace": "search",
                            "pvc": "data-opensearch-data-3",
                            "used_bytes": 472410222592.0,
                            "capacity_bytes": 536870912000.0,
                            "used_ratio": 0.88,
                            "growth_bytes_per_day": 1346222227.4,
                            "days_to_85": 0.0,
                            "days_to_90": 7.65,
                            "days_to_full": 46.77,
                            "eta_90": "2026-12-03T15:30:00Z",
                            "eta_90_low": "2026-12-02T16:00:00Z",
                            "eta_90_high": "2026-12-04T16:00:00Z",
                            "method": "robust_trend",
                            "status": "warning",
                        }
                    ],
                }
            ]
        }
    }


#: The refusals every read-model route can answer with.
READ_MODEL_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "No, unknown or revoked API key."},
    503: {"model": ErrorResponse, "description": "The read model is not open in this process."},
}

#: What an admin-scoped route adds.
ADMIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorResponse, "description": "The key lacks the admin scope."},
}
