"""Ingesting CloudEvents from request bodies: decode, validate the whole batch, append."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Final

import orjson

from store.contract import ContractError, Problem, validate_batch
from store.errors import ConflictError
from store.ledger import AppendResult, Ledger

SINGLE_TYPES: Final = frozenset({"application/cloudevents+json"})
BATCH_TYPES: Final = frozenset({"application/cloudevents-batch+json"})
EITHER_TYPES: Final = frozenset({"application/json"})
CONTENT_TYPES: Final = tuple(sorted(SINGLE_TYPES | BATCH_TYPES | EITHER_TYPES))


class BodyError(ValueError):
    """A body that is not JSON, or not the shape its content type promises (HTTP 400/415)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def decode_body(body: bytes, content_type: str | None) -> list[Any]:
    """Decode a structured event or a batch into a list of raw events."""
    media = (content_type or "application/json").split(";")[0].strip().lower()
    if media not in CONTENT_TYPES:
        raise BodyError(
            f"unsupported content type {media!r}; use one of {', '.join(CONTENT_TYPES)}", 415
        )
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BodyError(f"malformed JSON: {exc}") from None
    if isinstance(doc, list):
        if media in SINGLE_TYPES:
            raise BodyError(f"{media} carries one event object; send arrays as a batch")
        return doc
    if isinstance(doc, dict):
        if media in BATCH_TYPES:
            raise BodyError(f"{media} must be a JSON array of events")
        return [doc]
    raise BodyError("the body must be a JSON object (one event) or an array (a batch)")


def ingest(ledger: Ledger, raws: Sequence[Any], max_batch: int) -> AppendResult:
    """Validate every event, then append them atomically; raises ContractError or ConflictError.

    Exact re-deliveries within the batch count as duplicates, as they do across batches.
    """
    if not raws:
        raise ContractError([Problem(0, "", "a batch must hold at least one event")])
    if len(raws) > max_batch:
        raise ContractError(
            [Problem(max_batch, "", f"a batch holds at most {max_batch} events, got {len(raws)}")]
        )
    batch = validate_batch(raws)
    try:
        result = ledger.append(batch.events)
    except ConflictError as exc:
        # The ledger numbers the folded batch; the client needs indexes of its own request.
        raise ConflictError(
            [dataclasses.replace(c, index=batch.origins[c.index]) for c in exc.conflicts]
        ) from None
    return dataclasses.replace(result, duplicates=result.duplicates + batch.repeats)
