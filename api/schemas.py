"""Response bodies and OpenAPI examples of the HTTP API."""

from __future__ import annotations

from typing import Any

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
    """An event whose (source, id) is recorded with different content."""

    index: int
    source: str
    id: str
    position: int


class ConflictResponse(BaseModel):
    """409: some (source, id) pairs are recorded with different content."""

    detail: str
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
