"""JSON schemas of the bodies that routes read themselves (events, webhooks, the SLA policy)."""

from __future__ import annotations

from functools import cache
from typing import Any, Final
from zoneinfo import available_timezones

from pydantic import BaseModel

from store.contract import (
    CLUSTER_PATTERN,
    CLUSTER_SCOPED,
    DATA_MODELS,
    MAX_ID_LENGTH,
    MAX_LABEL_VALUE_LENGTH,
    MAX_LABELS_PER_SERIES,
    MAX_SAMPLES_PER_EVENT,
    MAX_SOURCE_LENGTH,
    MAX_SUBJECT_LENGTH,
    METRIC_SAMPLES,
    SPECVERSION,
)
from store.timefmt import MAX_US, RFC3339_PATTERN

_INSTANT: Final = {"type": "string", "format": "date-time", "pattern": RFC3339_PATTERN}
# Printable text: no control characters (the contract refuses them in id, source, subject).
_PRINTABLE: Final = r"^[^\x00-\x1f\x7f-\x9f]+$"


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's schema with its nested models written in place (none of them is recursive)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(
                    {
                        **defs[ref.rsplit("/", 1)[1]],
                        **{k: v for k, v in node.items() if k != "$ref"},
                    }
                )
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    out: dict[str, Any] = inline(schema)
    return out


def _samples_schema() -> dict[str, Any]:
    sample = {
        "type": "object",
        "required": ["name", "labels", "ts", "value"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "pattern": r"^[A-Za-z_:][A-Za-z0-9_:]{0,199}$"},
            "labels": {
                "type": "object",
                "maxProperties": MAX_LABELS_PER_SERIES,
                "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]{0,99}$"},
                "additionalProperties": {"type": "string", "maxLength": MAX_LABEL_VALUE_LENGTH},
            },
            "ts": {
                "description": "RFC 3339, or Unix seconds.",
                "oneOf": [_INSTANT, {"type": "number", "minimum": 0, "maximum": MAX_US / 1e6}],
            },
            "value": {"type": "number"},
        },
    }
    return {
        "type": "object",
        "required": ["samples"],
        "additionalProperties": False,
        "properties": {
            "samples": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_SAMPLES_PER_EVENT,
                "items": sample,
                "description": "A series (name and labels) appears at most once per `ts`.",
            }
        },
    }


def _event_schema(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    text = {"type": "string", "minLength": 1, "pattern": _PRINTABLE}
    required = ["specversion", "id", "source", "type", "time", "data"]
    if event_type in CLUSTER_SCOPED:
        required.append("cluster")
    return {
        "type": "object",
        "title": event_type,
        "required": required,
        "additionalProperties": False,
        "properties": {
            "specversion": {"type": "string", "enum": [SPECVERSION]},
            "id": {**text, "maxLength": MAX_ID_LENGTH},
            "source": {**text, "maxLength": MAX_SOURCE_LENGTH},
            "type": {"type": "string", "enum": [event_type]},
            "time": _INSTANT,
            "cluster": {"type": "string", "pattern": CLUSTER_PATTERN},
            "subject": {**text, "maxLength": MAX_SUBJECT_LENGTH},
            "datacontenttype": {"type": "string", "enum": ["application/json"]},
            "data": data,
        },
    }


@cache
def cloudevent_schema() -> dict[str, Any]:
    """A CloudEvent of the v1 contract: one branch per type, each with its `data`."""
    branches = []
    for event_type, model in DATA_MODELS.items():
        data = _samples_schema() if event_type == METRIC_SAMPLES else model_schema(model)
        data.pop("title", None)
        branches.append(_event_schema(event_type, data))
    return {"oneOf": branches, "description": "A structured-mode CloudEvent (v1)."}


@cache
def timezones() -> list[str]:
    """Every IANA time zone name this installation knows (what an SLA policy may name)."""
    return sorted(available_timezones())


def policy_schema() -> dict[str, Any]:
    """The SLA policy document, with every IANA zone name the server knows."""
    from store.datamodels import SlaPolicy

    schema = model_schema(SlaPolicy)
    schema["properties"]["timezone"]["enum"] = timezones()
    return schema
