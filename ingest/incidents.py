"""Incident commands: validate a transition against the stream, append with its version."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal

from store.contract import validate_events
from store.errors import StreamVersionError
from store.event_types import INCIDENT_PREFIX
from store.incident_state import Fact, IncidentState, fold
from store.ledger import Ledger
from store.timefmt import datetime_to_us, format_us

Action = Literal["acknowledge", "mitigate", "resolve", "reopen"]
#: The event each action records, and the statuses it may be taken from.
ACTIONS: Final[dict[str, tuple[str, frozenset[str]]]] = {
    "acknowledge": ("acknowledged", frozenset({"open"})),
    "mitigate": ("mitigated", frozenset({"open", "acknowledged"})),
    "resolve": ("resolved", frozenset({"open", "acknowledged", "mitigated"})),
    "reopen": ("reopened", frozenset({"resolved"})),
}
#: A command's `at` may run this far ahead of the server's clock (skew between machines).
MAX_SKEW_US: Final = 5 * 60 * 1_000_000
#: Retries when no version was pinned and another writer got in first.
_RETRIES: Final = 3


class IncidentNotFound(LookupError):
    """No incident with that id has been opened."""


class InvalidTransition(Exception):
    """The command does not apply to the incident as it stands (409 with its state)."""

    def __init__(self, message: str, state: IncidentState) -> None:
        super().__init__(message)
        self.state = state


class CommandError(ValueError):
    """A command argument is unusable (422 naming the field)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


#: What one command records: event kinds with their data (incident_id is added).
Changes = tuple[tuple[str, Mapping[str, Any]], ...]


def stream_of(incident_id: str) -> str:
    """The ledger stream holding an incident's events."""
    return f"incident/{incident_id}"


def load(ledger: Ledger, incident_id: str) -> IncidentState:
    """The incident folded from its stream (status `unknown` when never opened)."""
    facts = [
        Fact.of(e.type, e.time_us, e.data or {}, e.cluster, e.stream_version)
        for e in ledger.read_stream(stream_of(incident_id))
    ]
    return fold(incident_id, facts)


def new_incident_id(at_us: int) -> str:
    """A fresh incident id: the opening date and a random suffix."""
    day = datetime.fromtimestamp(at_us / 1e6, UTC).strftime("%Y%m%d")
    return f"INC-{day}-{secrets.token_hex(3).upper()}"


def open_incident(
    ledger: Ledger,
    *,
    title: str,
    severity: str,
    cluster: str,
    namespace: str | None = None,
    service: str | None = None,
    incident_id: str | None = None,
    at_us: int | None = None,
    source: str = "opsledger/api",
) -> IncidentState:
    """Open an incident (409 when the id is taken)."""
    at = _at(at_us, None)
    incident_id = incident_id or new_incident_id(at)
    data: dict[str, Any] = {"title": title, "severity": severity}
    if namespace is not None:
        data["namespace"] = namespace
    if service is not None:
        data["service"] = service
    state = load(ledger, incident_id)
    if state.version:
        raise InvalidTransition(f"incident {incident_id} already exists", state)
    _append(ledger, state, (("opened", data),), at, source, cluster=cluster, expect=0)
    return load(ledger, incident_id)


def act(
    ledger: Ledger,
    incident_id: str,
    action: Action,
    *,
    by: str | None = None,
    at_us: int | None = None,
    expect_version: int | None = None,
    source: str = "opsledger/api",
) -> IncidentState:
    """Acknowledge, mitigate, resolve or reopen an incident."""
    kind, allowed = ACTIONS[action]
    data = {"by": by} if by else {}

    def check(state: IncidentState) -> Changes:
        if state.status not in allowed:
            raise InvalidTransition(
                f"cannot {action} incident {incident_id}: it is {state.status}", state
            )
        return ((kind, data),)

    return _command(ledger, incident_id, check, at_us, expect_version, source)


def update(
    ledger: Ledger,
    incident_id: str,
    *,
    severity: str | None = None,
    note: str | None = None,
    postmortem_url: str | None = None,
    at_us: int | None = None,
    expect_version: int | None = None,
    source: str = "opsledger/api",
) -> IncidentState:
    """Change the severity, annotate and/or link the post-mortem, atomically."""
    if severity is None and note is None and postmortem_url is None:
        raise CommandError("body", "give at least one of severity, note, postmortem_url")

    def check(state: IncidentState) -> Changes:
        kinds: list[tuple[str, Mapping[str, Any]]] = []
        if severity is not None:
            if severity == state.severity:
                raise InvalidTransition(f"incident {incident_id} is already {severity}", state)
            kinds.append(("severity_changed", {"severity": severity}))
        if note is not None:
            kinds.append(("annotated", {"note": note}))
        if postmortem_url is not None:
            kinds.append(("postmortem_linked", {"url": postmortem_url}))
        return tuple(kinds)

    return _command(ledger, incident_id, check, at_us, expect_version, source)


def _command(
    ledger: Ledger,
    incident_id: str,
    check: Callable[[IncidentState], Changes],
    at_us: int | None,
    expect_version: int | None,
    source: str,
) -> IncidentState:
    for attempt in range(_RETRIES):
        state = load(ledger, incident_id)
        if state.version == 0:
            raise IncidentNotFound(f"no incident {incident_id!r} has been opened")
        if state.status == "unknown":
            raise InvalidTransition(
                f"incident {incident_id} has events but its opening is not recorded yet", state
            )
        if expect_version is not None and expect_version != state.version:
            raise StreamVersionError(stream_of(incident_id), expect_version, state.version)
        kinds = check(state)
        at = _at(at_us, state)
        try:
            _append(ledger, state, kinds, at, source, cluster=None, expect=state.version)
        except StreamVersionError:
            # Another writer got in between our read and our write. A pinned version is the
            # caller's to resolve; otherwise judge the command again on the newer state.
            if expect_version is not None or attempt == _RETRIES - 1:
                raise
            continue
        return load(ledger, incident_id)
    raise AssertionError("unreachable")


def _at(at_us: int | None, state: IncidentState | None) -> int:
    now = datetime_to_us(datetime.now(UTC))
    if at_us is None:
        at_us = now
        if state is not None and state.last_us is not None and at_us < state.last_us:
            at_us = state.last_us  # a back-filled history can run ahead of this clock
    elif at_us > now + MAX_SKEW_US:
        raise CommandError("at", f"{format_us(at_us)} is in the future")
    if state is not None and state.last_us is not None and at_us < state.last_us:
        raise CommandError(
            "at",
            f"{format_us(at_us)} is before the incident's latest event at "
            f"{format_us(state.last_us)}; commands record history in order",
        )
    return at_us


def _append(
    ledger: Ledger,
    state: IncidentState,
    kinds: Changes,
    at_us: int,
    source: str,
    *,
    cluster: str | None,
    expect: int,
) -> None:
    raws = []
    for n, (kind, data) in enumerate(kinds, start=1):
        raw: dict[str, Any] = {
            "specversion": "1.0",
            # Unique per command: the stream version, not the id, is what serialises writers.
            "id": f"{state.incident_id}/{state.version + n}-{uuid.uuid4().hex[:12]}",
            "source": source,
            "type": f"{INCIDENT_PREFIX}{kind}",
            "time": format_us(at_us),
            "data": {"incident_id": state.incident_id, **data},
        }
        if cluster is not None:
            raw["cluster"] = cluster
        raws.append(raw)
    ledger.append(validate_events(raws), {stream_of(state.incident_id): expect})
