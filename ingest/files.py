"""Importing events from files: JSON Lines, a JSON array, or one JSON object."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from store.contract import ContractError, Event, validate_event
from store.errors import ConflictError
from store.ledger import Ledger

LEDGER_ATTRIBUTES: Final = frozenset({"position", "recordedat", "stream", "streamversion"})


@dataclass(frozen=True, slots=True)
class Rejection:
    """An item of the file that was not written: where it is (line or array index) and why."""

    where: str
    field: str
    reason: str


@dataclass(slots=True)
class ImportResult:
    """What an import did."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    written: bool = False


def split_items(text: bytes) -> list[tuple[str, Any]]:
    """Items of a file with where each stands; unparsable JSON becomes `BadLine` items."""
    if not text.strip():
        return []
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if text.lstrip()[:1] == b"[":
            return [("file", BadLine(f"malformed JSON array: {exc}"))]
    else:
        if isinstance(doc, list):
            return [(f"index {i}", item) for i, item in enumerate(doc)]
        return [("line 1", doc)]
    items: list[tuple[str, Any]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append((f"line {n}", orjson.loads(line)))
        except orjson.JSONDecodeError as exc:
            items.append((f"line {n}", BadLine(f"malformed JSON: {exc}")))
    return items


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that is not JSON."""

    reason: str


def import_bytes(
    ledger: Ledger,
    text: bytes,
    skip_invalid: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ImportResult:
    """Validate every item, then append in one transaction; atomic unless `skip_invalid`."""
    items = split_items(text)
    result = ImportResult()
    valid: list[tuple[str, Event]] = []
    seen: dict[tuple[str, str], tuple[str, bytes]] = {}
    # Exact re-deliveries (at-least-once pipelines) are duplicates; where each one stands.
    repeats: dict[tuple[str, str], list[str]] = {}
    for n, (where, raw) in enumerate(items):
        if progress is not None and n % 1000 == 0:
            progress(n, len(items))
        if isinstance(raw, BadLine):
            result.rejected.append(Rejection(where, "", raw.reason))
            continue
        if isinstance(raw, dict):
            # What `events list --json` and GET /v1/events add on read, so an export re-imports.
            raw = {k: v for k, v in raw.items() if k not in LEDGER_ATTRIBUTES}
        try:
            ev = validate_event(raw)
        except ContractError as exc:
            result.rejected.extend(Rejection(where, p.field, p.reason) for p in exc.problems)
            continue
        key = (ev.source, ev.id)
        first = seen.setdefault(key, (where, ev.digest))
        if first[0] != where:
            if first[1] == ev.digest:
                repeats.setdefault(key, []).append(where)
            else:
                result.rejected.append(
                    Rejection(
                        where,
                        "id",
                        f"conflicts with {first[0]}: same (source, id), different content",
                    )
                )
            continue
        valid.append((where, ev))
    if progress is not None:
        progress(len(items), len(items))
    if result.rejected and not skip_invalid:
        return result
    while valid:
        try:
            res = ledger.append([ev for _, ev in valid])
        except ConflictError as exc:
            for c in exc.conflicts:
                where, ev = valid[c.index]
                reason = (
                    f"conflicts with the event at position {c.position}: same (source, id), "
                    "different content"
                )
                result.rejected.append(Rejection(where, "id", reason))
                # Its re-deliveries carry the same content, so they conflict the same way.
                result.rejected.extend(
                    Rejection(w, "id", reason) for w in repeats.pop((ev.source, ev.id), [])
                )
            if not skip_invalid:
                return result
            bad = {c.index for c in exc.conflicts}
            valid = [v for i, v in enumerate(valid) if i not in bad]
            continue
        result.accepted, result.written = res.accepted, True
        result.duplicates = res.duplicates + sum(len(w) for w in repeats.values())
        break
    return result
