"""Setting the SLA policy: parse a YAML or JSON document and record it in the ledger."""

from __future__ import annotations

import uuid
from typing import Any, Final

import orjson
import yaml

from ingest.events import BodyError
from store.contract import validate_events
from store.datamodels import SlaPolicy
from store.event_types import EventType
from store.ledger import Ledger
from store.timefmt import format_us

YAML_TYPES: Final = frozenset({"application/yaml", "application/x-yaml", "text/yaml"})
JSON_TYPES: Final = frozenset({"application/json"})


def parse_policy(body: bytes, content_type: str | None) -> Any:
    """The policy document of a request body or file, by its media type (JSON or YAML)."""
    media = (content_type or "application/json").split(";")[0].strip().lower()
    if media in JSON_TYPES:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BodyError(f"malformed JSON: {exc}") from None
    if media in YAML_TYPES:
        try:
            # safe_load builds plain data only; YAML tags cannot construct objects.
            return yaml.safe_load(body)
        except yaml.YAMLError as exc:
            raise BodyError(f"malformed YAML: {exc}") from None
    kinds = ", ".join(sorted(JSON_TYPES | YAML_TYPES))
    raise BodyError(f"unsupported content type {media!r}; use one of {kinds}", 415)


def set_policy(
    ledger: Ledger, doc: Any, effective_us: int, source: str = "opsledger/api"
) -> tuple[dict[str, Any], int | None]:
    """Record the policy in force from `effective_us`; returns it with defaults and its position."""
    raw = {
        "specversion": "1.0",
        "id": f"sla-policy/{uuid.uuid4().hex}",
        "source": source,
        "type": EventType.SLA_POLICY_SET,
        "time": format_us(effective_us),
        "data": doc,
    }
    events = validate_events([raw])  # ContractError names each bad field as data.<path>
    result = ledger.append(events)
    policy = SlaPolicy.model_validate(doc, strict=False).model_dump()
    return policy, result.first_position
